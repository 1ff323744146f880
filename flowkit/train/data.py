"""Deterministic batch schedules: the items and the random stream of every step are
functions of ``(seed, step)``, so a resumed or distributed run sees the same data."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataError


class IndexSchedule:
    """Which items form the batch of each step: epoch-wise permutations of ``range(n)``.

    Example:
        >>> schedule = IndexSchedule(n_items=10_000, batch_size=64, seed=0)
        >>> schedule.indices(step=3).shape
        torch.Size([64])
    """

    def __init__(self, n_items: int, batch_size: int, seed: int = 0):
        if n_items < batch_size:
            raise DataError(f"batch size {batch_size} is larger than the {n_items} training items")
        self.n_items = n_items
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = n_items // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> Tensor:
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n_items, generator=generator)
        return self._perm[position * self.batch_size:(position + 1) * self.batch_size]

    def generator(self, step: int) -> torch.Generator:
        """A random stream private to ``step`` (dequantisation noise, flips)."""
        return torch.Generator().manual_seed(self.seed * 7_919 + step * 104_729 + 17)
