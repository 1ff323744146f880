r"""Rational-quadratic spline coupling (Durkan et al. 2019, "Neural Spline Flows").

Each channel of :math:`x_b` goes through a monotonic rational-quadratic spline with
``bins`` segments on ``[-bound, bound]`` and the identity outside (linear tails).
The conditioner ``NN(x_a)`` gives, per transformed element, ``bins`` widths,
``bins`` heights and ``bins - 1`` interior derivatives; it starts at zero, which is
the identity spline. Bins are found with ``torch.searchsorted``; the inverse solves
the segment's quadratic in its stable form.

Example:
    >>> spline = flowkit.RQSplineCoupling(6, bins=8, hidden=64, spatial_dims=0)
    >>> y, ladj = spline(torch.randn(32, 6))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..bijector import sum_except_batch
from .coupling import Coupling, ElementTransform, NetFactory

__all__ = ["RQSplineCoupling", "RQSplineTransform", "rational_quadratic_spline"]

MIN_WIDTH = 1e-3
MIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
_IDENTITY_DERIVATIVE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))  # zero parameters give slope 1


def _knots(unnormalized: Tensor, minimum: float, bound: float) -> tuple[Tensor, Tensor]:
    """Cumulative knot positions (..., K + 1) on [-bound, bound] and the bin sizes (..., K)."""
    bins = unnormalized.shape[-1]
    sizes = minimum + (1 - minimum * bins) * torch.softmax(unnormalized, dim=-1)
    cumulative = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    cumulative = 2 * bound * cumulative - bound
    cumulative = torch.cat([cumulative[..., :1].clamp(-bound, -bound), cumulative[..., 1:-1],
                            cumulative[..., -1:].clamp(bound, bound)], dim=-1)
    return cumulative, cumulative[..., 1:] - cumulative[..., :-1]


def _gather(t: Tensor, index: Tensor) -> Tensor:
    return torch.gather(t, -1, index)[..., 0]


def rational_quadratic_spline(x: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor,
                              bound: float, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """Elementwise monotonic RQ spline with linear tails.

    Args:
        x: inputs of any shape ``S``.
        widths, heights: unnormalised bin sizes, shape ``S + (K,)``.
        derivatives: unnormalised interior derivatives, shape ``S + (K - 1,)``.
        bound: the spline acts on ``[-bound, bound]``; the identity elsewhere.
        inverse: evaluate the inverse spline.

    Returns:
        the outputs and the elementwise ``log|dy/dx|`` (of the direction evaluated).
    """
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    cum_w, w = _knots(widths, MIN_WIDTH, bound)
    cum_h, h = _knots(heights, MIN_HEIGHT, bound)
    d = MIN_DERIVATIVE + F.softplus(F.pad(derivatives, (1, 1)) + _IDENTITY_DERIVATIVE)  # boundary slopes are 1

    knots = cum_h if inverse else cum_w
    idx = torch.searchsorted(knots[..., 1:-1].contiguous(), xc[..., None].contiguous(), right=True)
    xk, wk = _gather(cum_w, idx), _gather(w, idx)
    yk, hk = _gather(cum_h, idx), _gather(h, idx)
    dk, dk1 = _gather(d, idx), _gather(d, idx + 1)
    sk = hk / wk
    slope_sum = dk1 + dk - 2 * sk

    if inverse:
        dy = xc - yk
        a = hk * (sk - dk) + dy * slope_sum
        b = hk * dk - dy * slope_sum
        c = -sk * dy
        disc = (b.square() - 4 * a * c).clamp_min(0)
        theta = (2 * c) / (-b - disc.sqrt())
        out = theta * wk + xk
    else:
        theta = (xc - xk) / wk
    tt = theta * (1 - theta)
    denominator = sk + slope_sum * tt
    if not inverse:
        out = yk + hk * (sk * theta.square() + dk * tt) / denominator
    deriv = sk.square() * (dk1 * theta.square() + 2 * sk * tt + dk * (1 - theta).square())
    log_deriv = torch.log(deriv) - 2 * torch.log(denominator)
    if inverse:
        log_deriv = -log_deriv
    return torch.where(inside, out, x), torch.where(inside, log_deriv, torch.zeros_like(log_deriv))


class RQSplineTransform(ElementTransform):
    """Each element through its own rational-quadratic spline: ``bins`` widths, ``bins``
    heights and ``bins - 1`` interior derivatives per element, on ``[-bound, bound]``.

    Args:
        bins: spline segments per element.
        bound: the spline acts on ``[-bound, bound]``, the identity outside.

    References:
        | Neural Spline Flows (Durkan et al., 2019)
        | https://arxiv.org/abs/1906.04032
    """

    def __init__(self, bins: int = 8, bound: float = 3.0):
        super().__init__()
        self.bins = bins
        self.bound = bound
        self.params = 3 * bins - 1

    def forward(self, x_b: Tensor, h: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        h = h.view(x_b.shape[0], x_b.shape[1], self.params, *x_b.shape[2:]).movedim(2, -1)
        widths, heights, derivs = h.split([self.bins, self.bins, self.bins - 1], dim=-1)
        out, log_deriv = rational_quadratic_spline(x_b, widths, heights, derivs, self.bound, inverse)
        return out, sum_except_batch(log_deriv)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}"


class RQSplineCoupling(Coupling):
    """Coupling whose element transform is a rational-quadratic spline (:class:`RQSplineTransform`).

    Args:
        channels: input channels.
        bins: spline segments per element.
        bound: the spline acts on ``[-bound, bound]``, the identity outside.
        hidden, spatial_dims, context_channels, net: as in :class:`flowkit.Coupling`.

    References:
        | Neural Spline Flows (Durkan et al., 2019)
        | https://arxiv.org/abs/1906.04032
    """

    def __init__(self, channels: int, bins: int = 8, bound: float = 3.0, hidden: int = 128,
                 spatial_dims: int | None = None, context_channels: int = 0, net: NetFactory | None = None):
        super().__init__(channels, RQSplineTransform(bins, bound), hidden, spatial_dims, context_channels, net)
