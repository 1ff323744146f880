r"""A multiscale flow over log-mel frames ``(B, n_mels, T)``: the latent that pitch edits move in.

Glow's architecture in one dimension (Glow-TTS decoder / Flowtron style), built from the
core's layers: each level squeezes time by 2 (``Squeeze(2)``: ``(C, T) -> (2C, T/2)``),
runs ``depth`` steps of ActNorm, an invertible 1x1 mixing across mel channels and an
affine coupling whose conditioner is a 1-D convolutional network
(:class:`flowkit.nn.GlowConditioner`), then factors half of the channels out with a
learned conditional prior. Any length divisible by ``2^levels`` works; clips are padded
to it (:meth:`MelFlow.pad`) and cropped back.

Log-mel frames are standardised with the training set's per-bin mean and std (stored in
the checkpoint) and trained with a little Gaussian dequantisation noise, since the floor
of the log makes silent bins exactly constant.

Example:
    >>> flow = MelFlow(MelFlowConfig(n_mels=80))
    >>> flow.log_prob(torch.randn(2, 80, 32)).shape
    torch.Size([2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import flowkit as fk
from flowkit.config import SavedConfig
from flowkit.errors import FlowkitError

__all__ = ["FrameFlow", "MelFlow", "MelFlowConfig", "multiscale_1d"]


@dataclass
class MelFlowConfig(SavedConfig):
    """Architecture of the mel flow; saved in checkpoints."""

    n_mels: int = 80
    levels: int = 2
    depth: int = 4
    width: int = 128
    noise: float = 0.05  # dequantisation noise (std, in standardised units) while training

    def __post_init__(self):
        for name, most in (("n_mels", 4096), ("levels", 16), ("depth", 256), ("width", 4096)):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= most):
                raise FlowkitError(f"mel flow config: {name} must be an integer from 1 to {most}, not {value!r}")
        if self.levels > 8:
            raise FlowkitError(f"mel flow config: at most 8 levels, not {self.levels}")



def multiscale_1d(channels: int, cfg: MelFlowConfig, context_channels: int = 0) -> fk.Sequential:
    """Glow in one dimension over ``(B, channels, T)`` (:func:`flowkit.build_multiscale`):
    per level a time squeeze, ``depth`` steps (ActNorm, 1x1, affine coupling) and a
    factor-out with a learned prior; a ``(B, k)`` context, if ``context_channels = k``,
    conditions every coupling and prior."""
    def step(c: int, level: int, index: int) -> list[fk.Bijector]:
        return [fk.ActNorm(c), fk.Invertible1x1(c),
                fk.AffineCoupling(c, hidden=cfg.width, spatial_dims=1, context_channels=context_channels)]

    return fk.build_multiscale(channels, cfg.levels, cfg.depth, step, spatial_dims=1,
                               context_channels=context_channels)


class FrameFlow(fk.Flow):
    """A :class:`flowkit.Flow` over standardised frames ``(channels, T)`` of any length
    divisible by ``2^levels``, with the training set's per-channel mean and std as buffers
    (saved in the checkpoint): the base of the mel flow and the notes flow."""

    def __init__(self, bijector: fk.Bijector, channels: int, levels: int):
        super().__init__(bijector, event_shape=(channels, None))
        self.levels = levels
        self.register_buffer("mean", torch.zeros(channels, 1))
        self.register_buffer("std", torch.ones(channels, 1))

    @property
    def multiple(self) -> int:
        """Lengths must be multiples of this."""
        return 2**self.levels

    def fit_standardisation(self, frames: list[Tensor], min_std: float = 1e-3) -> None:
        """Per-channel mean and std over every frame of ``frames`` (each ``(channels, T)``)."""
        if not frames or sum(f.shape[-1] for f in frames) < 2:
            raise fk.DataError("fitting the standardisation needs at least 2 frames")
        joined = torch.cat(frames, dim=-1)
        self.mean.copy_(joined.mean(-1, keepdim=True))
        self.std.copy_(joined.std(-1, keepdim=True).clamp_min(min_std))

    def standardise(self, frames: Tensor) -> Tensor:
        return (frames - self.mean) / self.std

    def unstandardise(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean

    def pad(self, x: Tensor) -> tuple[Tensor, int]:
        """Pad the last dim to a multiple of ``2^levels`` by repeating the edge frame; returns the original length."""
        length = x.shape[-1]
        extra = -length % self.multiple
        return (F.pad(x, (0, extra), mode="replicate") if extra else x), length


class MelFlow(FrameFlow):
    """The mel flow: :func:`multiscale_1d` over standardised log-mel frames."""

    def __init__(self, config: MelFlowConfig):
        super().__init__(multiscale_1d(config.n_mels, config), config.n_mels, config.levels)
        self.config = config
