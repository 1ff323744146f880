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


def openai_squeeze2d(x: torch.Tensor, f: int) -> torch.Tensor:
    """openai/glow's squeeze2d, written with reshapes: channel index c f^2 + dy f + dx."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * f * f, h // f, w // f)


@pytest.mark.parametrize("factor", [2, 3])
def test_2d_squeeze_follows_openai_and_inverts_exactly(factor):
    x = torch.randn(2, 3, 6, 12)
    y, ladj = Squeeze(factor)(x)
    assert torch.equal(y, openai_squeeze2d(x, factor)) and torch.equal(ladj, torch.zeros(2))
    x_back, ladj_back = Squeeze(factor).inverse(y)
    assert torch.equal(x_back, x) and torch.equal(ladj_back, torch.zeros(2))
    assert torch.equal(Squeeze(factor).inv(y)[0], x)


def test_1d_unfold_inverts_the_fold_exactly():
    audio = torch.randn(2, 3, 24)
    assert torch.equal(Squeeze(8).inverse(Squeeze(8)(audio)[0])[0], audio)
