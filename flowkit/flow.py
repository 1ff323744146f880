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
from .errors import DataError, FlowkitError, NonFiniteError, ShapeError, check_count, check_finite
from .sequential import Sequential


class Flow(nn.Module):
    """``Flow(bijector, base)``: density, sampling and exact encode/decode.

    Args:
        bijector: maps data ``x`` to latent ``z``.
        base: the latent distribution; default ``StandardNormal`` over the latent shape.
        event_shape: shape of one data sample; required when ``base`` is not given. A
            ``None`` entry is a free size: ``(1, None)`` is a waveform of any length the
            bijector's squeezes allow; :meth:`sample` then takes ``length``.
        validate: check inputs for shape and non-finite values (clear errors instead
            of silent NaN); switch off in tight loops once the data path is trusted.
        context_net: a module applied once to the raw context before the bijector sees
            it, by every method (``log_prob``, ``encode``, ``decode``, ``sample`` and the
            tools of :mod:`flowkit.manipulate`): ``context_net(context, event_shape)`` with
            the data's event shape (WaveGlow's mel upsampler trims to the audio length).
            If it has ``implied_length(context)``, :meth:`sample` takes the free size from
            the context.

    References:
        | Normalizing Flows for Probabilistic Modeling and Inference (Papamakarios et al., 2021)
        | https://arxiv.org/abs/1912.02762

    Example:
        >>> flow = flowkit.Flow(flowkit.Sequential(flowkit.Squeeze(4), flowkit.ActNorm(4)), event_shape=(1, None))
        >>> flow.log_prob(torch.randn(3, 1, 64)).shape, flow.sample(2, length=32).shape
        (torch.Size([3]), torch.Size([2, 1, 32]))
    """

    def __init__(self, bijector: Bijector, base: nn.Module | None = None,
                 event_shape: Sequence[int | None] | None = None, validate: bool = True,
                 context_net: nn.Module | None = None):
        super().__init__()
        if not isinstance(bijector, Bijector):
            raise TypeError(f"Flow needs a flowkit.Bijector, got {type(bijector).__name__}")
        self.bijector = bijector
        self.event_shape = None if event_shape is None else tuple(event_shape)
        if base is None:
            if event_shape is None:
                raise ValueError("Flow needs a base distribution or an event_shape")
            fixed = None not in self.event_shape
            base = StandardNormal(bijector.forward_shape(self.event_shape) if fixed else None)
        self.base = base
        self.validate = validate
        self.context_net = context_net

    def _check(self, x: Tensor, what: str, shape: Sequence[int | None] | None) -> None:
        if not self.validate:
            return
        if not x.is_floating_point():
            raise DataError(f"{what} must be floating point, got {x.dtype}: flows model continuous values "
                            f"(for images, dequantise pixels first, e.g. Glow.preprocess)")
        if shape is not None and not _matches(tuple(x.shape[1:]), tuple(shape)):
            hint = " (add a batch dim)" if _matches(tuple(x.shape), tuple(shape)) else ""
            wanted = ", ".join("any" if n is None else str(n) for n in shape)
            raise ShapeError(f"{what} should have shape (batch, {wanted}); got {tuple(x.shape)}{hint}")
        if shape is not None and any(n is None and size == 0 for n, size in zip(shape, x.shape[1:])):
            raise ShapeError(f"{what} of shape {tuple(x.shape)} has an empty free dimension; "
                             f"lengths must be at least 1")
        parameter = next(self.parameters(), None)
        if (parameter is not None and parameter.is_floating_point() and x.dtype != parameter.dtype
                and all(p.dtype != x.dtype for p in self.parameters())):  # a mixed-precision model may hold both
            raise DataError(f"{what} is {x.dtype} but the flow's parameters are {parameter.dtype}: "
                            f"cast one to the other (x.to({parameter.dtype}) or flow.to({x.dtype}))")
        check_finite(x, what)

    def embed_context(self, context: Tensor | None, event_shape: Sequence[int]) -> Tensor | None:
        """The context the bijector sees: ``context_net(context, event_shape)``, or ``context``.
        A context is refused when no layer reads one (:attr:`Bijector.reads_context`), since
        it would be ignored without a word."""
        if context is not None and getattr(self.bijector, "reads_context", None) is False:
            raise ShapeError("a context was given, but no layer of this flow reads one "
                             "(build its couplings or priors with context_channels=...)")
        if self.context_net is None or context is None:
            return context
        if self.validate:
            check_finite(context, "context")
        return self.context_net(context, tuple(event_shape))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`, so wrappers such as DDP that call ``forward`` work."""
        return self.log_prob(x, context)

    def check_input(self, x: Tensor) -> None:
        """Validate data given to :meth:`log_prob` (floating point, the event shape, finite);
        a subclass adds its domain's checks here (:class:`flowkit_image.Glow`: the pixel
        range). Does nothing with ``validate=False``."""
        self._check(x, "input", self.event_shape)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log p(x)`` per sample, shape ``(batch,)``."""
        self.check_input(x)
        z, ladj = self.bijector(x, self.embed_context(context, x.shape[1:]))
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
        return self.bijector(x, self.embed_context(context, x.shape[1:]))[0]

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The exact inverse of :meth:`encode`."""
        self._check(z, "latent", getattr(self.base, "event_shape", None))
        event_shape = self.bijector.inverse_shape(tuple(z.shape[1:]))
        context = self.embed_context(context, event_shape)
        x = self.bijector.inverse(z, context)[0]
        self._check_decoded(x, z, context)
        return x

    def _check_decoded(self, x: Tensor, z: Tensor, context: Tensor | None) -> None:
        """Raise :class:`NonFiniteError` naming the first layer whose inverse overflowed
        (eagerly: a data-dependent check inside ``torch.compile`` would break the graph)."""
        if torch.compiler.is_compiling():
            return
        if self.validate and not torch.isfinite(x).all():
            where = _first_nonfinite_inverse(self.bijector, z, context, "bijector")
            raise NonFiniteError(f"decoding produced non-finite values, first in {where}; the latent is too far "
                                 f"out (lower the temperature) or the weights are broken")

    def data_shape(self, length: int | Sequence[int] | None = None, context: Tensor | None = None) -> tuple[int, ...]:
        """The event shape of samples: ``event_shape`` with its free sizes set to ``length``
        (or to the length the context implies)."""
        if self.event_shape is None:
            raise ShapeError("this Flow was built without an event_shape; it cannot tell the shape of samples")
        free = [i for i, n in enumerate(self.event_shape) if n is None]
        if not free:
            if length is not None:
                raise ShapeError(f"this Flow's samples have the fixed shape {self.event_shape}; drop length")
            return self.event_shape
        if length is None:
            if context is None or not hasattr(self.context_net, "implied_length"):
                raise ShapeError(f"samples of shape {self.event_shape} have a free size: pass length")
            length = self.context_net.implied_length(context)
        sizes = [length] * len(free) if isinstance(length, int) else list(length)
        if len(sizes) != len(free) or any(int(n) < 1 for n in sizes):
            raise ShapeError(f"length must give {len(free)} positive size(s) for event shape {self.event_shape}")
        shape = list(self.event_shape)
        for i, n in zip(free, sizes):
            shape[i] = int(n)
        return tuple(shape)

    def rsample(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
                generator: torch.Generator | None = None, length: int | Sequence[int] | None = None) -> Tensor:
        """``n`` samples, differentiable w.r.t. the parameters; ``z ~ N(0, T^2 I)``."""
        return self.rsample_and_log_prob(n, temperature, context, generator, length)[0]

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
               generator: torch.Generator | None = None, length: int | Sequence[int] | None = None) -> Tensor:
        """``n`` samples at temperature ``T`` (the latent's std is scaled by ``T``); ``length``
        sets the free size of a variable-length flow."""
        return self.rsample(n, temperature, context, generator, length)

    def rsample_and_log_prob(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
                             generator: torch.Generator | None = None,
                             length: int | Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """Samples and their log-density under the model (not the tempered one)."""
        n = check_count(n, "the number of samples")
        if context is not None and context.shape[0] != n:
            raise ShapeError(f"context has batch size {context.shape[0]}; sampling {n}")
        if not (math.isfinite(float(temperature)) and float(temperature) >= 0):
            raise FlowkitError(f"temperature must be a finite number >= 0, not {float(temperature)}")
        shape = self.data_shape(length, context) if self.event_shape is not None else None
        latent_shape = None if shape is None else self.bijector.forward_shape(shape)
        z = self.base.sample(n, temperature, event_shape=latent_shape, generator=generator)
        context = self.embed_context(context, shape or ())
        x, ladj_inverse = self.bijector.inverse(z, context)
        self._check_decoded(x, z, context)
        return x, self.base.log_prob(z) - ladj_inverse

    @torch.no_grad()
    def sample_and_log_prob(self, n: int, temperature: float = 1.0, context: Tensor | None = None,
                            generator: torch.Generator | None = None,
                            length: int | Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`rsample_and_log_prob` without autograd."""
        return self.rsample_and_log_prob(n, temperature, context, generator, length)


@torch.no_grad()
def _first_nonfinite_inverse(bijector: Bijector, y: Tensor, context: Tensor | None, name: str) -> str:
    """Rerun the inverse member by member (into nested ``Sequential`` chains) and name the
    first whose output is not finite."""
    if isinstance(bijector, Sequential):
        for i in reversed(range(len(bijector))):
            where = _first_nonfinite_inverse(bijector[i], y, context, f"{name}.layers.{i}")
            if where:
                return where
            y = bijector[i].inverse(y, context)[0]
        return ""
    out = bijector.inverse(y, context)[0]
    return "" if torch.isfinite(out).all() else f"{name} ({type(bijector).__name__})"


def _matches(shape: tuple[int, ...], pattern: tuple[int | None, ...]) -> bool:
    return len(shape) == len(pattern) and all(p is None or p == n for n, p in zip(shape, pattern))
