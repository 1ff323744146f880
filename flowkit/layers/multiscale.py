r"""Multiscale factor-out and learned priors, written as bijections.

Glow factors out half of the channels after each level and models them with a
Gaussian whose mean and log-scale depend on the kept half,
:math:`z_2 \sim N(\mu(z_1), e^{2 s(z_1)})`. Standardising :math:`z_2` is itself an
affine bijection,

.. math:: \epsilon_2 = (z_2 - \mu(z_1))\, e^{-s(z_1)}, \qquad \log|\det J| = -\sum s(z_1),

so the whole multiscale model maps ``x`` to ``eps`` with a standard normal base:
``encode`` gives the standardised latent of every level, ``decode`` inverts exactly
(the factored-out latents are kept, never re-sampled) and temperature means
``eps ~ N(0, T^2 I)`` everywhere.

:class:`FactorOut` keeps the layout: its output has its input's shape, with the
``inner`` bijector's output (which must preserve its input's shape: wrap squeezes
as ``Squeeze(2)`` ... ``Squeeze(2).inv``) in the first channels and ``eps_2`` in the
rest. :class:`LearnedPrior` standardises with a learned per-channel mean and scale,
optionally shifted by a linear function of the context (class-conditional prior).
:func:`build_multiscale` assembles the whole architecture from a step of your choice
(Glow, the text flow and the mel flow are built with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ..bijector import Bijector, Shape, check_channels, interleaved_pair, sum_except_batch
from ..errors import ShapeError
from ..nn import ZeroConv, keep_border_patches
from ..precision import conditioner_autocast
from ..reversible import GradSink, recompute_backward, record_boundary
from ..sequential import Sequential
from .squeeze import Squeeze

__all__ = ["FactorOut", "LearnedPrior", "build_multiscale", "divide_by_sigma"]


def _standardise(z: Tensor, mean: Tensor, logs: Tensor) -> tuple[Tensor, Tensor]:
    return (z - mean) * (-logs).exp(), -sum_except_batch(logs)


def _unstandardise(eps: Tensor, mean: Tensor, logs: Tensor) -> tuple[Tensor, Tensor]:
    return eps * logs.exp() + mean, sum_except_batch(logs)


class FactorOut(Bijector):
    r"""Split the channels, standardise the second part given the first, run ``inner``
    on the first part.

    With ``prior="standard"`` the factored-out part is modelled as N(0, sigma^2 I)
    (WaveGlow's early outputs): :math:`\epsilon_2 = z_2 / \sigma`, with log-det
    :math:`-D_2 \log \sigma`.

    Args:
        channels: input channels.
        inner: the rest of the model, applied to the kept part; must preserve shape.
        spatial_dims: 0, 1 or 2 (for the prior network); inputs of another rank are refused
            with a :class:`~flowkit.errors.ShapeError`.
        prior: ``"learned"`` (openai's zero-initialised conv of the kept part) or
            ``"standard"`` (``z_2 ~ N(0, sigma^2 I)``, as in WaveGlow's early outputs).
        context_channels: channels of a context fed to the prior network.
        edge_bias: give the prior's convolution openai's border channel.
        keep: channels kept and passed to ``inner`` (default ``channels // 2``); WaveGlow
            keeps 6 of 8, then 4 of 6.
        sigma: the scale of the ``"standard"`` prior.

    References:
        | Density estimation using Real NVP (Dinh et al., 2017)
        | https://arxiv.org/abs/1605.08803

    Example:
        >>> level = flowkit.FactorOut(8, spatial_dims=1, prior="standard", keep=6)
        >>> level(torch.randn(2, 8, 10))[0].shape
        torch.Size([2, 8, 10])
    """

    def __init__(self, channels: int, inner: Bijector | None = None, spatial_dims: int = 2,
                 prior: Literal["learned", "standard"] = "learned", context_channels: int = 0,
                 edge_bias: bool = False, keep: int | None = None, sigma: float = 1.0):
        super().__init__()
        if prior not in ("learned", "standard"):
            raise ValueError(f"prior must be 'learned' or 'standard', not {prior!r}")
        keep = channels // 2 if keep is None else keep
        if not 0 < keep < channels:
            raise ValueError(f"FactorOut keeps between 1 and {channels - 1} of its {channels} channels, not {keep}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, not {sigma}")
        if sigma != 1.0 and prior == "learned":
            raise ValueError("sigma is the scale of the 'standard' prior; a learned prior learns its scale")
        self.channels = channels
        self.split = keep
        self.spatial_dims = spatial_dims
        self.log_sigma = math.log(sigma)
        self.inner = inner if inner is not None else Sequential()
        self.prior = None
        self.uses_context = context_channels > 0
        self.conditioner_dtype: torch.dtype | None = None  # see flowkit.precision
        if prior == "learned":
            self.prior = ZeroConv(self.split + context_channels, 2 * (channels - self.split), spatial_dims,
                                  edge_bias=edge_bias)

    def _check(self, x: Tensor) -> None:
        check_channels(x, self.channels, "FactorOut")
        if self.prior is not None and x.dim() - 2 != self.spatial_dims:
            raise ShapeError(f"FactorOut was built for {self.spatial_dims} spatial dims (its prior network is "
                             f"{self.spatial_dims}-D); got shape {tuple(x.shape)}")

    def _fixed_scale(self, z2: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """The ``"standard"`` prior's ``eps_2 = z_2 / sigma`` (or its inverse) and log-det."""
        return divide_by_sigma(z2, self.log_sigma, inverse)

    @property
    def reads_context(self) -> bool | None:
        return True if self.uses_context else self.inner.reads_context

    def _prior(self, z1: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.uses_context and context is None:
            raise ShapeError("this FactorOut's prior was built with context channels: pass a context")
        with conditioner_autocast(self, z1):
            h = self.prior(z1, context if self.uses_context else None)
        return interleaved_pair(h.to(z1.dtype))

    def _run_inner(self, z: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        out, ladj = self.inner.inverse(z, context) if inverse else self.inner(z, context)
        if out.shape != z.shape:
            raise ShapeError(f"the inner bijector of FactorOut must preserve shape; it mapped "
                             f"{tuple(z.shape)} to {tuple(out.shape)} (close squeezes with Squeeze(f).inv)")
        return out, ladj

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        record_boundary(self, x)
        z1, z2 = x.split([self.split, self.channels - self.split], dim=1)
        if self.prior is not None:
            z2, ladj = _standardise(z2, *self._prior(z1, context))
        else:
            z2, ladj = self._fixed_scale(z2, inverse=False)
        y1, inner_ladj = self._run_inner(z1, context, inverse=False)
        return torch.cat([y1, z2], dim=1), ladj + inner_ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y)
        y1, eps2 = y.split([self.split, self.channels - self.split], dim=1)
        z1, ladj = self._run_inner(y1, context, inverse=True)
        if self.prior is not None:
            eps2, prior_ladj = _unstandardise(eps2, *self._prior(z1, context))
        else:
            eps2, prior_ladj = self._fixed_scale(eps2, inverse=True)
        ladj = ladj + prior_ladj
        return torch.cat([z1, eps2], dim=1), ladj

    def reversible_backward(self, y: Tensor, grad_y: Tensor, grad_ladj: Tensor,
                            sink: GradSink) -> tuple[Tensor, Tensor]:
        """The inner chain walks itself (each member recomputed once), then the prior
        standardisation is recomputed with one evaluation of the prior network. With a
        stored boundary (``"reversible+boundaries"``) the level restarts from it."""
        y1, eps2 = y[:, : self.split], y[:, self.split:]
        z1, grad_z1 = self.inner.reversible_backward(y1, grad_y[:, : self.split], grad_ladj, sink)
        stored = sink.boundaries.get(self)
        if stored is not None:
            sink.note_drift(self, z1, stored[:, : self.split])
            z1 = stored[:, : self.split]
        if self.prior is None:  # z2 = sigma * eps2, a constant log-det: no parameters, no recomputation
            sigma = math.exp(self.log_sigma)
            return torch.cat([z1, eps2 * sigma], dim=1), torch.cat([grad_z1, grad_y[:, self.split:] / sigma], dim=1)
        grad_y = torch.cat([grad_z1, grad_y[:, self.split:]], dim=1)

        def recompute(y: Tensor, context: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor]:
            z1 = y[:, : self.split].detach().requires_grad_(True)
            mean, logs = self._prior(z1, context)
            with torch.no_grad():
                if stored is None:
                    z2 = _unstandardise(y[:, self.split:], mean, logs)[0]
                else:
                    z2 = stored[:, self.split:].clone()
            z2.requires_grad_(True)
            eps2, ladj = _standardise(z2, mean, logs)
            return [z1, z2], torch.cat([z1, eps2], dim=1), ladj

        return recompute_backward(recompute, list(self.prior.parameters()), torch.cat([z1, eps2], dim=1),
                                  grad_y, grad_ladj, sink)

    def forward_shape(self, shape: Sequence[int]) -> Shape:
        kept = (self.split, *shape[1:])
        if self.inner.forward_shape(kept) != kept:
            raise ShapeError(f"the inner bijector of FactorOut must preserve the shape {kept}")
        return tuple(shape)


def divide_by_sigma(z: Tensor, log_sigma: float, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """``z / sigma`` (``z * sigma`` when ``inverse``) and its per-sample log-det
    ``-+ log(sigma) * numel``: standardising a fixed-scale Gaussian N(0, sigma^2 I), as
    :class:`FactorOut`'s ``"standard"`` prior and WaveGlow's last channels do."""
    if log_sigma == 0.0:
        return z, z.new_zeros(z.shape[0])
    sign = 1.0 if inverse else -1.0
    return z * math.exp(sign * log_sigma), z.new_full((z.shape[0],), sign * log_sigma * z[0].numel())


class LearnedPrior(Bijector):
    r"""Standardise with a learned Gaussian: ``eps = (z - mean) * exp(-logs)``.

    ``mean`` and ``logs`` are per channel (openai's ``learntop``) and start at 0;
    with ``context_channels > 0`` a zero-initialised linear map of the context
    (e.g. a one-hot class) is added, which makes the prior class-conditional.

    Args:
        channels: channels of the latent it standardises.
        context_channels: channels of a ``(B, K)`` context (a one-hot class or label); 0 for none.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039
    """

    def __init__(self, channels: int, context_channels: int = 0):
        super().__init__()
        self.channels = channels
        self.mean = nn.Parameter(torch.zeros(channels))
        self.logs = nn.Parameter(torch.zeros(channels))
        self.context_net = ZeroConv(context_channels, 2 * channels, 0) if context_channels else None

    @property
    def reads_context(self) -> bool:
        return self.context_net is not None

    def _params(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        view = (1, -1, *([1] * (z.dim() - 2)))
        mean, logs = self.mean.view(view), self.logs.view(view)
        if self.context_net is not None:
            if context is None:
                raise ShapeError("this LearnedPrior is class-conditional: pass a context")
            h = self.context_net(context.to(z.dtype)).view(z.shape[0], -1, *([1] * (z.dim() - 2)))
            mean, logs = mean + h[:, 0::2], logs + h[:, 1::2]
        return mean.expand_as(z), logs.expand_as(z)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.channels, "LearnedPrior")
        return _standardise(x, *self._params(x, context))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(y, self.channels, "LearnedPrior")
        return _unstandardise(y, *self._params(y, context))


Step = Callable[[int, int, int], Sequence[Bijector]]


def build_multiscale(channels: int, levels: int, depth: int, step: Step, spatial_dims: int, squeeze: bool = True,
                     context_channels: int = 0, top_prior: bool = False, top_context_channels: int | None = None,
                     edge_bias: bool = False, spatial_shape: Sequence[int] | None = None, level: int = 0) -> Sequential:
    r"""Glow's multiscale architecture (Dinh et al. 2017; Kingma and Dhariwal 2018) for any
    channel-first tensor, with the step of your choice.

    Each level is ``[Squeeze(2)], step x depth, then FactorOut(next level)`` (its learned
    prior reads the kept half), ``[Squeeze(2).inv]``; the last level ends with a
    :class:`LearnedPrior` instead when ``top_prior``. The squeezes put each level's
    output back in the input's layout, so the latent has the input's shape.

    Arguments:
        channels: input channels.
        levels: number of levels (``levels - 1`` factor-outs).
        depth: steps per level.
        step: ``step(channels, level, index)`` gives the layers of one step (e.g. ActNorm,
            a 1x1 mixing, a coupling) at that level's channel count.
        spatial_dims: 0 (vectors: no squeeze), 1 (sequences) or 2 (images).
        squeeze: squeeze each level by 2 (ignored for vectors).
        context_channels: context read by the factor-outs' priors.
        top_prior: end the last level with a :class:`LearnedPrior`.
        top_context_channels: context read by that prior (default ``context_channels``).
        edge_bias: openai's border channel in the factor-outs' priors.
        spatial_shape: the input's spatial size; given, every level's convolutions
            precompute their border patches for it (:func:`flowkit.nn.keep_border_patches`).

    References:
        | Density estimation using Real NVP (Dinh et al., 2017)
        | https://arxiv.org/abs/1605.08803

    Example:
        >>> step = lambda c, level, k: [flowkit.ActNorm(c), flowkit.AffineCoupling(c, hidden=8, spatial_dims=1)]
        >>> chain = flowkit.build_multiscale(2, levels=2, depth=1, step=step, spatial_dims=1)
        >>> chain(torch.randn(3, 2, 8))[0].shape
        torch.Size([3, 2, 8])
    """
    squeezing = squeeze and spatial_dims > 0
    c = channels * 2**spatial_dims if squeezing else channels
    spatial = None
    if spatial_shape is not None:
        spatial = tuple(s >> (level + 1) for s in spatial_shape) if squeezing else tuple(spatial_shape)
    layers: list[Bijector] = [Squeeze(2)] if squeezing else []
    for index in range(depth):
        block = list(step(c, level, index))
        if spatial is not None:
            for layer in block:
                keep_border_patches(layer, spatial)
        layers += block
    if level < levels - 1:
        inner = build_multiscale(c // 2, levels, depth, step, spatial_dims, squeeze, context_channels, top_prior,
                                 top_context_channels, edge_bias, spatial_shape, level + 1)
        factor_out = FactorOut(c, inner, spatial_dims=spatial_dims, context_channels=context_channels,
                               edge_bias=edge_bias)
        if spatial is not None:
            keep_border_patches(factor_out.prior, spatial)
        layers.append(factor_out)
    elif top_prior:
        layers.append(LearnedPrior(c, context_channels if top_context_channels is None else top_context_channels))
    if squeezing:
        layers.append(Squeeze(2).inv)
    return Sequential(*layers)
