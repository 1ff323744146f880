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

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ShapeError, check_finite

__all__ = ["ChannelAffine", "Conv", "GlowConditioner", "NormedConv", "ZeroConv", "join_context", "keep_border_patches"]

CONSTANT_STD = 1e-5  # below this a channel counts as constant in the init batch


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


class Conv(nn.Module):
    """A size-preserving convolution for 0, 1 or 2 spatial dims (a dense layer for 0).

    With ``edge_bias`` (openai) the convolution also sees a channel that is 1 on the
    zero-padded border, so it can tell padding from dark pixels; it is computed as the
    padded convolution of ``x`` plus the batch-independent response to that channel
    (a small matrix product with the border's cached patches), which equals convolving
    the concatenation without copying ``x``. ``forward`` takes
    optional replacement ``weight`` and ``bias`` so callers can fold a scale into them.
    Images are convolved channels-last (oneDNN's native CPU layout, in which Glow
    evaluates and samples faster than with NCHW tensors); outputs are ordinary ``(B, C, H, W)``
    tensors in that memory format.

    Args:
        in_channels, out_channels: channels in and out.
        spatial_dims: 0 (a dense layer), 1 or 2.
        kernel_size: odd; padded to keep the spatial size.
        bias: learn a bias.
        edge_bias: openai's border channel (see above).
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, kernel_size: int = 3,
                 bias: bool = True, edge_bias: bool = False):
        super().__init__()
        if spatial_dims not in (0, 1, 2):
            raise ValueError(f"spatial_dims must be 0, 1 or 2, not {spatial_dims}")
        kernel_size = 1 if spatial_dims == 0 else kernel_size
        self.spatial_dims = spatial_dims
        self.padding = kernel_size // 2
        self.edge_bias = edge_bias and kernel_size > 1
        shape = (out_channels, in_channels + self.edge_bias, *([kernel_size] * spatial_dims))
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self._patch_cache: dict = {}
        self.register_buffer("_kept_patches", None, persistent=False)  # a cache: "_" tells the kit
        self.border_shape: tuple[int, ...] | None = None

    def keep_border_patches(self, spatial_shape: Sequence[int]) -> None:
        """Keep the border channel's patches for inputs of ``spatial_shape`` in a buffer
        (:attr:`border_patches`, not part of the state dict), built once here rather than on the
        first call. Under :func:`flowkit.compile_frozen` the border's response is then a
        function of the weights alone and is folded into a constant. Inputs of other spatial
        shapes still work; nothing changes without ``edge_bias``."""
        if not self.edge_bias:
            return
        if len(spatial_shape) != self.spatial_dims:
            raise ShapeError(f"this convolution has {self.spatial_dims} spatial dims; "
                             f"got the spatial shape {tuple(spatial_shape)}")
        probe = self.weight.new_zeros(1, 1, *spatial_shape)
        self._kept_patches = self._make_border_patches(probe)
        self.border_shape = tuple(spatial_shape)

    @property
    def border_patches(self) -> Tensor | None:
        """The kept ``(positions, taps)`` patches of the border channel, or ``None``."""
        return self._kept_patches

    def forward(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        if self.spatial_dims == 0:
            return F.linear(x, weight, bias)
        conv = F.conv1d if self.spatial_dims == 1 else F.conv2d
        if self.edge_bias:
            weight, edge_weight = weight.split([weight.shape[1] - 1, 1], dim=1)  # one split: its backward is one cat
            edge_weight = edge_weight.flatten(1)
        if self.spatial_dims == 2:  # oneDNN's native layout: no reorders around each convolution
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
        out = conv(x, weight, bias, padding=self.padding)
        if not self.edge_bias:
            return out
        patches = self._border_patches(x)  # (positions, k^d): the border channel under each kernel tap
        if self.spatial_dims == 1:
            return out + F.linear(edge_weight, patches)
        # Added in the channels-last view (B, H, W, C): broadcasting a (1, C, H, W) map over a
        # channels-last batch, and its backward's sum over the batch, take TensorIterator's
        # strided path, about 8x slower than this contiguous one.
        response = F.linear(patches, edge_weight).view(*x.shape[2:], -1)
        return (out.permute(0, 2, 3, 1) + response).permute(0, 3, 1, 2)

    def _border_patches(self, x: Tensor) -> Tensor:
        kept = self._kept_patches
        if kept is not None and tuple(x.shape[2:]) == self.border_shape and kept.dtype == x.dtype:
            return kept
        if torch.compiler.is_compiling():
            # no Python-side cache in a graph: a new key (bfloat16 inputs under autocast) would
            # fail a guard on the next call and recompile the whole model; inductor folds it anyway
            return self._make_border_patches(x)
        key = (tuple(x.shape[2:]), x.dtype, x.device)
        if key not in self._patch_cache:
            self._patch_cache[key] = self._make_border_patches(x)
        return self._patch_cache[key]

    def _make_border_patches(self, x: Tensor) -> Tensor:
        border = F.pad(x.new_zeros(1, 1, *x.shape[2:]), [self.padding] * (2 * self.spatial_dims), value=1.0)
        if self.spatial_dims == 1:
            border = border[..., None]
        kernel = (self.weight.shape[-1],) * 2 if self.spatial_dims == 2 else (self.weight.shape[-1], 1)
        return F.unfold(border, kernel)[0].t().contiguous()


def keep_border_patches(module: nn.Module, spatial_shape: Sequence[int]) -> None:
    """:meth:`Conv.keep_border_patches` for every bordered convolution of that spatial rank
    in ``module``: call it where a model knows its inputs' spatial shape (Glow, per level).

    Example:
        >>> net = GlowConditioner(6, 12, hidden=16, edge_bias=True)
        >>> keep_border_patches(net, (8, 8))
        >>> net.conv_in.conv.border_patches.shape        # 64 positions x 9 kernel taps
        torch.Size([64, 9])
    """
    for layer in module.modules():
        if isinstance(layer, Conv) and layer.spatial_dims == len(spatial_shape):
            layer.keep_border_patches(spatial_shape)


def _per_channel(v: Tensor, weight: Tensor) -> Tensor:
    return v.view(-1, *([1] * (weight.dim() - 1)))


class ZeroConv(nn.Module):
    r"""openai's ``conv2d_zeros`` for any spatial rank: a zero-initialised convolution
    (or dense layer) whose output is scaled per channel by :math:`e^{3 \cdot logs}`
    (folded into the weights, so it costs no extra pass over the output).

    It makes couplings start as the identity and learned priors start as N(0, I).

    Args:
        in_channels, out_channels, spatial_dims, kernel_size, edge_bias: as in :class:`Conv`.
        logscale_factor: openai's factor on the learned log-scale (3).

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, kernel_size: int = 3,
                 logscale_factor: float = 3.0, edge_bias: bool = False):
        super().__init__()
        self.layer = Conv(in_channels, out_channels, spatial_dims, kernel_size, True, edge_bias)
        nn.init.zeros_(self.layer.weight)
        self.logs = nn.Parameter(torch.zeros(out_channels))
        self.logscale_factor = logscale_factor

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        scale = (self.logs * self.logscale_factor).exp()
        weight = self.layer.weight * _per_channel(scale, self.layer.weight)
        return self.layer(join_context(x, context), weight, self.layer.bias * scale)


class ChannelAffine(nn.Module):
    r"""Per-channel shift and log-scale with openai's data-dependent initialisation: the
    parameters of :class:`flowkit.ActNorm`, also the normalisation inside
    :class:`NormedConv`.

    :meth:`initialize` sets ``b = -mean`` and ``s = -log(std + eps)`` per channel from a
    batch (unit scale for channels that are constant in it); the ``initialized`` buffer
    travels with the weights, so a loaded model is never initialised again.

    Args:
        channels: number of channels (dim 1 of the input).
        logscale_factor: openai's option; the stored parameter is ``s / logscale_factor``.
        eps: added to the standard deviation at initialisation.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039
    """

    def __init__(self, channels: int, logscale_factor: float = 1.0, eps: float = 1e-6):
        super().__init__()
        self.channels = channels
        self.logscale_factor = logscale_factor
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.logs = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False  # mirror of the buffer that needs no device sync

    @property
    def is_initialized(self) -> bool:
        """Whether the parameters are set (from data, a checkpoint or :meth:`mark_initialized`)."""
        return self._initialized

    def log_scale(self) -> Tensor:
        return self.logs if self.logscale_factor == 1.0 else self.logs * self.logscale_factor

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and scale from the batch ``x`` so the output is standardised per channel.

        An empty or non-finite batch is refused before any parameter is touched: it would
        leave the layer initialised with NaN for good."""
        if x.shape[0] == 0 or math.prod(x.shape[2:]) == 0:
            raise ShapeError(f"ActNorm cannot initialise from an empty batch of shape {tuple(x.shape)}")
        check_finite(x, "the batch ActNorm initialises from")
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims)
        std = x.std(dims, unbiased=False)
        logs = torch.where(std < CONSTANT_STD, torch.zeros_like(std), -torch.log(std + self.eps))
        self.bias.copy_(-mean)
        self.logs.copy_(logs / self.logscale_factor)
        self.mark_initialized()

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


class NormedConv(nn.Module):
    """A bias-free convolution followed by ActNorm, run as one convolution whose weight
    and bias carry the ActNorm scale and shift: ``(W * x + b) e^s = (e^s W) * x + b e^s``.
    The ActNorm initialises from the convolution's output on the first training batch.

    Args:
        in_channels, out_channels, spatial_dims, kernel_size, edge_bias: as in :class:`Conv`.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, kernel_size: int,
                 edge_bias: bool = False):
        super().__init__()
        self.conv = Conv(in_channels, out_channels, spatial_dims, kernel_size, bias=False, edge_bias=edge_bias)
        self.norm = ChannelAffine(out_channels)
        nn.init.normal_(self.conv.weight, 0.0, 0.05)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.norm.is_initialized:
            self.norm.initialize(self.conv(x))
        scale = self.norm.log_scale().exp()
        weight = self.conv.weight * _per_channel(scale, self.conv.weight)
        return self.conv(x, weight, self.norm.bias * scale)


class GlowConditioner(nn.Module):
    """openai/glow's coupling network, for any spatial rank.

    ``conv k (no bias) -> ActNorm -> ReLU -> conv 1 (no bias) -> ActNorm -> ReLU ->
    ZeroConv k``, hidden weights drawn from N(0, 0.05). With ``spatial_dims=0`` the
    convolutions become dense layers (an MLP with ActNorm). ``edge_bias`` feeds the
    k-wide convolutions openai's border channel.

    Args:
        in_channels, out_channels: channels of ``x_a`` (without the context) and of the output.
        hidden: width of the two hidden layers (openai: 512).
        spatial_dims: 0 (an MLP), 1 or 2.
        context_channels: channels of a context concatenated to the input (broadcast over positions).
        kernel_size: of the first and last convolutions (the middle one is 1).
        edge_bias: openai's border channel.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 512, spatial_dims: int = 2,
                 context_channels: int = 0, kernel_size: int = 3, edge_bias: bool = False):
        super().__init__()
        self.conv_in = NormedConv(in_channels + context_channels, hidden, spatial_dims, kernel_size, edge_bias)
        self.conv_mid = NormedConv(hidden, hidden, spatial_dims, 1)
        self.conv_out = ZeroConv(hidden, out_channels, spatial_dims, kernel_size, edge_bias=edge_bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = F.relu(self.conv_in(join_context(x, context)))
        return self.conv_out(F.relu(self.conv_mid(h)))
