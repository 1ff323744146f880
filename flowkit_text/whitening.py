r"""Whitening (Su et al. 2021) as a bijector, and the full-covariance Gaussian it implies.

Fitted on embeddings :math:`x_i` with mean :math:`\mu` and covariance
:math:`\Sigma = U \Lambda U^\top`:

.. math::
    z = (x - \mu)\, U \Lambda^{-1/2}, \qquad
    \log|\det J| = -\tfrac12 \sum_j \log \lambda_j

so ``flowkit.Flow(whitening, event_shape=(d,))`` *is* the maximum-likelihood Gaussian
:math:`\mathcal N(\mu, \Sigma)`, in the same API as the flows (``log_prob``, ``encode``,
``decode``, ``sample``). :meth:`Whitening.reduce` keeps the ``k`` leading components
(whitening-k). Eigenvalues are floored at ``eps`` times the largest, and ``noise_var``
adds the variance of the dequantisation noise the flows are trained with, so both models
describe the same noisy data. Everything is computed in float64.

References:
    | Whitening Sentence Representations for Better Semantics and Faster Retrieval (Su et al., 2021)
    | https://arxiv.org/abs/2103.15316

Example:
    >>> x = torch.randn(500, 8) @ torch.randn(8, 8)
    >>> gaussian = flowkit.Flow(Whitening.fitted(x), event_shape=(8,))
    >>> gaussian.log_prob(x[:3]).shape
    torch.Size([3])
"""

from __future__ import annotations

import torch
from torch import Tensor

import flowkit as fk
from flowkit.errors import DataError, ShapeError

__all__ = ["Whitening"]


class Whitening(fk.Bijector):
    """``z = (x - mean) @ U diag(lambda)^{-1/2}``, fitted with :meth:`fit`; shape ``(B, d)``.

    Arguments:
        dim: embedding dimension.
    """

    reads_context = False

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("eigenvectors", torch.eye(dim, dtype=torch.float64))
        self.register_buffer("eigenvalues", torch.ones(dim, dtype=torch.float64))

    @classmethod
    def fitted(cls, x: Tensor, noise_var: float = 0.0, eps: float = 1e-9) -> Whitening:
        """A new :class:`Whitening` fitted on ``x`` ``(N, d)``."""
        whitening = cls(x.shape[1])
        whitening.fit(x, noise_var, eps)
        return whitening

    @torch.no_grad()
    def fit(self, x: Tensor, noise_var: float = 0.0, eps: float = 1e-9) -> Whitening:
        """Fit mean and covariance (maximum likelihood) on ``x`` ``(N, d)``."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"whitening of {self.dim}-d vectors needs an (N, {self.dim}) array, got {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise DataError(f"whitening needs at least 2 embeddings, got {x.shape[0]}")
        fk.errors.check_finite(x, "embeddings")
        x = x.double()
        mean = x.mean(0)
        cov = torch.cov((x - mean).T, correction=0) + noise_var * torch.eye(self.dim, dtype=torch.float64)
        values, vectors = torch.linalg.eigh(cov)
        order = values.argsort(descending=True)
        values = values[order].clamp_min(eps * float(values.max()))
        self.mean.copy_(mean)
        self.eigenvectors.copy_(vectors[:, order])
        self.eigenvalues.copy_(values)
        return self

    def _check(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"Whitening was built for {self.dim}-d vectors, shape (batch, {self.dim}); "
                             f"got {tuple(x.shape)}")

    def _matrix(self, k: int | None = None) -> Tensor:
        k = self.dim if k is None else k
        return self.eigenvectors[:, :k] * self.eigenvalues[:k].rsqrt()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        z = ((x.double() - self.mean) @ self._matrix()).to(x.dtype)
        ladj = -0.5 * self.eigenvalues.log().sum()
        return z, ladj.to(x.dtype).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        back = self.eigenvectors * self.eigenvalues.sqrt()  # U diag(sqrt(lambda)); U is orthogonal
        x = (z.double() @ back.T + self.mean).to(z.dtype)
        ladj = 0.5 * self.eigenvalues.log().sum()
        return x, ladj.to(z.dtype).expand(z.shape[0])

    def reduce(self, x: Tensor, k: int | None = None) -> Tensor:
        """Whitening-k: the ``k`` leading whitened components of ``x`` (all with ``None``)."""
        if k is not None and not 0 < k <= self.dim:
            raise ValueError(f"k must be between 1 and {self.dim}, not {k}")
        self._check(x)
        return ((x.double() - self.mean) @ self._matrix(k)).to(x.dtype)
