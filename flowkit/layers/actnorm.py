r"""Activation normalisation (Kingma and Dhariwal 2018).

.. math:: y = (x + b) \odot e^{s}, \qquad \log|\det J| = |S| \sum_c s_c

with one ``b`` and ``s`` per channel and :math:`|S|` the number of spatial positions.
On the first forward pass in training mode the layer initialises itself from the
batch so that its output has zero mean and unit variance per channel
(``b = -mean``, ``s = -log(std + eps)``). The ``initialized`` flag is a buffer, so a
loaded checkpoint is never initialised again. Channels that are constant in the
initial batch get unit scale instead of a huge one.

Example:
    >>> norm = flowkit.ActNorm(3)
    >>> y, ladj = norm(torch.randn(16, 3, 8, 8) * 5 + 2)   # initialises
    >>> round(float(y.std()), 2)
    1.0
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..bijector import Bijector, check_channels, spatial_size
from ..nn import ChannelAffine

__all__ = ["ActNorm"]


class ActNorm(ChannelAffine, Bijector):
    """Per-channel affine bijector with data-dependent initialisation; its parameters and
    their initialisation are :class:`flowkit.nn.ChannelAffine`'s.

    Args:
        channels, logscale_factor, eps: as in :class:`flowkit.nn.ChannelAffine`.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039
    """

    reads_context = False

    def _broadcast(self, v: Tensor, x: Tensor) -> Tensor:
        return v.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.channels, "ActNorm")
        if self.training and not self.is_initialized:
            self.initialize(x)
        logs = self.log_scale()
        scale = logs.exp()
        y = torch.addcmul(self._broadcast(self.bias * scale, x), x, self._broadcast(scale, x))  # one pass
        return y, (logs.sum() * spatial_size(x)).expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(y, self.channels, "ActNorm")
        logs = self.log_scale()
        x = torch.addcmul(self._broadcast(-self.bias, y), y, self._broadcast((-logs).exp(), y))
        return x, (-logs.sum() * spatial_size(y)).expand(y.shape[0])

    def extra_repr(self) -> str:
        return f"{self.channels}"
