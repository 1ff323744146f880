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
