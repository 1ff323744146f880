"""Training pieces shared by the frame flows (the mel flow and the notes flow): random
crops of whole clips, the per-dimension NLL loss, the held-out NLL on whole clips,
:func:`fit_frame_flow`, which trains either with the shared engine, and the stages of a
pitch run (:func:`run_settings`, :func:`calibration_stage`, :func:`check_calibrated`).

A pitch run's checkpoint records its ``stage``: ``"trained"`` while the flow trains and
until its directions are fitted and calibrated, then ``"calibrated"``. Editing refuses a
run that is not calibrated (its direction and curve are zeros); ``--resume`` finishes it.

Example:
    >>> from flowkit_audio.pitch.melflow import MelFlow, MelFlowConfig
    >>> from flowkit.train import IndexSchedule, TrainConfig, Trainer
    >>> flow = MelFlow(MelFlowConfig(n_mels=8, levels=1, depth=1, width=8))
    >>> clips = [torch.randn(8, 40), torch.randn(8, 20)]
    >>> batch = random_crops(flow, clips, IndexSchedule(2, 2, 0), crop_frames=32)(0)
    >>> batch[0].shape
    torch.Size([2, 8, 32])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit.errors import CheckpointError
from flowkit.train import IndexSchedule, Resumed, TrainConfig, Trainer, resume_run, train_config
from flowkit.train.interrupt import interrupt_on_signals

from .melflow import FrameFlow

__all__ = ["CROP_FRAMES", "calibration_stage", "check_calibrated", "fit_frame_flow", "held_out_nll", "nll_per_dim",
           "random_crops", "run_settings"]

CROP_FRAMES = 32  # frames per training crop


def random_crops(flow: FrameFlow, clips: list[Tensor], schedule: IndexSchedule,
                 crop_frames: int) -> Callable[[int], tuple[Tensor]]:
    """``step -> (batch,)``: a random ``crop_frames`` window of each scheduled clip (short
    clips padded by repeating their last frame), standardised, plus the flow's
    dequantisation noise (``flow.config.noise``); deterministic in the step."""
    def batch(step: int) -> tuple[Tensor]:
        generator = schedule.generator(step)
        pieces = []
        for i in schedule.indices(step).tolist():
            frames = clips[i]
            if frames.shape[-1] < crop_frames:
                frames = F.pad(frames[None], (0, crop_frames - frames.shape[-1]), mode="replicate")[0]
            start = int(torch.randint(frames.shape[-1] - crop_frames + 1, (1,), generator=generator))
            pieces.append(frames[:, start:start + crop_frames])
        x = flow.standardise(torch.stack(pieces))
        return (x + flow.config.noise * torch.randn(x.shape, generator=generator),)
    return batch


def nll_per_dim(model: torch.nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, float]]:
    """The engine's loss: mean negative log-likelihood in nats per dimension."""
    x = batch[0]
    nll = (-model(x) / x[0].numel()).mean()
    return nll, {"nll": float(nll.detach())}


@torch.no_grad()
def held_out_nll(flow: FrameFlow, clips: list[Tensor], limit: int = 64) -> float:
    """Mean NLL in nats per dimension of standardised, dequantised held-out clips (whole clips)."""
    flow.eval()
    generator = torch.Generator().manual_seed(0)
    total, count = 0.0, 0
    for frames in clips[:limit]:
        x, _ = flow.pad(flow.standardise(frames)[None])
        x = x + flow.config.noise * torch.randn(x.shape, generator=generator)
        total += float(-flow.log_prob(x)) / x[0].numel()
        count += 1
    return total / max(count, 1)


def fit_frame_flow(flow: FrameFlow, features: list[Tensor], held_out: list[Tensor], loop: TrainConfig, out: Path,
                   resume: bool, progress: bool, model_config: dict[str, Any],
                   arguments: dict[str, Any]) -> tuple[Trainer, dict]:
    """Train ``flow`` (standardisation fitted) on random crops of ``features`` with the
    shared engine, held-out NLL on whole ``held_out`` clips; returns the trainer (to save
    again once directions and calibration are in the buffers) and the last metrics."""
    schedule = IndexSchedule(len(features), min(loop.batch_size, len(features)), loop.seed)
    model_config = {**model_config, "stage": "trained"}
    trainer = Trainer(flow, nll_per_dim, random_crops(flow, features, schedule, CROP_FRAMES), loop, out,
                      model_config=model_config, evaluate=lambda m: {"nll": held_out_nll(m, held_out)},
                      resume=resume, progress=progress, arguments=arguments)
    return trainer, trainer.fit()


def run_settings(saved: dict[str, Any] | None, defaults: dict[str, Any], data: Any,
                 **given: Any) -> tuple[TrainConfig, str, Resumed | None]:
    """The loop's config, the data and what a resume reused or changed: a resumed run keeps
    its saved seed and data unless given again (:func:`flowkit.train.resume_run`); a new
    run takes ``defaults`` and the embedded demo data unless ``data`` is given."""
    arguments = {"data": None if data is None else str(data)}
    if saved is None:
        return train_config(defaults, **given), arguments["data"] or "demo", None
    loop, arguments, resumed = resume_run(saved, arguments, **given)
    return loop, arguments["data"] or "demo", resumed


@contextmanager
def calibration_stage(trainer: Trainer, seconds: dict[str, float]) -> Iterator[None]:
    """Fitting the directions and calibrating, after training: a signal stops it at once
    and says the checkpoint holds the trained flow, uncalibrated; on success the run is
    saved as ``"calibrated"``. Its wall time goes to ``seconds["calibration"]``."""
    started = time.monotonic()
    with interrupt_on_signals(trainer.step, trainer.checkpoint_dir, "fitting the directions and calibrating"):
        yield
    trainer.model_config["stage"] = "calibrated"
    trainer.save()  # the checkpoint now carries the directions and the calibration
    seconds["calibration"] = round(time.monotonic() - started, 1)


def check_calibrated(config: dict[str, Any], checkpoint: str | Path, calibration: Tensor) -> None:
    """Refuse a pitch run stopped before its directions were fitted and calibrated: its
    stage is ``"trained"`` (or, in a run saved before stages, its curve is all zeros)."""
    stage = config.get("stage")
    if stage == "trained" or (stage is None and not bool(calibration.abs().sum())):
        raise CheckpointError(f"{checkpoint} holds a pitch run stopped before its directions were fitted and "
                              f"calibrated (it has the trained flow only): finish it with "
                              f"`flowkit audio train-pitch --out RUN --resume`")
