r"""Pitch editing through a flow latent, calibrated in semitones.

1. A :class:`~flowkit_audio.melflow.MelFlow` is trained by maximum likelihood on log-mel
   frames of speech (no pitch labels).
2. F0 of every training clip is measured with Praat (parselmouth); the direction is the
   mean time-averaged latent of the high-F0 clips (top 30 %) minus that of the low-F0 clips
   (bottom 30 %): ``(C, 1)``, so it applies to clips of any length.
3. Calibration: training clips are edited at a grid of strengths ``alpha``, resynthesised,
   and their F0 measured again; the median change in semitones at each ``alpha`` (against
   the same resynthesis at ``alpha = 0``) gives a monotone curve, inverted by
   interpolation: ``--semitones S`` picks the ``alpha`` that moved F0 by ``S``. The response
   is not linear (a time-averaged latent offset re-weights harmonics rather than moving
   them), which is why a curve is fitted rather than a slope.

The direction and the curve are buffers of the model, so they live in its checkpoint.

References:
    Kingma and Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. 2018
    (latent attribute manipulation). Boersma. Praat, a system for doing phonetics by
    computer (the pitch tracker).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import flowkit as fk
from flowkit.errors import CheckpointError, DataError
from flowkit.train import IndexSchedule, Trainer, load_run, start_run, train_config

from .calibration import CalibratedEditor, check_edit_request, hz_or_none, interval_or_none
from .data import Clip, check_output_folder, load_clips, split_clips, write_wav
from .features import MelConfig, f0_hz, griffin_lim, log_mel, semitones
from .melflow import MelFlow, MelFlowConfig
from .plots import save_spectrograms
from .training import held_out_nll, nll_per_dim, random_crops

__all__ = ["PitchEditor", "edit_files", "load_pitch_model", "train_pitch"]

TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "batch_size": 16, "warmup_steps": 20, "ema_decay": None,
                  "grad_clip": 5.0, "steps": 400, "log_every": 10, "checkpoint_every": 100}
CROP_FRAMES = 32
CALIBRATION_ALPHAS = (-16.0, -12.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0)
CALIBRATION_CLIPS = 32


class PitchEditor(CalibratedEditor):
    """A trained :class:`MelFlow` with its pitch direction and calibration curve.

    ``edit(logmel, alpha)`` moves the latent; ``alpha_for(semitones)`` inverts the curve;
    ``synthesise(logmel)`` turns log-mel frames into audio (the vocoder, or Griffin-Lim).
    """

    def __init__(self, flow: MelFlow, mel: MelConfig, vocoder: Any | None = None):
        self.flow = flow.eval()
        self.mel = mel
        self.vocoder = vocoder

    @property
    def direction(self) -> Tensor:
        return self.flow.get_buffer("pitch_direction")

    @torch.no_grad()
    def edit(self, logmel: Tensor, alphas: float | list[float]) -> Tensor:
        """Edit ``(n_mels, T)`` log-mel frames: ``(T)``-shaped result per alpha (``(A, n_mels, T)`` for a list)."""
        x, length = self.flow.pad(self.flow.standardise(logmel)[None])
        edited = fk.apply_direction(self.flow, x, self.direction, alphas)
        if isinstance(alphas, (int, float)):
            return self.flow.unstandardise(edited[0, :, :length])
        return self.flow.unstandardise(edited[:, 0, :, :length])

    @torch.no_grad()
    def synthesise(self, logmel: Tensor) -> Tensor:
        """Audio ``(T,)`` from ``(n_mels, frames)`` log-mel frames."""
        if self.vocoder is not None:
            return self.vocoder.infer(logmel[None, :, :-1], sigma=0.6)[0]
        return griffin_lim(logmel[None], self.mel)[0]


def _f0s(clips: list[Clip], rate: int) -> np.ndarray:
    return np.array([f0_hz(c.audio.numpy(), rate) for c in clips])


@torch.no_grad()
def fit_direction(flow: MelFlow, logmels: list[Tensor], f0: np.ndarray) -> Tensor:
    """Mean time-averaged latent of the top-30 % F0 clips minus the bottom-30 % ones: ``(C, 1)``."""
    voiced = ~np.isnan(f0)
    if voiced.sum() < 6:
        raise DataError(f"pitch direction: only {int(voiced.sum())} training clips have a measurable F0 (need 6)")
    high, low = np.nanpercentile(f0, 70), np.nanpercentile(f0, 30)
    group = {name: [flow.pad(flow.standardise(m))[0] for m, f in zip(logmels, f0) if test(f)]
             for name, test in (("high", lambda f: f >= high), ("low", lambda f: f <= low))}
    return fk.attribute_direction(flow, group["high"], group["low"], average_positions=True)


@torch.no_grad()
def calibrate(editor: PitchEditor, clips: list[Clip], logmels: list[Tensor],
              alphas: tuple[float, ...] = CALIBRATION_ALPHAS) -> dict[str, list[float]]:
    """Median semitone change of F0 at each ``alpha`` (against the ``alpha = 0`` resynthesis),
    made monotone; stored in the flow's buffers."""
    rate = editor.mel.sample_rate
    changes: dict[float, list[float]] = {a: [] for a in alphas}
    for clip, frames in zip(clips, logmels):
        edited = editor.edit(frames, list(alphas))
        f0 = [f0_hz(editor.synthesise(e).numpy(), rate) for e in edited]
        base = f0[alphas.index(0.0)]
        for a, f in zip(alphas, f0):
            if not (math.isnan(base) or math.isnan(f)):
                changes[a].append(semitones(base, f))
    medians = np.array([np.median(changes[a]) if changes[a] else np.nan for a in alphas])
    if np.isnan(medians).any():
        raise DataError("pitch calibration: no clip gave a measurable F0 at some strength")
    monotone = np.maximum.accumulate(medians)  # a curve that inverts: never decreasing in alpha
    order = np.argsort(alphas)
    editor.flow.get_buffer("calibration_alphas").copy_(torch.tensor(np.array(alphas)[order]))
    editor.flow.get_buffer("calibration_semitones").copy_(torch.tensor(monotone[order]))
    return {"alphas": list(alphas), "median_semitones": [round(float(m), 3) for m in medians],
            "clips": len(clips)}


def _with_pitch_buffers(flow: MelFlow) -> MelFlow:
    flow.register_buffer("pitch_direction", torch.zeros(flow.config.n_mels, 1))
    flow.register_buffer("calibration_alphas", torch.tensor(CALIBRATION_ALPHAS, dtype=torch.float64))
    flow.register_buffer("calibration_semitones", torch.zeros(len(CALIBRATION_ALPHAS), dtype=torch.float64))
    return flow


def train_pitch(data: str | None = "demo", out: str | Path = "out/pitch", steps: int | None = None,
                minutes: float | None = None, seed: int = 0, resume: bool = False,
                checkpoint_every: int | None = None, mel: MelConfig | None = None,
                config: MelFlowConfig | None = None, progress: bool = True,
                calibration_clips: int = CALIBRATION_CLIPS) -> dict[str, Any]:
    """Train the mel flow, then fit and calibrate the pitch direction on
    ``calibration_clips`` training clips spread over the F0 range; writes ``pitch.json``."""
    out = Path(out)
    saved = start_run(out, resume, "pitch")
    if saved is not None:
        mel, config = MelConfig.from_dict(saved["model"]["mel"]), MelFlowConfig.from_dict(saved["model"]["flow"])
        train_defaults = saved["train"]
    else:
        mel, config, train_defaults = mel or MelConfig(), config or MelFlowConfig(), TRAIN_DEFAULTS
    config = MelFlowConfig.from_dict({**config.to_dict(), "n_mels": mel.n_mels})
    train_clips, held_out = split_clips(data, mel.sample_rate)
    logmels = [log_mel(c.audio[None], mel)[0] for c in train_clips]
    held_out_mels = [log_mel(c.audio[None], mel)[0] for c in held_out]
    loop = train_config(train_defaults, steps=steps, max_minutes=minutes, seed=seed, checkpoint_every=checkpoint_every)
    torch.manual_seed(seed)
    flow = _with_pitch_buffers(MelFlow(config))
    flow.fit_standardisation(logmels)
    schedule = IndexSchedule(len(logmels), min(loop.batch_size, len(logmels)), seed)
    trainer = Trainer(flow, nll_per_dim, random_crops(flow, logmels, schedule, CROP_FRAMES), loop, out,
                      model_config={"kind": "pitch", "mel": mel.to_dict(), "flow": config.to_dict()},
                      evaluate=lambda m: {"nll": held_out_nll(m, held_out_mels)}, resume=resume, progress=progress)
    metrics = trainer.fit()
    f0 = _f0s(train_clips, mel.sample_rate)
    flow.get_buffer("pitch_direction").copy_(fit_direction(flow, logmels, f0))
    chosen = [i for i in np.argsort(np.nan_to_num(f0, nan=np.inf))[::max(1, len(f0) // calibration_clips)]
              if not math.isnan(f0[i])][:calibration_clips]  # spread over the F0 range
    curve = calibrate(PitchEditor(flow, mel), [train_clips[i] for i in chosen], [logmels[i] for i in chosen])
    trainer.save()  # the checkpoint now carries the direction and the calibration
    report = {"held_out_nll": metrics.get("eval_nll"), "train_nll": metrics.get("nll"), "steps": trainer.step,
              "train_clips": len(train_clips), "held_out_clips": len(held_out), "calibration": curve,
              "f0_percentiles_hz": [round(float(v), 1) for v in np.nanpercentile(f0, [10, 30, 50, 70, 90])]}
    (out / "pitch.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    return report


def load_pitch_model(checkpoint: str | Path, vocoder: str | Path | None = None) -> PitchEditor:
    """A :class:`PitchEditor` from a pitch run (folder or ``checkpoint/``); ``vocoder``: a
    vocoder run, or ``None`` / ``"griffinlim"`` for Griffin-Lim."""
    flow, mel = load_run(checkpoint, "pitch", lambda saved: (
        _with_pitch_buffers(MelFlow(MelFlowConfig.from_dict(saved["flow"]))), MelConfig.from_dict(saved["mel"])),
        "pitch-flow")
    synth = None
    if vocoder not in (None, "griffinlim"):
        from .vocoder import load_vocoder

        synth = load_vocoder(vocoder, synthesis="bf16")
        if synth.config.mel != mel:
            raise CheckpointError(f"the vocoder {vocoder} uses another mel spectrogram than the pitch model")
    return PitchEditor(flow, mel, synth)


@torch.no_grad()
def edit_files(checkpoint: str | Path, source: str | Path, out: str | Path, semitones_wanted: float | None = None,
               alpha: float | None = None, vocoder: str | Path | None = None) -> dict[str, Any]:
    """Edit the pitch of a WAV file or folder: one WAV per input (same name), a PNG of the
    spectrograms before and after, and F0 in and out (Praat) with the semitone change.

    ``f0_resynthesised_hz`` is the unedited clip through the same synthesis, so the change
    the edit made is ``semitones_vs_resynthesis``; ``semitones_vs_input`` includes the
    synthesis's own error.
    """
    out = Path(out)
    check_edit_request(semitones_wanted, alpha, out)
    check_output_folder(source, out)
    editor = load_pitch_model(checkpoint, vocoder)
    strength = alpha if alpha is not None else editor.alpha_for(semitones_wanted)
    clips = load_clips(source, editor.mel.sample_rate)
    out.mkdir(parents=True, exist_ok=True)
    rate, rows = editor.mel.sample_rate, []
    for clip in clips:
        frames = log_mel(clip.audio[None], editor.mel)[0]
        unedited, edited = editor.edit(frames, [0.0, strength])
        resynthesised, audio = editor.synthesise(unedited), editor.synthesise(edited)
        write_wav(out / f"{clip.name}.wav", audio, rate)
        f0_in, f0_resynth, f0_out = (f0_hz(a.numpy(), rate) for a in (clip.audio, resynthesised, audio))
        save_spectrograms(out / f"{clip.name}.png", [frames, edited], ["input", f"edited (alpha {strength:+.2f})"],
                          editor.mel)
        rows.append({"file": clip.name, "alpha": round(strength, 4), "f0_in_hz": hz_or_none(f0_in),
                     "f0_resynthesised_hz": hz_or_none(f0_resynth), "f0_out_hz": hz_or_none(f0_out),
                     "semitones_vs_input": interval_or_none(f0_in, f0_out),
                     "semitones_vs_resynthesis": interval_or_none(f0_resynth, f0_out), "notes": clip.notes})
    changes = [r["semitones_vs_resynthesis"] for r in rows if r["semitones_vs_resynthesis"] is not None]
    result = {"requested_semitones": semitones_wanted, "alpha": round(strength, 4),
              "synthesis": "vocoder" if editor.vocoder is not None else "griffin-lim", "files": rows,
              "median_semitones_vs_resynthesis": round(float(np.median(changes)), 3) if changes else None,
              "out": str(out)}
    (out / "edit_pitch.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    return result
