"""Strength-to-semitones calibration shared by the pitch editors (speech and notes): the
curve lives in the flow's buffers ``calibration_alphas`` and ``calibration_semitones``
(so in its checkpoint), and is inverted by linear interpolation.

Example:
    >>> flow = torch.nn.Module()
    >>> flow.register_buffer("calibration_alphas", torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64))
    >>> flow.register_buffer("calibration_semitones", torch.tensor([-3.0, 0.0, 1.0], dtype=torch.float64))
    >>> editor = CalibratedEditor()
    >>> editor.flow = flow
    >>> editor.calibrated_range, editor.alpha_for(0.5)
    ((-3.0, 1.0), 1.0)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from flowkit.errors import FlowkitError

from .features import semitones

__all__ = ["CalibratedEditor", "check_edit_request", "hz_or_none", "interval_or_none"]


class CalibratedEditor:
    """Mixin of an editor whose ``flow`` holds a monotone calibration curve."""

    flow: object

    @property
    def calibrated_range(self) -> tuple[float, float]:
        """The smallest and largest change (semitones) the calibration measured."""
        moved = self.flow.get_buffer("calibration_semitones")
        return float(moved.min()), float(moved.max())

    def alpha_for(self, semitones_wanted: float) -> float:
        """The strength that moved the pitch by ``semitones_wanted`` on the calibration clips."""
        alphas = self.flow.get_buffer("calibration_alphas").double().numpy()
        moved = self.flow.get_buffer("calibration_semitones").double().numpy()
        if not (moved.min() <= semitones_wanted <= moved.max()):
            raise FlowkitError(f"this model's calibrated pitch range is {moved.min():+.2f} to {moved.max():+.2f} "
                               f"semitones; {semitones_wanted:+.2f} is outside it (use --alpha for raw edits)")
        return float(np.interp(semitones_wanted, moved, alphas))


def check_edit_request(semitones_wanted: float | None, alpha: float | None, out: Path) -> None:
    """Exactly one finite amount, and an output that can be a folder: before any work."""
    if (semitones_wanted is None) == (alpha is None):
        raise FlowkitError("give exactly one of --semitones and --alpha")
    for name, value in (("semitones", semitones_wanted), ("alpha", alpha)):
        if value is not None and not math.isfinite(value):
            raise FlowkitError(f"--{name} must be a finite number, not {value}")
    if out.exists() and not out.is_dir():
        raise FlowkitError(f"{out} is a file; --out must be a folder")


def hz_or_none(value: float) -> float | None:
    """A frequency for the JSON: rounded, ``None`` when the tracker found none."""
    return None if math.isnan(value) else round(value, 2)


def interval_or_none(f_from: float, f_to: float) -> float | None:
    """Semitones from ``f_from`` to ``f_to`` for the JSON; ``None`` if either is missing."""
    return None if math.isnan(f_from) or math.isnan(f_to) else round(semitones(f_from, f_to), 3)
