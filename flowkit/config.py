"""Model configurations saved in checkpoints: plain dataclasses with a JSON round trip.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Sizes(SavedConfig):
    ...     width: int = 64
    >>> Sizes.from_dict(Sizes(width=32).to_dict())
    Sizes(width=32)
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .errors import FlowkitError

__all__ = ["SavedConfig"]

C = TypeVar("C", bound="SavedConfig")


class SavedConfig:
    """Mixin for dataclass configs: ``to_dict`` for the checkpoint's JSON, and ``from_dict``
    that refuses unknown keys (a checkpoint from another version, or edited by hand) instead
    of ignoring them."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        if not isinstance(values, dict):
            raise FlowkitError(f"a {cls.__name__} must be a JSON object, not {type(values).__name__}")
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise FlowkitError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**values)
