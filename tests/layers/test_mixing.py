import pytest
import torch

from flowkit import Invertible1x1, Invertible1x1LU
from flowkit.layers.mixing import random_rotation


def test_random_rotation_is_orthogonal():
    q = random_rotation(12)
    torch.testing.assert_close(q @ q.T, torch.eye(12, dtype=torch.float64))


@pytest.mark.parametrize("layer", [Invertible1x1, Invertible1x1LU])
def test_starts_as_a_rotation_with_zero_logdet(layer):
    mix = layer(6)
    _, ladj = mix(torch.randn(2, 6, 3, 3))
    torch.testing.assert_close(ladj, torch.zeros(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [Invertible1x1, Invertible1x1LU])
def test_same_matrix_on_vectors_sequences_and_images(layer):
    mix = layer(4)
    w = mix.matrix()
    v = torch.randn(3, 4)
    torch.testing.assert_close(mix(v)[0], v @ w.T)
    seq = torch.randn(3, 4, 7)
    torch.testing.assert_close(mix(seq)[0], torch.einsum("ij,bjt->bit", w, seq), atol=1e-6, rtol=1e-5)
    img = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(mix(img)[0], torch.einsum("ij,bjhw->bihw", w, img), atol=1e-6, rtol=1e-5)
    assert torch.allclose(mix(img)[1], 25 * torch.linalg.slogdet(w.double())[1].float().expand(3), atol=1e-4)


def test_lu_logdet_is_sum_of_log_s():
    mix = Invertible1x1LU(5)
    with torch.no_grad():
        mix.log_s.add_(torch.randn(5) * 0.3)
        mix.lower.add_(torch.randn_like(mix.lower))
    slogdet = torch.linalg.slogdet(mix.matrix64())[1]
    torch.testing.assert_close(mix.log_abs_det().double(), slogdet, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layer", [Invertible1x1, Invertible1x1LU])
def test_inverse_cache_follows_optimizer_steps(layer):
    mix = layer(4).eval()
    y = torch.randn(2, 4, 3)
    with torch.no_grad():
        first = mix.inverse(y)[0]
        assert mix.inverse(y)[0] is not first and torch.equal(mix.inverse(y)[0], first)
    opt = torch.optim.SGD(mix.parameters(), lr=0.1)
    mix(torch.randn(2, 4, 3))[0].square().sum().backward()
    opt.step()
    with torch.no_grad():
        x = mix.inverse(y)[0]
        torch.testing.assert_close(mix(x)[0], y, atol=1e-4, rtol=0)
    assert not torch.allclose(x, first)


def test_inverse_is_float64_accurate_for_ill_conditioned_weight():
    mix = Invertible1x1(16)
    with torch.no_grad():
        mix.weight.copy_(torch.diag(torch.logspace(-3, 0, 16)) @ random_rotation(16).float())
    x = torch.randn(8, 16, 4, 4)
    x_back = mix.inverse(mix(x)[0])[0]
    assert (x_back - x).abs().max() < 1e-3
