"""Fixtures shared by the unit tests."""

from .fake_upstream import threaded_upstream, upstream

__all__ = ["threaded_upstream", "upstream"]
