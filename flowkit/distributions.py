r"""Base distributions of a :class:`flowkit.Flow`.

Both are modules (so they follow ``.to(device)``) with ``log_prob`` summed over the
event dims and ``sample`` with a temperature that scales the standard deviation.

Example:
    >>> base = StandardNormal((3, 8, 8))
    >>> base.log_prob(base.sample(4)).shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .bijector import sum_except_batch
from .errors import ShapeError

LOG_2PI = math.log(2 * math.pi)


class StandardNormal(nn.Module):
    r"""N(0, I) over ``event_shape``: :math:`\log p(z) = -\tfrac12 \sum (z^2 + \log 2\pi)`.

    Args:
        event_shape: the shape of one latent sample; ``None`` leaves it free
            (variable-length flows): ``sample`` then takes it.
    """

    def __init__(self, event_shape: Sequence[int] | None):
        super().__init__()
        self.event_shape = None if event_shape is None else torch.Size(event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks device and dtype

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * sum_except_batch(z.square() + LOG_2PI)

    def sample(self, n: int, temperature: float = 1.0, event_shape: Sequence[int] | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        if event_shape is None and self.event_shape is None:
            raise ShapeError("this distribution's event shape is free: pass event_shape to sample")
        shape = (n, *(self.event_shape if event_shape is None else event_shape))
        z = torch.randn(shape, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)
        return z * temperature


class DiagNormal(StandardNormal):
    """A Gaussian with a learned mean and log-scale per event element.

    Args:
        event_shape: the shape of one latent sample (fixed: one mean and scale per element).
    """

    def __init__(self, event_shape: Sequence[int]):
        super().__init__(event_shape)
        if self.event_shape is None:
            raise ShapeError("DiagNormal learns one mean and scale per element: it needs a fixed event_shape")
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def log_prob(self, z: Tensor) -> Tensor:
        eps = (z - self.loc) * (-self.log_scale).exp()
        return super().log_prob(eps) - self.log_scale.sum()

    def sample(self, n: int, temperature: float = 1.0, event_shape: Sequence[int] | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        eps = super().sample(n, temperature, None, generator)
        return self.loc + eps * self.log_scale.exp()
