import math

import pytest
import torch

from flowkit import ActNorm, FactorOut, LearnedPrior, Sequential, Squeeze
from flowkit.errors import ShapeError


def gaussian_log_prob(z, mean, logs):
    return (-0.5 * (((z - mean) / logs.exp()) ** 2 + math.log(2 * math.pi)) - logs).flatten(1).sum(1)


def test_factor_out_equals_the_conditional_gaussian_density():
    """Standardising z2 as a bijection gives log N(eps2) + ladj == log N(z2; mean(z1), exp(logs(z1)))."""
    layer = FactorOut(4, spatial_dims=2)
    with torch.no_grad():
        layer.prior.layer.weight.normal_(0, 0.1)
        layer.prior.layer.bias.normal_(0, 0.1)
    x = torch.randn(3, 4, 5, 5)
    y, ladj = layer(x)
    h = layer.prior(x[:, :2])
    expected = gaussian_log_prob(x[:, 2:], h[:, 0::2], h[:, 1::2])
    standard = (-0.5 * (y[:, 2:] ** 2 + math.log(2 * math.pi))).flatten(1).sum(1)
    torch.testing.assert_close(standard + ladj, expected, atol=1e-4, rtol=1e-5)


def test_decode_keeps_the_factored_latents():
    layer = FactorOut(4, Sequential(ActNorm(2)), spatial_dims=1)
    x = torch.randn(6, 4, 8)
    y = layer(x)[0]
    torch.testing.assert_close(layer.inverse(y)[0], x, atol=1e-5, rtol=0)


def test_inner_must_preserve_shape():
    layer = FactorOut(4, Squeeze(2), spatial_dims=2)
    with pytest.raises(ShapeError, match="preserve shape"):
        layer(torch.randn(2, 4, 4, 4))


def test_class_conditional_prior_needs_context_and_uses_it():
    prior = LearnedPrior(3, context_channels=2)
    with torch.no_grad():
        prior.context_net.layer.weight.normal_()
    z = torch.randn(2, 3, 4, 4)
    with pytest.raises(ShapeError, match="pass a context"):
        prior(z)
    a = prior(z, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))[0]
    b = prior(z, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))[0]
    assert not torch.allclose(a, b)


def test_factor_out_gradients_through_the_prior_match_finite_differences():
    """A prior that sees z1.detach() gives the right density but wrong gradients of it."""
    layer = FactorOut(4, Sequential(ActNorm(2)), spatial_dims=1).double()
    g = torch.Generator().manual_seed(0)
    layer(torch.randn(8, 4, 6, dtype=torch.float64, generator=g))
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    layer.eval()
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_standard_prior_with_a_chosen_split_and_scale():
    """WaveGlow's early output: keep 6 of 8 channels, eps_2 = z_2 / sigma, log-det -D_2 log sigma."""
    layer = FactorOut(8, Sequential(ActNorm(6)), spatial_dims=1, prior="standard", keep=6, sigma=0.5).double()
    x = torch.randn(3, 8, 10, dtype=torch.float64)
    y, ladj = layer.eval()(x)
    torch.testing.assert_close(y[:, 6:], x[:, 6:] / 0.5, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[:, :6], x[:, :6], rtol=1e-12, atol=1e-12)  # fresh ActNorm in eval: identity
    torch.testing.assert_close(ladj, torch.full((3,), -2 * 10 * math.log(0.5), dtype=torch.float64))
    x_back, ladj_back = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_back, -ladj)
    assert layer.forward_shape((8, 10)) == (8, 10)


def test_a_chosen_split_must_leave_channels_on_both_sides():
    for keep in (0, 8):
        with pytest.raises(ValueError, match="keeps between 1 and 7"):
            FactorOut(8, keep=keep, spatial_dims=1)
    with pytest.raises(ValueError, match="'standard' prior"):
        FactorOut(8, spatial_dims=1, sigma=0.5)


def test_a_tensor_of_another_rank_is_a_shape_error():
    layer = FactorOut(4, spatial_dims=1)
    with pytest.raises(ShapeError, match="built for 1 spatial dims"):
        layer(torch.randn(2, 4, 6, 6))
    with pytest.raises(ShapeError, match="built for 1 spatial dims"):
        layer.inverse(torch.randn(2, 4))


def small_step(spatial_dims, context_channels=0, edge_bias=False):
    from flowkit import AffineCoupling, Invertible1x1
    from flowkit.nn import GlowConditioner

    def step(c, level, index):
        def net(i, o):
            return GlowConditioner(i, o, 8, spatial_dims, edge_bias=edge_bias)
        coupling = (AffineCoupling(c, net=net) if edge_bias else
                    AffineCoupling(c, hidden=8, spatial_dims=spatial_dims, context_channels=context_channels))
        return [ActNorm(c), Invertible1x1(c), coupling]
    return step


@pytest.mark.parametrize("event, spatial_dims", [((8,), 0), ((2, 8), 1), ((3, 8, 8), 2)])
def test_build_multiscale_keeps_the_shape_and_passes_the_kit(event, spatial_dims):
    from flowkit import build_multiscale
    from flowkit.testing import check_bijector

    def make():
        return build_multiscale(event[0], levels=2, depth=2, step=small_step(spatial_dims), spatial_dims=spatial_dims)

    chain = make()
    factor_outs = [m for m in chain.modules() if isinstance(m, FactorOut)]
    assert len(factor_outs) == 1 and chain.forward_shape(event) == event
    squeezes = [m for m in chain.layers if isinstance(m, Squeeze)]
    assert len(squeezes) == (1 if spatial_dims else 0)  # the inverse squeeze is an Inverse(Squeeze)
    check_bijector(chain, torch.randn(3, *event), factory=make)


def test_build_multiscale_levels_priors_and_contexts():
    from flowkit import build_multiscale

    chain = build_multiscale(8, levels=3, depth=1, step=small_step(0, 2), spatial_dims=0, context_channels=2,
                             top_prior=True)
    factor_outs = [m for m in chain.modules() if isinstance(m, FactorOut)]
    assert [f.channels for f in factor_outs] == [8, 4] and all(f.uses_context for f in factor_outs)
    (top,) = [m for m in chain.modules() if isinstance(m, LearnedPrior)]
    assert top.channels == 2 and top.reads_context
    no_context_top = build_multiscale(8, levels=2, depth=1, step=small_step(0), spatial_dims=0, top_prior=True,
                                      top_context_channels=3)
    assert not any(f.uses_context for f in no_context_top.modules() if isinstance(f, FactorOut))
    assert next(m for m in no_context_top.modules() if isinstance(m, LearnedPrior)).reads_context


def test_build_multiscale_keeps_border_patches_per_level():
    from flowkit import build_multiscale
    from flowkit.nn import Conv

    chain = build_multiscale(3, levels=2, depth=1, step=small_step(2, edge_bias=True), spatial_dims=2,
                             edge_bias=True, spatial_shape=(8, 8))
    shapes = {m.border_shape for m in chain.modules() if isinstance(m, Conv) and m.edge_bias}
    assert shapes == {(4, 4), (2, 2)}  # level 0 runs at 4x4 after its squeeze, level 1 at 2x2


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_divide_by_sigma_standardises_a_fixed_scale_gaussian(sigma):
    from flowkit.layers.multiscale import divide_by_sigma

    z = torch.randn(5, 3, 4, dtype=torch.float64) * sigma
    eps, ladj = divide_by_sigma(z, math.log(sigma))
    expected = torch.distributions.Normal(0.0, sigma).log_prob(z).flatten(1).sum(1)
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(eps).flatten(1).sum(1)
    torch.testing.assert_close(standard + ladj, expected)
    back, ladj_inverse = divide_by_sigma(eps, math.log(sigma), inverse=True)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(ladj_inverse, -ladj)
