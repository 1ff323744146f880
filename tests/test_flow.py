import math

import pytest
import torch

import flowkit as fk
from flowkit.errors import NonFiniteError, ShapeError


class Affine(fk.Bijector):
    """y = (x - mu) / sigma elementwise: the flow's density is N(mu, sigma^2)."""

    def __init__(self, mu, sigma):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.as_tensor(mu, dtype=torch.float32))
        self.log_sigma = torch.nn.Parameter(torch.as_tensor(sigma, dtype=torch.float32).log())

    def forward(self, x, context=None):
        return (x - self.mu) * (-self.log_sigma).exp(), (-self.log_sigma.sum()).expand(x.shape[0])

    def inverse(self, y, context=None):
        return y * self.log_sigma.exp() + self.mu, self.log_sigma.sum().expand(y.shape[0])


def make_flow():
    return fk.Flow(Affine([1.0, -2.0], [0.5, 3.0]), event_shape=(2,))


def test_log_prob_is_the_exact_density():
    x = torch.randn(100, 2)
    expected = torch.distributions.Normal(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])).log_prob(x).sum(1)
    torch.testing.assert_close(make_flow().log_prob(x), expected)
    torch.testing.assert_close(make_flow()(x), expected)


def test_temperature_scales_the_latent_std():
    flow = make_flow()
    g = torch.Generator().manual_seed(0)
    x = flow.sample(20000, temperature=0.5, generator=g)
    torch.testing.assert_close(x.std(0), torch.tensor([0.25, 1.5]), rtol=0.03, atol=0)
    assert torch.equal(flow.sample(3, temperature=0.0), torch.tensor([[1.0, -2.0]] * 3))


def test_sample_and_log_prob_agree_with_log_prob():
    flow = make_flow()
    x, log_p = flow.sample_and_log_prob(50, temperature=0.7)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-5, rtol=1e-5)


def test_rsample_is_differentiable_and_sample_is_not():
    flow = make_flow()
    assert flow.rsample(4).requires_grad and not flow.sample(4).requires_grad


def test_encode_decode_are_exact_inverses():
    flow = make_flow()
    x = torch.randn(10, 2)
    torch.testing.assert_close(flow.decode(flow.encode(x)), x)


def test_bits_per_dim_with_discretisation():
    flow = make_flow()
    x = torch.randn(4, 2)
    expected = (-flow.log_prob(x) + 2 * math.log(256)) / (2 * math.log(2))
    torch.testing.assert_close(flow.bits_per_dim(x, n_bins=256), expected)


def test_bad_inputs_get_clear_errors():
    flow = make_flow()
    with pytest.raises(ShapeError, match=r"should have shape \(batch, 2\); got \(2,\) \(add a batch dim\)"):
        flow.log_prob(torch.randn(2))
    with pytest.raises(ShapeError, match="got \\(3, 5\\)"):
        flow.log_prob(torch.randn(3, 5))
    with pytest.raises(NonFiniteError, match="1 NaN"):
        flow.log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ShapeError, match="context has batch size 2; sampling 3"):
        flow.sample(3, context=torch.zeros(2, 1))


def test_flow_requires_a_bijector_and_a_shape():
    with pytest.raises(TypeError):
        fk.Flow(torch.nn.Linear(2, 2), event_shape=(2,))
    with pytest.raises(ValueError, match="event_shape"):
        fk.Flow(Affine([0.0], [1.0]))


def test_diag_normal_base():
    base = fk.DiagNormal((3,))
    with torch.no_grad():
        base.loc.fill_(2.0)
        base.log_scale.fill_(math.log(0.5))
    z = base.sample(5000)
    torch.testing.assert_close(z.mean(0), torch.full((3,), 2.0), atol=0.05, rtol=0)
    expected = torch.distributions.Normal(2.0, 0.5).log_prob(z).sum(1)
    torch.testing.assert_close(base.log_prob(z), expected)
