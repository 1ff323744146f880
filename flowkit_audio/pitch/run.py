"""The pitch run, for every preset: ``train``, ``load`` and ``edit_files``.

* ``speech`` (:mod:`~flowkit_audio.pitch.mel`): a flow over log-mel frames of speech, an
  F0 direction, calibration measured by Praat on the rendered audio;
* ``speech-relative`` and ``notes`` (:mod:`~flowkit_audio.pitch.notes`): the
  pitch-relative front-end and a flow conditioned on the pitch channel, speech or
  instrument notes, with timbre offsets for notes.

    >>> from flowkit_audio.pitch import run
    >>> run.train("demo", "out/pitch", preset="notes", minutes=5)  # doctest: +SKIP
    >>> run.edit_files("out/pitch", "notes/", "out/up2", semitones_wanted=2)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowkit.errors import CheckpointError, FlowkitError
from flowkit.files import write_json
from flowkit.train import checkpoint_config

from ..data import check_output_folder, load_clips
from . import mel, notes
from .editor import CalibratedEditor, check_edit_request
from .training import check_calibrated

__all__ = ["PRESETS", "edit_files", "load", "train"]

PRESETS = ("speech", "speech-relative", "notes")


def train(data: str | None = None, out: str | Path = "out/pitch", preset: str | None = None,
          steps: int | None = None, minutes: float | None = None, seed: int | None = None, resume: bool = False,
          checkpoint_every: int | None = None, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Train a pitch flow of ``preset``, fit its directions and calibrate them; returns the
    report it writes (``pitch.json`` or ``notes.json``). ``options`` go to the preset's own
    trainer (:func:`flowkit_audio.pitch.mel.train`, :func:`flowkit_audio.pitch.notes.train`)."""
    if preset is None:  # a resumed run keeps its own; a new one is speech
        preset = _saved_preset(out) if resume else "speech"
    if preset not in PRESETS:
        raise FlowkitError(f"unknown pitch preset {preset!r}; choose from {', '.join(PRESETS)}")
    if preset == "speech":
        return mel.train(data, out, steps, minutes, seed, resume, checkpoint_every, progress=progress, **options)
    return notes.train(data, out, steps, minutes, seed, resume, checkpoint_every, progress=progress, preset=preset,
                       **options)


def _saved_preset(out: str | Path) -> str:
    """The preset of the pitch run in ``out`` (``"speech"`` when there is none yet)."""
    try:
        model = checkpoint_config(Path(out) / "checkpoint").get("model") or {}
    except CheckpointError:
        return "speech"
    return str(model.get("preset", "notes")) if model.get("kind") == "notes" else "speech"


def load(checkpoint: str | Path, vocoder: str | Path | None = None) -> CalibratedEditor:
    """The editor of a pitch run of any preset; ``vocoder``: a vocoder run, or ``None`` /
    ``"griffinlim"`` for Griffin-Lim."""
    model = checkpoint_config(checkpoint).get("model")
    model = model if isinstance(model, dict) else {}
    editor = notes.load(checkpoint, vocoder) if model.get("kind") == "notes" else mel.load(checkpoint, vocoder)
    check_calibrated(model, checkpoint, editor.flow.get_buffer("calibration_semitones"))
    return editor


@torch.no_grad()
def edit_files(checkpoint: str | Path, source: str | Path, out: str | Path, semitones_wanted: float | None = None,
               alpha: float | None = None, vocoder: str | Path | None = None) -> dict[str, Any]:
    """Edit the pitch of a WAV file or folder: one WAV per input (same name), a PNG of the
    spectrograms before and after, and F0 in and out (Praat) with the semitone change;
    writes ``edit_pitch.json``.

    ``f0_resynthesised_hz`` is the unedited clip through the same synthesis, so the change
    the edit made is ``semitones_vs_resynthesis``; ``semitones_vs_input`` includes the
    synthesis's own error.
    """
    out = Path(out)
    check_edit_request(semitones_wanted, alpha, out)
    check_output_folder(source, out)
    editor = load(checkpoint, vocoder)
    strength = alpha if alpha is not None else editor.alpha_for(semitones_wanted)
    clips = load_clips(source, editor.sample_rate)
    out.mkdir(parents=True, exist_ok=True)
    rows = [editor.edit_clip(clip, strength, out) for clip in clips]
    changes = [r["semitones_vs_resynthesis"] for r in rows if r["semitones_vs_resynthesis"] is not None]
    result = {"requested_semitones": semitones_wanted, "alpha": round(strength, 4),
              "synthesis": "vocoder" if editor.vocoder is not None else "griffin-lim",
              "preset": editor.preset, "files": rows,
              "median_semitones_vs_resynthesis": round(float(np.median(changes)), 3) if changes else None,
              "out": str(out)}
    write_json(out / "edit_pitch.json", result)
    return result
