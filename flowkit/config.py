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
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from .errors import FlowkitError

__all__ = ["MAX_PARAMETERS", "SavedConfig", "check_model_size"]

#: the most parameters a model built from a saved config may have (4 GB of float32 weights)
MAX_PARAMETERS = 1_000_000_000

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


def check_model_size(build: Callable[[], Any], what: str, limit: int = MAX_PARAMETERS) -> None:
    """Refuse, before any memory is allocated, a model that ``build`` would make too large:
    ``build`` runs on PyTorch's meta device (shapes, no storage) and the parameters and
    buffers are counted. A config edited by hand (a width of 100000) is named with its
    size instead of an allocation of many GB. ``build`` may return a module or a tuple
    starting with one; a model that cannot be built on the meta device is not checked.

    Example:
        >>> check_model_size(lambda: torch.nn.Linear(100_000, 100_000), "a layer")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flowkit.errors.FlowkitError: a layer would have 10.0 billion parameters and buffers (40.0 GB), more ...
    """
    try:
        with torch.device("meta"):
            built = build()
    except (NotImplementedError, RuntimeError):  # code that needs real values; sizes are checked elsewhere
        return
    module = built[0] if isinstance(built, tuple) else built
    if not isinstance(module, torch.nn.Module):
        return
    count = sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers())
    if count > limit:
        raise FlowkitError(f"{what} would have {count / 1e9:.1f} billion parameters and buffers "
                           f"({count * 4 / 1e9:.1f} GB), more than the {limit / 1e9:.1f} billion a flowkit model "
                           f"may have: check its config")
