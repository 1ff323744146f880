r"""The ``speech`` preset: pitch editing of speech through a log-mel flow's latent,
calibrated in semitones.

1. A :class:`~flowkit_audio.pitch.melflow.MelFlow` is trained by maximum likelihood on log-mel
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

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

import flowkit as fk
from flowkit.config import check_model_size
from flowkit.errors import CheckpointError, DataError
from flowkit.files import write_json
from flowkit.train import load_run, start_run

from ..data import Clip, split_clips, write_wav
from ..features import MelConfig, f0_hz, griffin_lim, log_mel, semitones
from ..plots import save_spectrograms
from .editor import CalibratedEditor, add_calibration_buffers, hz_or_none, interval_or_none
from .melflow import MelFlow, MelFlowConfig
from .training import calibration_stage, fit_frame_flow, run_settings

__all__ = ["MelEditor", "fit_direction", "load", "train"]

TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "batch_size": 16, "warmup_steps": 20, "ema_decay": None,
                  "grad_clip": 5.0, "steps": 400, "log_every": 10, "checkpoint_every": 100}
CALIBRATION_ALPHAS = (-16.0, -12.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0)
CALIBRATION_CLIPS = 32


class MelEditor(CalibratedEditor):
    """A trained :class:`MelFlow` with its pitch direction and calibration curve.

    ``edit(logmel, alpha)`` moves the latent; ``alpha_for(semitones)`` inverts the curve;
    ``synthesise(logmel)`` turns log-mel frames into audio (the vocoder, or Griffin-Lim).
    """

    preset = "speech"

    def __init__(self, flow: MelFlow, mel: MelConfig, vocoder: Any | None = None):
        self.flow = flow.eval()
        self.mel = mel
        self.vocoder = vocoder

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @torch.no_grad()
    def synthesise(self, logmel: Tensor) -> Tensor:
        """Audio ``(T,)`` from ``(n_mels, frames)`` log-mel frames."""
        if self.vocoder is not None:
            return self.vocoder.infer(logmel[None, :, :-1], sigma=0.6)[0]
        return griffin_lim(logmel[None], self.mel)[0]

    @torch.no_grad()
    def edit_clip(self, clip: Clip, strength: float, out: Path) -> dict[str, Any]:
        rate = self.sample_rate
        frames = log_mel(clip.audio[None], self.mel)[0]
        unedited, edited = self.edit(frames, [0.0, strength])
        resynthesised, audio = self.synthesise(unedited), self.synthesise(edited)
        write_wav(out / f"{clip.name}.wav", audio, rate)
        f0_in, f0_resynth, f0_out = (f0_hz(a.numpy(), rate) for a in (clip.audio, resynthesised, audio))
        save_spectrograms(out / f"{clip.name}.png", [frames, edited], ["input", f"edited (alpha {strength:+.2f})"],
                          self.mel)
        return {"file": clip.name, "alpha": round(strength, 4), "f0_in_hz": hz_or_none(f0_in),
                "f0_resynthesised_hz": hz_or_none(f0_resynth), "f0_out_hz": hz_or_none(f0_out),
                "semitones_vs_input": interval_or_none(f0_in, f0_out),
                "semitones_vs_resynthesis": interval_or_none(f0_resynth, f0_out), "notes": clip.notes}


def _f0s(clips: list[Clip], rate: int, progress: bool = False) -> np.ndarray:
    """F0 of each clip (Praat); a direction needs at least 6 clips with a measurable one,
    checked here, before any training time is spent."""
    f0 = np.array([f0_hz(c.audio.numpy(), rate)
                   for c in tqdm(clips, desc="track pitch", disable=not progress, dynamic_ncols=True)])
    _check_voiced(f0)
    return f0


def _check_voiced(f0: np.ndarray) -> None:
    voiced = int((~np.isnan(f0)).sum())
    if voiced < 6:
        raise DataError(f"pitch direction: only {voiced} training clips have a measurable F0 (need 6)")


@torch.no_grad()
def fit_direction(flow: MelFlow, logmels: list[Tensor], f0: np.ndarray) -> Tensor:
    """Mean time-averaged latent of the top-30 % F0 clips minus the bottom-30 % ones: ``(C, 1)``."""
    _check_voiced(f0)
    high, low = np.nanpercentile(f0, 70), np.nanpercentile(f0, 30)
    group = {name: [flow.pad(flow.standardise(m))[0] for m, f in zip(logmels, f0) if test(f)]
             for name, test in (("high", lambda f: f >= high), ("low", lambda f: f <= low))}
    return fk.attribute_direction(flow, group["high"], group["low"], average_positions=True)


@torch.no_grad()
def calibrate(editor: MelEditor, clips: list[Clip], logmels: list[Tensor],
              alphas: tuple[float, ...] = CALIBRATION_ALPHAS, progress: bool = False) -> dict[str, list[float]]:
    """Median semitone change of F0 at each ``alpha`` (against the ``alpha = 0`` resynthesis),
    made monotone; stored in the flow's buffers."""
    rate = editor.mel.sample_rate
    changes: dict[float, list[float]] = {a: [] for a in alphas}
    for clip, frames in tqdm(list(zip(clips, logmels)), desc="calibrate", disable=not progress, dynamic_ncols=True):
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
    add_calibration_buffers(flow, CALIBRATION_ALPHAS)
    return flow


def train(data: str | None = None, out: str | Path = "out/pitch", steps: int | None = None,
          minutes: float | None = None, seed: int | None = None, resume: bool = False,
          checkpoint_every: int | None = None, mel: MelConfig | None = None,
          config: MelFlowConfig | None = None, progress: bool = True,
          calibration_clips: int = CALIBRATION_CLIPS) -> dict[str, Any]:
    """Train the mel flow on ``data`` (a WAV folder; default: the embedded FSDD sample), then
    fit and calibrate the pitch direction on ``calibration_clips`` training clips spread
    over the F0 range; writes ``pitch.json``. ``minutes`` bounds the training; the pitch
    tracking before it and the calibration after it show progress, and the report gives
    each part's wall time (``seconds``)."""
    out = Path(out)
    started = time.monotonic()
    saved = start_run(out, resume, "pitch")
    if saved is not None:
        mel, config = MelConfig.from_dict(saved["model"]["mel"]), MelFlowConfig.from_dict(saved["model"]["flow"])
        check_model_size(lambda: MelFlow(config), f"the pitch flow in {out}")
    else:
        mel, config = mel or MelConfig(), config or MelFlowConfig()
    loop, data, resumed = run_settings(saved, TRAIN_DEFAULTS, data, steps=steps, max_minutes=minutes, seed=seed,
                                       checkpoint_every=checkpoint_every)
    config = MelFlowConfig.from_dict({**config.to_dict(), "n_mels": mel.n_mels})
    train_clips, held_out = split_clips(data, mel.sample_rate)
    logmels = [log_mel(c.audio[None], mel)[0] for c in train_clips]
    held_out_mels = [log_mel(c.audio[None], mel)[0] for c in held_out]
    f0 = _f0s(train_clips, mel.sample_rate, progress)
    seconds = {"analysis": round(time.monotonic() - started, 1)}
    torch.manual_seed(loop.seed)
    flow = _with_pitch_buffers(MelFlow(config))
    flow.fit_standardisation(logmels)
    trainer, metrics = fit_frame_flow(flow, logmels, held_out_mels, loop, out, resume, progress,
                                      {"kind": "pitch", "mel": mel.to_dict(), "flow": config.to_dict()},
                                      {"data": data})
    seconds["training"] = round(time.monotonic() - started - seconds["analysis"], 1)
    with calibration_stage(trainer, seconds):
        flow.get_buffer("pitch_direction").copy_(fit_direction(flow, logmels, f0))
        chosen = [i for i in np.argsort(np.nan_to_num(f0, nan=np.inf))[::max(1, len(f0) // calibration_clips)]
                  if not math.isnan(f0[i])][:calibration_clips]  # spread over the F0 range
        curve = calibrate(MelEditor(flow, mel), [train_clips[i] for i in chosen], [logmels[i] for i in chosen],
                          progress=progress)
    report = {"held_out_nll": metrics.get("eval_nll"), "train_nll": metrics.get("nll"), "steps": trainer.step,
              "train_clips": len(train_clips), "held_out_clips": len(held_out), "calibration": curve,
              "f0_percentiles_hz": [round(float(v), 1) for v in np.nanpercentile(f0, [10, 30, 50, 70, 90])],
              "seconds": seconds}
    if resumed is not None:
        report["resumed"] = resumed.to_dict()
    write_json(out / "pitch.json", report)
    return report


def load(checkpoint: str | Path, vocoder: str | Path | None = None) -> MelEditor:
    """A :class:`MelEditor` from a pitch run (folder or ``checkpoint/``); ``vocoder``: a
    vocoder run, or ``None`` / ``"griffinlim"`` for Griffin-Lim."""
    flow, mel = load_run(checkpoint, "pitch", lambda saved: (
        _with_pitch_buffers(MelFlow(MelFlowConfig.from_dict(saved["flow"]))), MelConfig.from_dict(saved["mel"])),
        "pitch-flow")
    synth = None
    if vocoder not in (None, "griffinlim"):
        from ..vocoder import run as vocoder_run

        synth = vocoder_run.load(vocoder, synthesis="bf16")
        if synth.config.mel != mel:
            raise CheckpointError(f"the vocoder {vocoder} uses another mel spectrogram than the pitch model")
    return MelEditor(flow, mel, synth)
