"""Training pieces shared by the frame flows (the mel flow and the notes flow): random
crops of whole clips, the per-dimension NLL loss, and the held-out NLL on whole clips.

Example:
    >>> from flowkit_audio.melflow import MelFlow, MelFlowConfig
    >>> from flowkit.train import IndexSchedule
    >>> flow = MelFlow(MelFlowConfig(n_mels=8, levels=1, depth=1, width=8))
    >>> clips = [torch.randn(8, 40), torch.randn(8, 20)]
    >>> batch = random_crops(flow, clips, IndexSchedule(2, 2, 0), crop_frames=32)(0)
    >>> batch[0].shape
    torch.Size([2, 8, 32])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit.train import IndexSchedule

from .melflow import FrameFlow

__all__ = ["held_out_nll", "nll_per_dim", "random_crops"]


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
