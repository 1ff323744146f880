r"""A normalizing flow: a bijector from data to latent plus a base distribution.

.. math:: \log p(x) = \log p_Z(f(x)) + \log|\det J_f(x)|

With multiscale priors written as bijections (see :mod:`flowkit.layers.multiscale`)
the base is N(0, I), ``encode``/``decode`` are exact inverses and sampling at
temperature ``T`` draws ``z ~ N(0, T^2 I)``.

Example:
    >>> flow = flowkit.Flow(flowkit.Sequential(flowkit.ActNorm(2), flowkit.Invertible1x1(2)), event_shape=(2,))
    >>> x = torch.randn(100, 2)
    >>> flow.log_prob(x).shape
    torch.Size([100])
    >>> torch.allclose(flow.decode(flow.encode(x)), x, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .bijector import Bijector
from .distributions import StandardNormal
from .errors import ShapeError, check_finite


class Flow(nn.Module):
    """``Flow(bijector, base)``: density, sampling and exact encode/decode.

    Args:
        bijector: maps data ``x`` to latent ``z``.
        base: the latent distribution; default ``StandardNormal`` over the latent shape.
        event_shape: shape of one data sample; required when ``base`` is not given.
        validate: check inputs for shape and non-finite values (clear errors instead
            of silent NaN); switch off in tight loops once the data path is trusted.
    """

    def __init__(self, bijector: Bijector, base: nn.Module | None = None,
                 event_shape: Sequence[int] | None = None, validate: bool = True):
        super().__init__()
        if not isinstance(bijector, Bijector):
            raise TypeError(f"Flow needs a flowkit.Bijector, got {type(bijector).__name__}")
        self.bijector = bijector
        self.event_shape = torch.Size(event_shape) if event_shape is not None else None
        if base is None:
            if event_shape is None:
                raise ValueError("Flow needs a base distribution or an event_shape")
            base = StandardNormal(bijector.forward_shape(tuple(event_shape)))
        self.base = base
        self.validate = validate

    def _check(self, x: Tensor, what: str, shape: torch.Size | None) -> None:
        if not self.validate:
            return
        if shape is not None and tuple(x.shape[1:]) != tuple(shape):
            hint = " (add a batch dim)" if tuple(x.shape) == tuple(shape) else ""
            raise ShapeError(f"{what} should have shape (batch, {', '.join(map(str, shape))}); "
                             f"got {tuple(x.shape)}{hint}")
        check_finite(x, what)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`, so wrappers such as DDP that call ``forward`` work."""
        return self.log_prob(x, context)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log p(x)`` per sample, shape ``(batch,)``."""
        self._check(x, "input", self.event_shape)
        z, ladj = self.bijector(x, context)
        return self.base.log_prob(z) + ladj

    def bits_per_dim(self, x: Tensor, context: Tensor | None = None, n_bins: int | None = None) -> Tensor:
        r"""Negative log-likelihood in bits per dimension, per sample.

        With ``n_bins`` (discrete data dequantised to bins of width ``1 / n_bins``) the
        discretisation term :math:`D \log n_{bins}` is added, as in Glow.
        """
        dims = x[0].numel()
        nll = -self.log_prob(x, context)
        if n_bins is not None:
            nll = nll + dims * math.log(n_bins)
        return nll / (dims * math.log(2))

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The latent ``z = f(x)`` (standardised at every level for multiscale models)."""
        self._check(x, "input", self.event_shape)
        return self.bijector(x, context)[0]

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The exact inverse of :meth:`encode`."""
        self._check(z, "latent", getattr(self.base, "event_shape", None))
        return self.bijector.inverse(z, context)[0]

    def rsample(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples, differentiable w.r.t. the parameters; ``z ~ N(0, T^2 I)``."""
        return self.rsample_and_log_prob(n, temperature, context, generator)[0]

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples at temperature ``T`` (the latent's std is scaled by ``T``)."""
        return self.rsample(n, temperature, context, generator)

    def rsample_and_log_prob(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Samples and their log-density under the model (not the tempered one)."""
        if context is not None and context.shape[0] != n:
            raise ShapeError(f"context has batch size {context.shape[0]}; sampling {n}")
        z = self.base.sample(n, temperature, generator=generator)
        x, ladj_inverse = self.bijector.inverse(z, context)
        return x, self.base.log_prob(z) - ladj_inverse

    @torch.no_grad()
    def sample_and_log_prob(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`rsample_and_log_prob` without autograd."""
        return self.rsample_and_log_prob(n, temperature, context, generator)
