"""Training pieces shared by the frame flows (the mel flow and the notes flow): random
crops of whole clips, the per-dimension NLL loss, the held-out NLL on whole clips, and
:func:`fit_frame_flow`, which trains either with the shared engine.

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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit.train import IndexSchedule, TrainConfig, Trainer

from .melflow import FrameFlow

__all__ = ["CROP_FRAMES", "fit_frame_flow", "held_out_nll", "nll_per_dim", "random_crops"]

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
                   seed: int, resume: bool, progress: bool, model_config: dict[str, Any]) -> tuple[Trainer, dict]:
    """Train ``flow`` (standardisation fitted) on random crops of ``features`` with the
    shared engine, held-out NLL on whole ``held_out`` clips; returns the trainer (to save
    again once directions and calibration are in the buffers) and the last metrics."""
    schedule = IndexSchedule(len(features), min(loop.batch_size, len(features)), seed)
    trainer = Trainer(flow, nll_per_dim, random_crops(flow, features, schedule, CROP_FRAMES), loop, out,
                      model_config=model_config, evaluate=lambda m: {"nll": held_out_nll(m, held_out)},
                      resume=resume, progress=progress)
    return trainer, trainer.fit()
