r"""The reference Glow (Kingma and Dhariwal 2018), faithful to openai/glow.

``x -> Squeeze -> K x [ActNorm -> 1x1 mixing -> coupling] -> FactorOut(learned prior,
inner = next level) -> ... -> learned top prior``, every level closed by an unsqueeze
so the latent has the image's shape. Split and top priors are bijections (standardise
with the learned mean and scale), so the base is N(0, I): ``encode`` returns the
standardised latent of every level and sampling at temperature ``T`` draws
``eps ~ N(0, T^2 I)``, exactly openai's ``z = mean + T * std * eps`` at every level.

Likelihood bookkeeping (openai): uint8 ``x`` is reduced to ``n_bits``, mapped to
``x / n_bins - 0.5`` plus ``U(0, 1 / n_bins)`` noise, and

.. math:: \text{bits/dim} = \frac{-\log p(x) + D \log n_{bins}}{D \ln 2}.

Example:
    >>> glow = Glow(GlowConfig(image_shape=(3, 32, 32), levels=3, depth=4, width=64))
    >>> images_uint8 = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> x = glow.preprocess(images_uint8)            # (B, 3, 32, 32) in [-0.5, 0.5]
    >>> bpd = glow.bits_per_dim(x).mean()
    >>> glow.postprocess(glow.sample(16, temperature=0.7)).shape
    torch.Size([16, 3, 32, 32])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Bijector,
    Flow,
    Invertible1x1,
    Invertible1x1LU,
    LearnedPrior,
    Permute,
    Sequential,
    build_multiscale,
)
from flowkit.config import SavedConfig
from flowkit.errors import DataError, FlowkitError, ShapeError
from flowkit.nn import GlowConditioner, ZeroConv

Permutation = Literal["conv", "conv_lu", "shuffle", "reverse"]


@dataclass
class GlowConfig(SavedConfig):
    """Architecture of a Glow (openai's flags in brackets).

    Attributes:
        image_shape: ``(C, H, W)``; H and W divisible by ``2 ** levels``.
        levels: L, the number of scales [n_levels].
        depth: K, steps of flow per level [depth].
        width: channels of the coupling network [width].
        coupling: ``"affine"`` or ``"additive"`` [flow_coupling].
        permutation: ``"conv"`` (1x1), ``"conv_lu"``, ``"shuffle"`` or ``"reverse"`` [flow_permutation].
        n_bits: bits per colour channel kept from the uint8 input [n_bits_x].
        learn_top: learned top prior [learntop]; else N(0, I).
        n_classes: > 0 makes the top prior class-conditional on a one-hot label [ycond].
        weight_y: with ``n_classes``, weight of openai's auxiliary classifier on the
            spatial mean of the top latent (openai: 0.01) [weight_y]; 0 disables it.
        actnorm_logscale_factor: openai stores ActNorm's log-scale divided by 3.
        coupling_scale: ``"sigmoid"`` (openai) or ``"exp"`` (soft-clamped).
        edge_bias: openai's extra border channel in the 3x3 convolutions.
    """

    image_shape: tuple[int, int, int] = (3, 32, 32)
    levels: int = 3
    depth: int = 32
    width: int = 512
    coupling: Literal["affine", "additive"] = "affine"
    permutation: Permutation = "conv"
    n_bits: int = 8
    learn_top: bool = True
    n_classes: int = 0
    weight_y: float = 0.0
    actnorm_logscale_factor: float = 3.0
    coupling_scale: Literal["sigmoid", "exp"] = "sigmoid"
    edge_bias: bool = True

    def __post_init__(self):
        self.image_shape = tuple(self.image_shape)
        if len(self.image_shape) != 3 or not all(isinstance(n, int) and 0 < n <= 4096 for n in self.image_shape):
            raise ShapeError(f"image_shape must be (channels, height, width) of positive sizes, got {self.image_shape}")
        c, h, w = self.image_shape
        limits = {"levels": (self.levels, 1, 10), "depth": (self.depth, 1, 512), "width": (self.width, 1, 8192),
                  "n_classes": (self.n_classes, 0, 100_000)}
        bad = [f"{name}={value!r} (allowed {low}..{high})" for name, (value, low, high) in limits.items()
               if not (isinstance(value, int) and low <= value <= high)]
        if bad:
            raise FlowkitError(f"Glow config out of range: {', '.join(bad)}")
        if self.parameter_estimate() > MAX_PARAMETERS:
            raise FlowkitError(f"this Glow would have about {self.parameter_estimate() / 1e9:.1f} billion parameters "
                               f"(limit {MAX_PARAMETERS / 1e9:.0f} billion): check depth, width and levels")
        if h % 2**self.levels or w % 2**self.levels:
            raise ShapeError(f"image size {h}x{w} must be divisible by 2**levels = {2 ** self.levels}")
        if not 1 <= self.n_bits <= 8:
            raise FlowkitError(f"n_bits must be in 1..8, got {self.n_bits}")
        if self.weight_y and not self.n_classes:
            raise FlowkitError("weight_y (the auxiliary classifier) needs n_classes > 0")

    def parameter_estimate(self) -> int:
        """About how many parameters the model has (its coupling networks), before building it."""
        total, channels = 0, self.image_shape[0]
        for _ in range(self.levels):
            channels *= 4
            per_net = 9 * channels // 2 * self.width + self.width**2 + 9 * self.width * channels
            total += self.depth * (per_net + channels**2)
            channels //= 2
        return total



MAX_PARAMETERS = 2_000_000_000


def _mixing(channels: int, kind: Permutation, seed: int) -> Bijector:
    if kind == "conv":
        return Invertible1x1(channels)
    if kind == "conv_lu":
        return Invertible1x1LU(channels)
    if kind in ("shuffle", "reverse"):
        return Permute(channels, kind, seed=seed)
    raise FlowkitError(f"permutation must be conv, conv_lu, shuffle or reverse, not {kind!r}")


def _step(channels: int, cfg: GlowConfig, seed: int) -> list[Bijector]:
    def net(in_channels: int, out_channels: int) -> GlowConditioner:
        return GlowConditioner(in_channels, out_channels, cfg.width, spatial_dims=2, edge_bias=cfg.edge_bias)

    if cfg.coupling == "affine":
        coupling = AffineCoupling(channels, net=net, scale=cfg.coupling_scale)
    elif cfg.coupling == "additive":
        coupling = AdditiveCoupling(channels, net=net)
    else:
        raise FlowkitError(f"coupling must be affine or additive, not {cfg.coupling!r}")
    return [ActNorm(channels, cfg.actnorm_logscale_factor), _mixing(channels, cfg.permutation, seed), coupling]


def build_glow_bijector(cfg: GlowConfig) -> Sequential:
    """The Glow bijector from images in ``[-0.5, 0.5]`` to a latent of the same shape: per
    level a squeeze, K steps, then the next level behind a factor-out or the top prior."""
    return build_multiscale(cfg.image_shape[0], cfg.levels, cfg.depth,
                            lambda c, level, k: _step(c, cfg, seed=1000 * level + k), spatial_dims=2,
                            top_prior=bool(cfg.learn_top or cfg.n_classes), top_context_channels=cfg.n_classes,
                            edge_bias=cfg.edge_bias, spatial_shape=cfg.image_shape[1:])


class Glow(Flow):
    """A :class:`flowkit.Flow` with Glow's architecture and pixel bookkeeping."""

    def __init__(self, config: GlowConfig):
        super().__init__(build_glow_bijector(config), event_shape=config.image_shape)
        self.config = config
        self.classifier = None
        self._top: dict[str, Tensor] = {}
        if config.weight_y and config.n_classes:
            top_prior = next(m for m in self.bijector.modules() if isinstance(m, LearnedPrior))
            top_channels = top_prior.channels
            self.classifier = ZeroConv(top_channels, config.n_classes, spatial_dims=0)
            top_prior.register_forward_hook(self._keep_top_latent)

    def _keep_top_latent(self, module, inputs, output) -> None:
        self._top["z"] = inputs[0]

    def class_logits(self) -> Tensor:
        """openai's ``ycond`` classifier on the spatial mean of the top latent of the last
        forward pass (``log_prob``); needs ``weight_y > 0``."""
        if self.classifier is None or "z" not in self._top:
            raise ShapeError("class_logits needs a Glow with weight_y > 0, after a forward pass")
        return self.classifier(self._top["z"].mean((2, 3)))

    @property
    def n_bins(self) -> int:
        return 2**self.config.n_bits

    def context(self, labels: Tensor | None) -> Tensor | None:
        """One-hot labels for a class-conditional model; ``None`` otherwise."""
        if not self.config.n_classes:
            return None
        if labels is None:
            raise ShapeError("this Glow is class-conditional: give labels")
        if labels.min() < 0 or labels.max() >= self.config.n_classes:
            raise DataError(f"labels must be in 0..{self.config.n_classes - 1}")
        return F.one_hot(labels.long(), self.config.n_classes).float()

    def preprocess(self, images: Tensor, generator: torch.Generator | None = None, noise: bool = True) -> Tensor:
        """uint8 ``(B, C, H, W)`` images to dequantised floats in ``[-0.5, 0.5]``."""
        check_images(images, self.config.image_shape)
        x = torch.div(images.long(), 2 ** (8 - self.config.n_bits), rounding_mode="floor").float()
        x = x / self.n_bins - 0.5
        if noise:
            x = x + torch.rand(x.shape, generator=generator).to(x.device) / self.n_bins
        return x.to(next(self.parameters()).dtype)

    def postprocess(self, x: Tensor) -> Tensor:
        """Floats in ``[-0.5, 0.5]`` back to uint8 images (openai's decode)."""
        x = torch.floor((x + 0.5) * self.n_bins) * (256 / self.n_bins)
        return x.clamp(0, 255).to(torch.uint8)

    def check_input(self, x: Tensor) -> None:
        """:meth:`flowkit.Flow.check_input`, and the values must lie in ``[-0.5, 0.5]``
        (:meth:`preprocess`): pixels scaled another way (``[0, 1]``, ``[0, 255]``) would
        otherwise give a plausible-looking, wrong likelihood. Like the finiteness check, it
        steps aside inside ``torch.compile``."""
        super().check_input(x)
        if self.validate and not torch.compiler.is_compiling():
            check_dequantised(x)

    def bits_per_dim(self, x: Tensor, context: Tensor | None = None, n_bins: int | None = None) -> Tensor:
        """Glow's bits/dim of dequantised ``x`` (the ``D log n_bins`` term included)."""
        return super().bits_per_dim(x, context, n_bins or self.n_bins)

    def nll_to_bits_per_dim(self, log_prob: Tensor) -> Tensor:
        """Convert ``log p(x)`` of dequantised images to bits/dim."""
        dims = math.prod(self.config.image_shape)
        return (-log_prob + dims * math.log(self.n_bins)) / (dims * math.log(2))


def check_images(images: Tensor, shape: tuple[int, int, int]) -> None:
    """Raise a clear error unless ``images`` is a uint8 batch of the model's shape."""
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise ShapeError(f"images should have shape (batch, {', '.join(map(str, shape))}); got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        if images.is_floating_point():
            raise DataError(f"images must be uint8 pixels 0..255, got {images.dtype}; "
                            "pass raw pixels, the model does the scaling")
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"pixel values out of range 0..255: min {int(images.min())}, max {int(images.max())}")


def check_dequantised(x: Tensor, tolerance: float = 1e-6) -> None:
    """Raise a clear error unless the floats ``x`` lie in ``[-0.5, 0.5]``, Glow's input range
    (up to ``tolerance``). Run it after the finiteness check: NaN compares as in range."""
    if x.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()  # one device-to-host copy
    if low < -0.5 - tolerance or high > 0.5 + tolerance:
        hint = " (they look like [0, 1] floats: subtract 0.5)" if low >= -tolerance and high <= 1 + tolerance else ""
        raise DataError(f"Glow takes dequantised images in [-0.5, 0.5] (Glow.preprocess of uint8 pixels); "
                        f"got values from {low:.4g} to {high:.4g}{hint}")


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
