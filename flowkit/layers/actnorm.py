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
from torch import Tensor, nn

from ..bijector import Bijector, check_channels, spatial_size
from ..errors import ShapeError, check_finite

CONSTANT_STD = 1e-5  # below this a channel counts as constant in the init batch


class ActNorm(Bijector):
    """Per-channel affine bijector with data-dependent initialisation.

    Args:
        channels: number of channels (dim 1 of the input).
        logscale_factor: openai's option; the stored parameter is ``s / logscale_factor``.
        eps: added to the standard deviation at initialisation.
    """

    reads_context = False

    def __init__(self, channels: int, logscale_factor: float = 1.0, eps: float = 1e-6):
        super().__init__()
        self.channels = channels
        self.logscale_factor = logscale_factor
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.logs = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False  # mirror of the buffer that needs no device sync

    def _broadcast(self, v: Tensor, x: Tensor) -> Tensor:
        return v.view(1, -1, *([1] * (x.dim() - 2)))

    def log_scale(self) -> Tensor:
        return self.logs if self.logscale_factor == 1.0 else self.logs * self.logscale_factor

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and scale from the batch ``x`` so the output is standardised per channel.

        An empty or non-finite batch is refused before any parameter is touched: it would
        leave the layer initialised with NaN for good."""
        if x.shape[0] == 0 or spatial_size(x) == 0:
            raise ShapeError(f"ActNorm cannot initialise from an empty batch of shape {tuple(x.shape)}")
        check_finite(x, "the batch ActNorm initialises from")
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims)
        std = x.std(dims, unbiased=False)
        logs = torch.where(std < CONSTANT_STD, torch.zeros_like(std), -torch.log(std + self.eps))
        self.bias.copy_(-mean)
        self.logs.copy_(logs / self.logscale_factor)
        self.initialized.fill_(True)
        self._initialized = True

    @torch.no_grad()
    def mark_initialized(self) -> None:
        """Keep the current parameters (the identity for a fresh layer) and skip the
        data-dependent initialisation: for inputs that are standardised already, where a
        first batch in which a rare channel happens to be constant would set a huge scale."""
        self.initialized.fill_(True)
        self._initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.channels, "ActNorm")
        if self.training and not self._initialized:
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
