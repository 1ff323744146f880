import pytest
import torch

from flowkit import Squeeze
from flowkit.errors import ShapeError


def test_2d_channel_order_is_openai_c4_dy2_dx():
    x = torch.randn(2, 3, 4, 6)
    y = Squeeze(2)(x)[0]
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                torch.testing.assert_close(y[:, c * 4 + dy * 2 + dx], x[:, c, dy::2, dx::2])


def test_1d_fold_matches_waveglow_unfold():
    audio = torch.randn(2, 64)
    y = Squeeze(8)(audio[:, None])[0]
    waveglow = audio.unfold(1, 8, 8).permute(0, 2, 1)
    torch.testing.assert_close(y, waveglow)


def test_indivisible_size_names_the_problem():
    with pytest.raises(ShapeError, match="divisible by 2"):
        Squeeze(2)(torch.randn(1, 3, 5, 4))
    with pytest.raises(ShapeError, match="1 or 2 spatial dims"):
        Squeeze(2)(torch.randn(4, 3))
