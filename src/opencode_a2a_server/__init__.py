"""Serve the OpenCode coding agent over the A2A protocol."""

__version__ = "0.1.0"
