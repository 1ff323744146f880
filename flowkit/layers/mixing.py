r"""The invertible 1x1 mixing layer (Kingma and Dhariwal 2018): a learned ``C x C``
matrix applied to the channels at every position.

.. math:: y_{:, p} = W x_{:, p}, \qquad \log|\det J| = |S| \log|\det W|

On vectors it is a dense invertible linear map, on sequences and images a 1x1
convolution. :class:`Invertible1x1` stores ``W`` and takes ``log|det W|`` with a
float64 ``slogdet``; :class:`Invertible1x1LU` stores ``W = P L (U + diag(sign(s) e^{log s}))``
so the log-det is ``|S| sum(log s)``. Both start from a random rotation and compute
their inverse in float64; with autograd off (evaluation, sampling) the inverse and
the assembled weight are cached and recomputed only when the parameters change.

Example:
    >>> mix = flowkit.Invertible1x1LU(12)
    >>> x = torch.randn(4, 12, 8, 8)
    >>> y, ladj = mix(x)
    >>> torch.allclose(mix.inverse(y)[0], x, atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bijector import Bijector, check_channels, spatial_size
from ..errors import FlowkitError, ShapeError, check_finite


def random_rotation(channels: int, generator: torch.Generator | None = None) -> Tensor:
    """A random orthogonal matrix (QR of a Gaussian), float64."""
    q, r = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def mix_channels(x: Tensor, weight: Tensor) -> Tensor:
    """Apply ``weight`` (C_out, C_in) to dim 1 of ``x`` at every spatial position."""
    if x.dim() == 2:
        return F.linear(x, weight)
    if x.dim() == 3:
        return F.conv1d(x, weight.view(*weight.shape, 1))
    return F.conv2d(x, weight.view(*weight.shape, 1, 1))


class _ParameterCache:
    """Caches a value derived from parameters while autograd is off.

    The key is every parameter's version counter and storage, so an optimiser step,
    ``load_state_dict`` or ``.to()`` invalidates it. Under ``torch.compile`` it steps
    aside: Python-side caches would break the graph.
    """

    def __init__(self):
        self._key = None
        self._value = None

    def get(self, params: list[Tensor], compute: Callable[[], Tensor]) -> Tensor:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()  # a compiled graph computes (or constant-folds) it inside the graph
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        if key != self._key:
            self._value, self._key = compute(), key
        return self._value


class _Mixing(Bijector):
    """Shared forward/inverse of the two parameterisations."""

    reads_context = False

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self._weight_cache = _ParameterCache()
        self._inverse_cache = _ParameterCache()
        self._logdet_cache = _ParameterCache()

    def matrix(self) -> Tensor:
        """The mixing matrix ``W`` in the parameters' dtype."""
        raise NotImplementedError

    def matrix64(self) -> Tensor:
        """``W`` assembled in float64."""
        raise NotImplementedError

    def log_abs_det(self) -> Tensor:
        """``log|det W|`` (a scalar in the parameters' dtype)."""
        raise NotImplementedError

    @torch.no_grad()
    def set_matrix(self, weight: Tensor) -> None:
        """Set ``W`` to a given invertible ``C x C`` matrix (a data-dependent initialisation,
        e.g. the whitening transform of the layer's input)."""
        weight = torch.as_tensor(weight, dtype=torch.float64, device=self.matrix().device)
        if weight.shape != (self.channels, self.channels):
            raise ShapeError(f"{type(self).__name__} needs a {self.channels} x {self.channels} matrix, "
                             f"got shape {tuple(weight.shape)}")
        check_finite(weight, "the mixing matrix")
        if torch.linalg.matrix_rank(weight) < self.channels:
            raise FlowkitError(f"{type(self).__name__} needs an invertible matrix; the one given is singular")
        self._store_matrix(weight)

    def _store_matrix(self, weight: Tensor) -> None:
        raise NotImplementedError

    def _cached_matrix(self) -> Tensor:
        return self._weight_cache.get(list(self.parameters()), self.matrix)

    def inverse_matrix(self) -> Tensor:
        """``W^{-1}``, computed in float64 then cast to the parameters' dtype."""
        params = list(self.parameters())
        return self._inverse_cache.get(params, lambda: torch.linalg.inv(self.matrix64()).to(params[0].dtype))

    def _cached_log_abs_det(self) -> Tensor:
        return self._logdet_cache.get(list(self.parameters()), self.log_abs_det)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.channels, type(self).__name__)
        y = mix_channels(x, self._cached_matrix().to(x.dtype))
        ladj = (self._cached_log_abs_det() * spatial_size(x)).to(x.dtype)
        return y, ladj.expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(y, self.channels, type(self).__name__)
        x = mix_channels(y, self.inverse_matrix().to(y.dtype))
        ladj = (-self._cached_log_abs_det() * spatial_size(y)).to(y.dtype)
        return x, ladj.expand(y.shape[0])

    def extra_repr(self) -> str:
        return f"{self.channels}"


class Invertible1x1(_Mixing):
    """Invertible 1x1 mixing with a plain weight matrix; ``log|det W|`` by float64 slogdet.

    Args:
        channels: number of channels mixed (dim 1 of the input).
        generator: draws the random rotation ``W`` starts as (default: torch's global one).

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039"""

    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__(channels)
        self.weight = nn.Parameter(random_rotation(channels, generator).float())

    def matrix(self) -> Tensor:
        return self.weight

    def _store_matrix(self, weight: Tensor) -> None:
        self.weight.copy_(weight)

    def matrix64(self) -> Tensor:
        return self.weight.double()

    def log_abs_det(self) -> Tensor:
        return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)


class Invertible1x1LU(_Mixing):
    """Invertible 1x1 mixing in LU form: ``W = P L (U + diag(sign_s * exp(log_s)))``.

    ``P`` and ``sign_s`` are fixed buffers; ``L`` (unit lower-triangular) and ``U``
    (strictly upper-triangular) store only their free entries, placed by index buffers
    that live in the state_dict with the rest.

    Args:
        channels: number of channels mixed (dim 1 of the input).
        generator: draws the random rotation the factors start from (default: torch's global one).

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__(channels)
        p, lower, upper = torch.linalg.lu(random_rotation(channels, generator))
        s = torch.diagonal(upper)
        self.register_buffer("permutation", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_index", torch.tril_indices(channels, channels, -1))
        self.register_buffer("upper_index", torch.triu_indices(channels, channels, 1))
        self.lower = nn.Parameter(lower[tuple(self.lower_index)].float())
        self.upper = nn.Parameter(upper[tuple(self.upper_index)].float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def _store_matrix(self, weight: Tensor) -> None:
        p, lower, upper = torch.linalg.lu(weight)
        s = torch.diagonal(upper)
        self.permutation.copy_(p)
        self.sign_s.copy_(torch.sign(s))
        self.lower.copy_(lower[tuple(self.lower_index)])
        self.upper.copy_(upper[tuple(self.upper_index)])
        self.log_s.copy_(torch.log(torch.abs(s)))

    def _assemble(self, dtype: torch.dtype) -> Tensor:
        c = self.channels
        eye = torch.eye(c, dtype=dtype, device=self.log_s.device)
        lower = eye.index_put(tuple(self.lower_index), self.lower.to(dtype))
        diag = torch.diag(self.sign_s.to(dtype) * self.log_s.to(dtype).exp())
        upper = diag.index_put(tuple(self.upper_index), self.upper.to(dtype))
        return self.permutation.to(dtype) @ lower @ upper

    def matrix(self) -> Tensor:
        return self._assemble(self.log_s.dtype)

    def matrix64(self) -> Tensor:
        return self._assemble(torch.float64)

    def log_abs_det(self) -> Tensor:
        return self.log_s.sum()
