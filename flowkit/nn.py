r"""Conditioner building blocks: the networks inside couplings and learned priors.

They are ordinary modules (not bijectors) and work on ``(B, C, *spatial)`` with 0, 1
or 2 spatial dims: 3x3 / width-3 convolutions on images and sequences, dense layers
on vectors. A ``context`` tensor, if given, is concatenated to the input channels
(a ``(B, K)`` context is broadcast over the spatial positions).

Example:
    >>> net = GlowConditioner(6, 12, hidden=64, spatial_dims=2)
    >>> net(torch.randn(2, 6, 8, 8)).abs().max()     # zero-initialised output
    tensor(0., grad_fn=<MaxBackward1>)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ShapeError
from .layers.actnorm import ActNorm


def join_context(x: Tensor, context: Tensor | None) -> Tensor:
    """Concatenate ``context`` to the channels of ``x``, broadcasting a vector context."""
    if context is None:
        return x
    if context.shape[0] != x.shape[0]:
        raise ShapeError(f"context has batch size {context.shape[0]}, input has {x.shape[0]}")
    if context.dim() == 2 and x.dim() > 2:
        context = context.view(*context.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    elif context.shape[2:] != x.shape[2:]:
        raise ShapeError(
            f"context of shape {tuple(context.shape)} does not match the spatial shape of {tuple(x.shape)}"
        )
    return torch.cat([x, context.to(x.dtype)], dim=1)


class EdgePaddedConv(nn.Module):
    """openai's ``edge_bias``: the convolution also sees a channel that is 1 on the
    zero-padded border, so it can tell padding from dark pixels.

    Computed as a zero-padded convolution of ``x`` plus the (batch-independent) response
    to the border channel, which equals convolving the concatenation without copying ``x``.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, kernel_size: int, bias: bool):
        super().__init__()
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        self.conv = conv(in_channels + 1, out_channels, kernel_size, bias=bias)
        self.padding = kernel_size // 2
        self._conv = F.conv1d if spatial_dims == 1 else F.conv2d

    @property
    def weight(self) -> Tensor:
        return self.conv.weight

    @property
    def bias(self) -> Tensor | None:
        return self.conv.bias

    def forward(self, x: Tensor) -> Tensor:
        weight = self.conv.weight
        out = self._conv(x, weight[:, :-1], self.conv.bias, padding=self.padding)
        border = F.pad(x.new_zeros(1, 1, *x.shape[2:]), [self.padding] * (2 * (x.dim() - 2)), value=1.0)
        return out + self._conv(border, weight[:, -1:])

def _linear_or_conv(in_ch: int, out_ch: int, spatial_dims: int, kernel_size: int, bias: bool,
                    edge_bias: bool = False) -> nn.Module:
    if spatial_dims == 0:
        return nn.Linear(in_ch, out_ch, bias=bias)
    if spatial_dims not in (1, 2):
        raise ValueError(f"spatial_dims must be 0, 1 or 2, not {spatial_dims}")
    if edge_bias and kernel_size > 1:
        return EdgePaddedConv(in_ch, out_ch, spatial_dims, kernel_size, bias)
    conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
    return conv(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)


class ZeroConv(nn.Module):
    r"""openai's ``conv2d_zeros`` for any spatial rank: a zero-initialised convolution
    (or dense layer) whose output is scaled per channel by :math:`e^{3 \cdot logs}`.

    It makes couplings start as the identity and learned priors start as N(0, I).
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, kernel_size: int = 3,
                 logscale_factor: float = 3.0, edge_bias: bool = False):
        super().__init__()
        self.layer = _linear_or_conv(in_channels, out_channels, spatial_dims, kernel_size, True, edge_bias)
        nn.init.zeros_(self.layer.weight)
        nn.init.zeros_(self.layer.bias)
        self.logs = nn.Parameter(torch.zeros(out_channels))
        self.logscale_factor = logscale_factor
        self.spatial_dims = spatial_dims

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        scale = (self.logs * self.logscale_factor).exp().view(1, -1, *([1] * self.spatial_dims))
        return self.layer(join_context(x, context)) * scale


class GlowConditioner(nn.Module):
    """openai/glow's coupling network, for any spatial rank.

    ``conv k (no bias) -> ActNorm -> ReLU -> conv 1 (no bias) -> ActNorm -> ReLU ->
    ZeroConv k``, hidden weights drawn from N(0, 0.05). With ``spatial_dims=0`` the
    convolutions become dense layers (an MLP with ActNorm). ``edge_bias`` feeds the
    k-wide convolutions openai's border channel (:class:`EdgePaddedConv`).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 512, spatial_dims: int = 2,
                 context_channels: int = 0, kernel_size: int = 3, edge_bias: bool = False):
        super().__init__()
        self.conv_in = _linear_or_conv(in_channels + context_channels, hidden, spatial_dims, kernel_size, False,
                                       edge_bias)
        self.norm_in = ActNorm(hidden)
        self.conv_mid = _linear_or_conv(hidden, hidden, spatial_dims, 1, False)
        self.norm_mid = ActNorm(hidden)
        self.conv_out = ZeroConv(hidden, out_channels, spatial_dims, kernel_size, edge_bias=edge_bias)
        for conv in (self.conv_in, self.conv_mid):
            nn.init.normal_(conv.weight, 0.0, 0.05)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = F.relu(self.norm_in(self.conv_in(join_context(x, context)))[0])
        h = F.relu(self.norm_mid(self.conv_mid(h))[0])
        return self.conv_out(h)
