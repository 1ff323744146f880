"""The backpropagation (memory) modes of a :class:`flowkit.Sequential` chain, see
:mod:`flowkit.reversible` for what each one does."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["MEMORY_MODES", "MemoryMode", "check_memory_mode"]

MemoryMode = Literal["plain", "checkpoint", "reversible", "reversible+boundaries"]
MEMORY_MODES: tuple[str, ...] = get_args(MemoryMode)


def check_memory_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`MEMORY_MODES`."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {mode!r}")
