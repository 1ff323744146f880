"""Exceptions flowkit raises for bad input, so callers and the CLI can tell them apart."""

from __future__ import annotations

import operator

import torch


class FlowkitError(ValueError):
    """Base class of every error flowkit raises for bad input or bad state."""


class ShapeError(FlowkitError):
    """A tensor does not have the shape a bijector or flow expects."""


class NonFiniteError(FlowkitError):
    """A tensor holds NaN or infinite values where finite ones are required."""


class CheckpointError(FlowkitError):
    """A checkpoint is missing, corrupt or does not match the model."""


class DataError(FlowkitError):
    """A data file or folder is missing, corrupt or holds values out of range."""


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if ``x`` holds NaN or inf.

    Inside ``torch.compile`` the check steps aside: a data-dependent branch would break the
    graph (and recompile); compiled training relies on the engine's non-finite loss check,
    which then names the first non-finite layer from an eager pass."""
    if torch.compiler.is_compiling():
        return
    if not torch.isfinite(x).all():
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise NonFiniteError(f"{what} holds {n_nan} NaN and {n_inf} infinite values")


def check_count(value: object, what: str, least: int = 0) -> int:
    """``value`` as an ``int`` if it is an integer (Python, NumPy or a 0-d integer tensor;
    not a float or a bool) of at least ``least``; otherwise a :class:`FlowkitError` naming ``what``."""
    try:
        count = operator.index(value)
    except TypeError:
        count = None
    if isinstance(value, bool) or count is None or count < least:
        raise FlowkitError(f"{what} must be an integer >= {least}, not {value!r}")
    return count
