import numpy as np
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
    """Condition number 1e4: the float64 inverse errs about 5e-7, a float32 inverse 5e-6 to 1e-5."""
    mix = Invertible1x1(16)
    with torch.no_grad():
        mix.weight.copy_(torch.diag(torch.logspace(-4, 0, 16)) @ random_rotation(16).float())
    x = torch.randn(8, 16, 4, 4)
    with torch.no_grad():
        x_back = mix.inverse(mix(x)[0])[0]
    assert (x_back - x).abs().max() < 2e-6


def lu_matrix(mix: Invertible1x1LU) -> np.ndarray:
    """W = P L (U + diag(sign e^log_s)) assembled from the free entries, independently of the layer."""
    c = mix.channels
    lower, upper = np.eye(c), np.diag(mix.sign_s.double().numpy() * np.exp(mix.log_s.detach().double().numpy()))
    lower[np.tril_indices(c, -1)] = mix.lower.detach().double().numpy()
    upper[np.triu_indices(c, 1)] = mix.upper.detach().double().numpy()
    return mix.permutation.double().numpy() @ lower @ upper


def perturbed(layer, channels: int = 5):
    """A mixing layer far from a rotation: log|det W| is not zero."""
    mix = layer(channels, generator=torch.Generator().manual_seed(1)).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in mix.parameters():
            p.add_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    weight = mix.weight.detach().numpy() if layer is Invertible1x1 else lu_matrix(mix)
    return mix, weight


@pytest.mark.parametrize("layer", [Invertible1x1, Invertible1x1LU])
@pytest.mark.parametrize("spatial", [(), (7,), (3, 4)])
def test_logdet_and_inverse_match_numpy_on_a_non_orthogonal_matrix(layer, spatial):
    mix, weight = perturbed(layer)
    sign, logdet = np.linalg.slogdet(weight)
    assert abs(logdet) > 0.1  # the test would not see a missing position factor at log|det W| = 0
    x = torch.randn(3, 5, *spatial, dtype=torch.float64)
    y, ladj = mix(x)
    expected_y = np.einsum("ij,bj...->bi...", weight, x.numpy())
    np.testing.assert_allclose(y.detach().numpy(), expected_y, rtol=1e-10, atol=1e-10)
    positions = int(np.prod(spatial))
    np.testing.assert_allclose(ladj.detach().numpy(), np.full(3, positions * logdet), rtol=1e-10, atol=1e-10)
    x_back, ladj_back = mix.inverse(torch.from_numpy(expected_y))
    np.testing.assert_allclose(x_back.detach().numpy(), np.linalg.solve(weight, expected_y.reshape(3, 5, -1)).reshape(
        x.shape), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ladj_back.detach().numpy(), np.full(3, -positions * logdet), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layer", [Invertible1x1, Invertible1x1LU])
def test_set_matrix_installs_the_given_matrix_and_keeps_the_contract(layer):
    from flowkit.testing import check_bijector

    g = torch.Generator().manual_seed(3)
    target = torch.randn(5, 5, generator=g, dtype=torch.float64) + 2 * torch.eye(5, dtype=torch.float64)
    mix = layer(5).double()
    mix.set_matrix(target)
    torch.testing.assert_close(mix.matrix64(), target, atol=1e-10, rtol=0)
    torch.testing.assert_close(mix.log_abs_det().double(), torch.linalg.slogdet(target)[1], atol=1e-10, rtol=0)
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(mix(x)[0], x @ target.T)
    check_bijector(mix, x, perturb=False)


@pytest.mark.parametrize("layer", [Invertible1x1, Invertible1x1LU])
def test_set_matrix_refuses_singular_and_misshapen_matrices(layer):
    from flowkit.errors import FlowkitError, NonFiniteError, ShapeError

    mix = layer(3)
    with pytest.raises(FlowkitError, match="singular"):
        mix.set_matrix(torch.ones(3, 3))
    with pytest.raises(ShapeError, match="3 x 3"):
        mix.set_matrix(torch.eye(4))
    with pytest.raises(NonFiniteError):
        mix.set_matrix(torch.full((3, 3), float("nan")))
