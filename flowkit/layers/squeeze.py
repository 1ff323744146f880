r"""Squeeze: fold spatial neighbourhoods into channels (space-to-depth).

On images ``(B, C, H, W) -> (B, C f^2, H/f, W/f)`` with openai's channel order
``c f^2 + dy f + dx``; on sequences ``(B, C, T) -> (B, C f, T/f)`` with order
``c f + dt`` (WaveGlow's ``n_group`` fold of a waveform is ``Squeeze(8)`` on ``(B, 1, T)``).
A permutation of entries, so the log-det is 0. ``Squeeze(f).inv`` unsqueezes.

Example:
    >>> flowkit.Squeeze(2)(torch.randn(1, 3, 32, 32))[0].shape
    torch.Size([1, 12, 16, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from torch import Tensor

from ..bijector import Bijector, Shape
from ..errors import ShapeError

_PATTERNS = {
    1: ("b c (t f) -> b (c f) t", "b (c f) t -> b c (t f)"),
    2: ("b c (h f1) (w f2) -> b (c f1 f2) h w", "b (c f1 f2) h w -> b c (h f1) (w f2)"),
}


class Squeeze(Bijector):
    """Space-to-depth by ``factor`` along every spatial dim (1-D or 2-D).

    Args:
        factor: block size; ``(C, H, W)`` becomes ``(C f^2, H / f, W / f)``, ``(C, T)`` becomes ``(C f, T / f)``.

    References:
        | Density estimation using Real NVP (Dinh et al., 2017)
        | https://arxiv.org/abs/1605.08803"""

    reads_context = False

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"squeeze factor must be positive, got {factor}")
        self.factor = factor

    def _spatial_dims(self, shape: Sequence[int], squeezing: bool) -> int:
        rank = len(shape) - 1
        if rank not in _PATTERNS:
            raise ShapeError(f"Squeeze needs 1 or 2 spatial dims after the channels; got event shape {tuple(shape)}")
        if squeezing and any(n % self.factor for n in shape[1:]):
            raise ShapeError(f"Squeeze({self.factor}) needs spatial sizes divisible by {self.factor}; "
                             f"got event shape {tuple(shape)}")
        if not squeezing and shape[0] % self.factor**rank:
            raise ShapeError(f"unsqueezing by {self.factor} needs channels divisible by {self.factor ** rank}; "
                             f"got event shape {tuple(shape)}")
        return rank

    def _axes(self, rank: int) -> dict[str, int]:
        return {"f": self.factor} if rank == 1 else {"f1": self.factor, "f2": self.factor}

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        rank = self._spatial_dims(x.shape[1:], squeezing=True)
        return rearrange(x, _PATTERNS[rank][0], **self._axes(rank)), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        rank = self._spatial_dims(y.shape[1:], squeezing=False)
        return rearrange(y, _PATTERNS[rank][1], **self._axes(rank)), y.new_zeros(y.shape[0])

    def forward_shape(self, shape: Sequence[int]) -> Shape:
        rank = self._spatial_dims(shape, squeezing=True)
        return (shape[0] * self.factor**rank, *(n // self.factor for n in shape[1:]))

    def inverse_shape(self, shape: Sequence[int]) -> Shape:
        rank = self._spatial_dims(shape, squeezing=False)
        return (shape[0] // self.factor**rank, *(n * self.factor for n in shape[1:]))

    def extra_repr(self) -> str:
        return f"{self.factor}"
