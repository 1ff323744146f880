r"""Affine and additive coupling layers (Dinh et al. 2016; Kingma and Dhariwal 2018).

The channels split into :math:`x_a` (the first ``channels // 2``) and :math:`x_b`; a
conditioner network :math:`h = NN(x_a, context)` transforms :math:`x_b`:

.. math::
    \text{affine:}\quad y_b = (x_b + t) \odot \sigma(r + 2),\quad
        \log|\det J| = \sum \log \sigma(r + 2),\quad t = h_{0::2},\ r = h_{1::2}

    \text{additive:}\quad y_b = x_b + h,\quad \log|\det J| = 0

``scale="sigmoid"`` is openai's stable form (a scale in ``(0, 1)``); ``scale="exp"`` uses
:math:`e^{c \tanh(r / c)}` (a soft clamp at ``±clamp``), or WaveGlow's unclamped
:math:`e^{r}` with ``clamp=None``. The default conditioner is
:class:`flowkit.nn.GlowConditioner`, zero-initialised, so a new coupling is the identity.

A coupling is :class:`Coupling` with an element transform (:class:`ElementTransform`):
the transform says how many network outputs it reads per transformed element and maps
``x_b`` with them. :class:`AffineCoupling`, :class:`AdditiveCoupling` and
:class:`flowkit.RQSplineCoupling` are each a transform and a few lines; a new coupling
needs nothing more (docs/writing-bijectors.md).

A conditioner factory is called ``net(in_channels, out_channels)`` with the context's
channels added to ``in_channels``, or, if it has a parameter named
``context_channels``, ``net(in_channels, out_channels, context_channels=k)`` with the two
counts apart (a WaveNet takes audio and mel spectrogram through different layers).

Example:
    >>> coupling = flowkit.AffineCoupling(4, hidden=32, spatial_dims=1)
    >>> y, ladj = coupling(torch.randn(8, 4, 20))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from ..bijector import Bijector, check_channels, interleaved_pair, sum_except_batch
from ..errors import ShapeError
from ..nn import GlowConditioner
from ..precision import conditioner_autocast

__all__ = ["AdditiveCoupling", "AffineCoupling", "AffineTransform", "Coupling", "ElementTransform", "NetFactory",
           "ShiftTransform", "build_conditioner"]

NetFactory = Callable[..., nn.Module]


def build_conditioner(factory: NetFactory, in_channels: int, out_channels: int, context_channels: int) -> nn.Module:
    """Call a conditioner factory, telling it the context channels apart when it asks for them."""
    try:
        asks = "context_channels" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature
        asks = False
    if asks:
        return factory(in_channels, out_channels, context_channels=context_channels)
    return factory(in_channels + context_channels, out_channels)


class ElementTransform(nn.Module):
    """The elementwise map of a coupling: ``x_b -> y_b`` given the conditioner's output.

    Subclasses set :attr:`params` and implement :meth:`forward`. They hold no learnable
    parameters of their own (the conditioner has them), so swapping the transform of a
    coupling never changes its state dict.
    """

    #: network outputs per transformed element (the conditioner has ``params`` times the
    #: channels of ``x_b`` as outputs)
    params: int = 1

    def forward(self, x_b: Tensor, h: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """Return ``(y_b, log|det|)`` (or the inverse, with its log-det, when ``inverse``);
        ``h`` has ``params * channels(x_b)`` channels and ``x_b``'s other dims; the
        log-det has shape ``(batch,)``."""
        raise NotImplementedError


class Coupling(Bijector):
    r"""A coupling layer with any element transform:
    :math:`y_a = x_a,\ y_b = \tau(x_b;\ NN(x_a, context))`.

    Args:
        channels: input channels; the first ``channels // 2`` condition the rest.
        transform: the element transform :math:`\tau` (an :class:`ElementTransform`).
        hidden: width of the default conditioner.
        spatial_dims: 0, 1 or 2, for the default conditioner.
        context_channels: channels of the context fed to the conditioner; with 0 the
            layer ignores any context it is given.
        net: a factory ``(in_channels, out_channels) -> Module`` replacing the default
            conditioner (see the module docs for ``context_channels``); the module is
            called as ``net(x_a)``, or ``net(x_a, context)`` when ``context_channels > 0``.

    References:
        | Density estimation using Real NVP (Dinh et al., 2016)
        | https://arxiv.org/abs/1605.08803

    Example:
        >>> coupling = flowkit.Coupling(4, flowkit.AffineTransform(), hidden=16, spatial_dims=0)
        >>> x = torch.randn(3, 4)
        >>> y, ladj = coupling(x)
        >>> torch.allclose(coupling.inverse(y)[0], x), ladj.shape
        (True, torch.Size([3]))
    """

    def __init__(self, channels: int, transform: ElementTransform, hidden: int = 512,
                 spatial_dims: int | None = None, context_channels: int = 0, net: NetFactory | None = None):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
        if not isinstance(transform, ElementTransform):
            raise TypeError(f"transform must be a flowkit ElementTransform, not {type(transform).__name__}")
        self.channels = channels
        self.split = channels // 2
        self.transform = transform
        self.uses_context = context_channels > 0
        self.conditioner_dtype: torch.dtype | None = None  # see flowkit.precision
        self.spatial_dims = None if net is not None else spatial_dims  # checked when the default net is used
        out_channels = (channels - self.split) * transform.params
        if net is not None:
            self.net = build_conditioner(net, self.split, out_channels, context_channels)
        elif spatial_dims is None:
            raise ValueError("give spatial_dims (0 vectors, 1 sequences, 2 images) or a net factory")
        else:
            self.net = GlowConditioner(self.split, out_channels, hidden, spatial_dims, context_channels)

    @property
    def reads_context(self) -> bool:
        return self.uses_context

    def _conditioner(self, x_a: Tensor, context: Tensor | None) -> Tensor:
        if self.uses_context and context is None:
            raise ShapeError(f"{type(self).__name__} was built with context channels: pass a context")
        with conditioner_autocast(self, x_a):
            h = self.net(x_a, context) if self.uses_context else self.net(x_a)
        return h.to(x_a.dtype)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_channels(x, self.channels, type(self).__name__)
        if self.spatial_dims is not None and x.dim() - 2 != self.spatial_dims:
            raise ShapeError(f"{type(self).__name__} was built for {self.spatial_dims} spatial dims; "
                             f"got shape {tuple(x.shape)}")
        return x.split([self.split, self.channels - self.split], dim=1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._halves(x)
        y_b, ladj = self.transform(x_b, self._conditioner(x_a, context), inverse=False)
        return torch.cat([x_a, y_b], dim=1), ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y_a, y_b = self._halves(y)
        x_b, ladj = self.transform(y_b, self._conditioner(y_a, context), inverse=True)
        return torch.cat([y_a, x_b], dim=1), ladj

    def recompute(self, y: Tensor, context: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        """Reversible backprop with one network evaluation: ``x_a = y_a``, so the network
        output that inverts ``y_b`` is the one the forward pass needs."""
        y_a, y_b = self._halves(y)
        x_a = y_a.detach().requires_grad_(True)
        h = self._conditioner(x_a, context)
        with torch.no_grad():
            x_b = self.transform(y_b, h, inverse=True)[0]
        x_b = x_b.detach().requires_grad_(True)
        y_b_again, ladj = self.transform(x_b, h, inverse=False)
        return [x_a, x_b], torch.cat([x_a, y_b_again], dim=1), ladj


class AffineTransform(ElementTransform):
    r"""``y = (x + shift) * scale``, with ``(shift, r)`` interleaved in the network output
    (openai's layout) and ``scale = sigmoid(r + 2)`` (openai, ``"sigmoid"``) or
    :math:`e^{c \tanh(r / c)}` (``"exp"``, a soft clamp at ``±clamp``; WaveGlow's plain
    :math:`e^{r}` with ``clamp=None``).

    Args:
        scale: ``"sigmoid"`` or ``"exp"``.
        clamp: the soft clamp of ``"exp"``'s log-scale; ``None`` for none.
    """

    params = 2

    def __init__(self, scale: Literal["sigmoid", "exp"] = "sigmoid", clamp: float | None = 2.0):
        super().__init__()
        if scale not in ("sigmoid", "exp"):
            raise ValueError(f"scale must be 'sigmoid' or 'exp', not {scale!r}")
        if clamp is not None and not clamp > 0:
            raise ValueError(f"clamp must be positive or None (unclamped), not {clamp}")
        self.scale = scale
        self.clamp = clamp

    def forward(self, x_b: Tensor, h: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        shift, raw = interleaved_pair(h)
        if self.scale == "sigmoid":  # openai's order: the scale, then its log (faster than logsigmoid on CPU)
            scale = torch.sigmoid(raw + 2.0)
            log_det = sum_except_batch(scale.log())
            if inverse:
                return x_b / scale - shift, -log_det
            return (x_b + shift) * scale, log_det
        log_scale = raw if self.clamp is None else self.clamp * torch.tanh(raw / self.clamp)
        if inverse:
            return x_b * (-log_scale).exp() - shift, -sum_except_batch(log_scale)
        return (x_b + shift) * log_scale.exp(), sum_except_batch(log_scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, clamp={self.clamp}"


class ShiftTransform(ElementTransform):
    """``y = x + shift`` (volume-preserving)."""

    params = 1

    def forward(self, x_b: Tensor, h: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        return (x_b - h if inverse else x_b + h), x_b.new_zeros(x_b.shape[0])


class AffineCoupling(Coupling):
    """Affine coupling: ``y_b = (x_b + shift) * scale(x_a)`` (:class:`AffineTransform`).

    Args:
        channels, hidden, spatial_dims, context_channels, net: as in :class:`Coupling`.
        scale: ``"sigmoid"`` (openai) or ``"exp"``.
        clamp: the soft clamp of the log-scale for ``scale="exp"``; ``None`` for WaveGlow's
            unclamped ``exp``.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039
    """

    def __init__(self, channels: int, hidden: int = 512, spatial_dims: int | None = None,
                 context_channels: int = 0, net: NetFactory | None = None,
                 scale: Literal["sigmoid", "exp"] = "sigmoid", clamp: float | None = 2.0):
        super().__init__(channels, AffineTransform(scale, clamp), hidden, spatial_dims, context_channels, net)


class AdditiveCoupling(Coupling):
    """Additive (volume-preserving) coupling: ``y_b = x_b + NN(x_a)`` (:class:`ShiftTransform`).

    Args:
        channels, hidden, spatial_dims, context_channels, net: as in :class:`Coupling`.

    References:
        | NICE: Non-linear Independent Components Estimation (Dinh et al., 2014)
        | https://arxiv.org/abs/1410.8516
    """

    def __init__(self, channels: int, hidden: int = 512, spatial_dims: int | None = None,
                 context_channels: int = 0, net: NetFactory | None = None):
        super().__init__(channels, ShiftTransform(), hidden, spatial_dims, context_channels, net)
