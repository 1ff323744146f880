"""Hypothesis strategies for property tests of bijectors.

Example:
    >>> from hypothesis import given
    >>> from flowkit.testing import strategies as fst
    >>> @given(fst.batches(fst.event_shapes(spatial_dims=2, side_multiple=2)))
    ... def test_mine(x):
    ...     check_bijector(Mine(x.shape[1]), x)
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st


@st.composite
def event_shapes(draw, spatial_dims: int | None = None, min_channels: int = 2, max_channels: int = 6,
                 max_side: int = 6, side_multiple: int = 1, channel_multiple: int = 1) -> tuple[int, ...]:
    """Event shapes ``(C, *spatial)`` with 0, 1 or 2 spatial dims (drawn when ``None``)."""
    rank = draw(st.sampled_from([0, 1, 2])) if spatial_dims is None else spatial_dims
    channels = channel_multiple * draw(st.integers(-(-min_channels // channel_multiple),
                                                   max_channels // channel_multiple))
    side = st.integers(1, max(1, max_side // side_multiple)).map(lambda n: n * side_multiple)
    return (channels, *(draw(side) for _ in range(rank)))


@st.composite
def batches(draw, shapes, min_batch: int = 4, max_batch: int = 8, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A batch of the drawn event shape, with drawn location, scale and seed."""
    shape = draw(shapes)
    batch = draw(st.integers(min_batch, max_batch))
    scale = draw(st.floats(0.1, 3.0))
    shift = draw(st.floats(-2.0, 2.0))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn((batch, *shape), generator=generator, dtype=dtype)
