"""The registry of this deployment: every extension method, built from the services."""

from __future__ import annotations

from ..execution.interrupts import InterruptService
from .interrupts import interrupt_methods
from .registry import Registry


def build_registry(*, interrupts: InterruptService) -> Registry:
    return Registry(interrupt_methods(interrupts))
