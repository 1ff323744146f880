"""What the pitch editors (the log-mel one and the notes one) share: the edit along a
latent direction, and the strength-to-semitones calibration. The curve lives in the
flow's buffers ``calibration_alphas`` and ``calibration_semitones`` (so in its
checkpoint), and is inverted by linear interpolation.

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
from typing import Any

import numpy as np
import torch
from torch import Tensor

import flowkit as fk
from flowkit.errors import FlowkitError

from ..data import Clip
from ..features import semitones

__all__ = ["CalibratedEditor", "add_calibration_buffers", "check_edit_request", "hz_or_none", "interval_or_none"]


def add_calibration_buffers(flow: torch.nn.Module, alphas: tuple[float, ...]) -> None:
    """The buffers a pitch flow carries in its checkpoint: ``pitch_direction`` (set by the
    trainer; ``(C, 1)``) and the calibration curve at ``alphas`` (zeros until calibrated)."""
    channels = flow.config.channels if hasattr(flow.config, "channels") else flow.config.n_mels
    flow.register_buffer("pitch_direction", torch.zeros(channels, 1))
    flow.register_buffer("calibration_alphas", torch.tensor(alphas, dtype=torch.float64))
    flow.register_buffer("calibration_semitones", torch.zeros(len(alphas), dtype=torch.float64))


class CalibratedEditor:
    """Base of an editor whose ``flow`` (a :class:`~flowkit_audio.pitch.melflow.FrameFlow`)
    holds a pitch direction and a monotone calibration curve.

    Subclasses give :attr:`sample_rate` and :meth:`edit_clip` (analyse a clip, edit it,
    write its WAV and picture, measure it), and their own ``synthesise``."""

    flow: Any
    preset: str = "speech"

    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    @property
    def direction(self) -> Tensor:
        return self.flow.get_buffer("pitch_direction")

    @torch.no_grad()
    def edit(self, features: Tensor, alphas: float | list[float], direction: Tensor | None = None) -> Tensor:
        """Edit ``(channels, frames)`` features along ``direction`` (default: the pitch
        direction): ``(channels, frames)`` per alpha, stacked for a list."""
        x, length = self.flow.pad(self.flow.standardise(features)[None])
        edited = fk.apply_direction(self.flow, x, self.direction if direction is None else direction, alphas)
        if isinstance(alphas, (int, float)):
            return self.flow.unstandardise(edited[0, :, :length])
        return self.flow.unstandardise(edited[:, 0, :, :length])

    def edit_clip(self, clip: Clip, strength: float, out: Path) -> dict[str, Any]:
        """Edit ``clip`` at ``strength``; write ``out/NAME.wav`` and ``out/NAME.png``; return
        its row of ``edit_pitch.json`` (F0 in, resynthesised and out)."""
        raise NotImplementedError

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
