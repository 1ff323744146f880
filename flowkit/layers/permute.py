r"""Fixed channel permutations: the reverse and shuffle options of Glow's ablation.

.. math:: y = x_{:, \pi}, \qquad \log|\det J| = 0

The permutation and its inverse are buffers, so they travel with the state_dict.

Example:
    >>> perm = flowkit.Permute(6, kind="shuffle", seed=0)
    >>> x = torch.randn(2, 6, 5)
    >>> torch.equal(perm.inverse(perm(x)[0])[0], x)
    True
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..bijector import Bijector, check_channels


class Permute(Bijector):
    """Permute the channels (dim 1): ``kind="reverse"`` or a seeded ``"shuffle"``.

    Args:
        channels: number of channels (dim 1 of the input).
        kind: ``"reverse"`` (Real NVP's fixed order) or ``"shuffle"`` (a fixed random permutation).
        seed: the seed of the shuffle.

    References:
        | Density estimation using Real NVP (Dinh et al., 2017)
        | https://arxiv.org/abs/1605.08803"""

    reads_context = False

    def __init__(self, channels: int, kind: Literal["reverse", "shuffle"] = "reverse", seed: int = 0):
        super().__init__()
        if kind == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        elif kind == "shuffle":
            perm = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        else:
            raise ValueError(f"Permute kind must be 'reverse' or 'shuffle', not {kind!r}")
        self.channels = channels
        self.kind = kind
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.channels, "Permute")
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(y, self.channels, "Permute")
        return y.index_select(1, self.inverse_perm), y.new_zeros(y.shape[0])

    def extra_repr(self) -> str:
        return f"{self.channels}, kind={self.kind!r}"
