import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


def small_multiscale_flow() -> fk.Flow:
    """Squeeze -> step -> factor-out(step) -> unsqueeze on (2, 4, 4), parameters moved off their init."""
    def step(c):
        return [fk.ActNorm(c), fk.Invertible1x1LU(c), fk.AffineCoupling(c, hidden=6, spatial_dims=2)]

    inner = fk.Sequential(*step(4))
    body = fk.Sequential(fk.Squeeze(2), *step(8), fk.FactorOut(8, inner, spatial_dims=2), fk.Squeeze(2).inv)
    flow = fk.Flow(body, event_shape=(2, 4, 4)).double()
    g = torch.Generator().manual_seed(0)
    flow(torch.randn(16, 2, 4, 4, dtype=torch.float64, generator=g))  # ActNorm init
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow.eval()


def test_multiscale_log_prob_gradients_match_finite_differences():
    flow = small_multiscale_flow()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(flow.log_prob, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    names, params = zip(*[(n, p.detach().clone().requires_grad_(True)) for n, p in flow.named_parameters()])

    def log_prob_of(*values):
        return torch.func.functional_call(flow, dict(zip(names, values)), (x.detach(),))

    assert torch.autograd.gradcheck(log_prob_of, params, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


class Upsampler(torch.nn.Module):
    """A toy context network: (B, 2, frames) -> (B, 2, T / 4), trimmed to the data length T."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.hop = 8

    def forward(self, context, event_shape):
        self.calls += 1
        return context.repeat_interleave(self.hop // 4, dim=-1)[..., : event_shape[-1] // 4]

    def implied_length(self, context):
        return context.shape[-1] * self.hop


def sequence_flow(context_net=None) -> fk.Flow:
    coupling = fk.AffineCoupling(4, hidden=8, spatial_dims=1, context_channels=2 if context_net else 0)
    with torch.no_grad():
        coupling.net.conv_out.layer.weight.normal_(0, 0.1)
    return fk.Flow(fk.Sequential(fk.Squeeze(4), fk.ActNorm(4), coupling), event_shape=(1, None),
                   context_net=context_net)


def test_a_flow_of_free_length_takes_any_length_the_squeezes_allow():
    flow = sequence_flow().eval()
    for length in (16, 64, 100):
        x = torch.randn(3, 1, length)
        assert flow.log_prob(x).shape == (3,)
        torch.testing.assert_close(flow.decode(flow.encode(x)), x, atol=1e-5, rtol=0)
    assert flow.sample(2, length=40).shape == (2, 1, 40)
    with pytest.raises(ShapeError, match="free size: pass length"):
        flow.sample(2)
    with pytest.raises(ShapeError, match="divisible by 4"):
        flow.log_prob(torch.randn(2, 1, 30))
    with pytest.raises(ShapeError, match=r"\(batch, 1, any\)"):
        flow.log_prob(torch.randn(2, 2, 16))
    for call in (flow.log_prob, flow.encode):
        with pytest.raises(ShapeError, match="empty free dimension"):
            call(torch.randn(2, 1, 0))
    with pytest.raises(ShapeError):
        flow.decode(torch.randn(2, 1, 0))


def test_the_context_network_runs_once_in_every_method_and_implies_the_length():
    net = Upsampler()
    flow = sequence_flow(net).eval()
    mel = torch.randn(2, 2, 6)
    x = torch.randn(2, 1, 48)
    for call in (lambda: flow.log_prob(x, mel), lambda: flow.encode(x, mel), lambda: flow.decode(x.view(2, 4, 12), mel),
                 lambda: flow.sample(2, context=mel)):
        before = net.calls
        call()
        assert net.calls == before + 1
    torch.testing.assert_close(flow.decode(flow.encode(x, mel), mel), x, atol=1e-5, rtol=0)
    assert flow.sample(2, context=mel).shape == (2, 1, 48)  # 6 frames x hop 8
    assert not torch.allclose(flow.log_prob(x, mel), flow.log_prob(x, mel + 1))
    edited = fk.apply_direction(flow, x, torch.zeros(4, 1), [0.0, 1.0], context=mel)
    torch.testing.assert_close(edited[0], x, atol=1e-5, rtol=0)


def test_temperature_must_be_a_finite_non_negative_number():
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(fk.FlowkitError, match="temperature must be a finite number"):
            make_flow().sample(2, temperature=bad)


def test_integer_input_is_refused_with_a_pointer_to_dequantisation():
    with pytest.raises(fk.DataError, match="floating point.*dequantise"):
        make_flow().log_prob(torch.zeros(3, 2, dtype=torch.uint8))


def test_decoding_that_overflows_names_the_first_layer_instead_of_returning_inf():
    flow = fk.Flow(fk.Sequential(Affine([0.0, 0.0], [1e30, 1e30]), fk.ActNorm(2)), event_shape=(2,)).eval()
    with pytest.raises(NonFiniteError, match=r"first in bijector.layers.0 \(Affine\).*lower the temperature"):
        flow.sample(4, temperature=1e9)
    with pytest.raises(NonFiniteError, match="bijector.layers.0"):
        flow.decode(torch.full((2, 2), 1e9))
    assert torch.isfinite(flow.sample(4, temperature=1.0)).all()  # a sane temperature still samples


def test_a_context_that_no_layer_reads_is_refused_not_ignored():
    unconditional = fk.Flow(fk.Sequential(fk.ActNorm(4), fk.Invertible1x1(4),
                                          fk.AffineCoupling(4, hidden=8, spatial_dims=0)),
                            event_shape=(4,)).eval()
    x, context = torch.randn(3, 4), torch.randn(3, 2)
    for call in (lambda: unconditional.log_prob(x, context), lambda: unconditional.encode(x, context),
                 lambda: unconditional.decode(x, context), lambda: unconditional.sample(3, context=context)):
        with pytest.raises(ShapeError, match="no layer of this flow reads one.*context_channels"):
            call()
    conditional = fk.Flow(fk.Sequential(fk.ActNorm(4),
                                        fk.AffineCoupling(4, hidden=8, spatial_dims=0, context_channels=2)),
                          event_shape=(4,)).eval()
    with torch.no_grad():
        for p in conditional.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert not torch.allclose(conditional.log_prob(x, context), conditional.log_prob(x, context + 1))
    with pytest.raises(ShapeError, match="AffineCoupling was built with context channels: pass a context"):
        conditional.log_prob(x)
    assert make_flow().bijector.reads_context is None  # a bijector that does not say: its context is passed on
    make_flow().log_prob(torch.randn(3, 2), torch.randn(3, 5))


def test_reads_context_of_containers():
    plain, reads = fk.ActNorm(4), fk.AffineCoupling(4, hidden=8, spatial_dims=0, context_channels=1)
    unknown = Affine([0.0] * 4, [1.0] * 4)
    assert fk.Sequential(plain, plain.inv).reads_context is False
    assert fk.Sequential(plain, reads).reads_context is True
    assert fk.Sequential(plain, unknown).reads_context is None
    assert fk.Sequential(unknown, reads).inv.reads_context is True
    assert fk.Sequential().reads_context is False
    inner_reads = fk.Sequential(fk.AffineCoupling(2, hidden=8, spatial_dims=0, context_channels=1))
    assert fk.FactorOut(4, inner_reads, spatial_dims=0).reads_context is True
    assert fk.FactorOut(4, fk.Sequential(fk.ActNorm(2)), spatial_dims=0).reads_context is False
    assert fk.FactorOut(4, fk.Sequential(fk.ActNorm(2)), spatial_dims=0, context_channels=1).reads_context is True
    assert fk.LearnedPrior(4, context_channels=3).reads_context is True
    assert fk.LearnedPrior(4).reads_context is False


def test_a_dtype_mismatch_and_a_bad_sample_count_are_named():
    flow = make_flow()
    with pytest.raises(fk.DataError, match="input is torch.float64 but the flow's parameters are torch.float32"):
        flow.log_prob(torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(fk.DataError, match="latent is torch.float64"):
        flow.decode(torch.zeros(2, 2, dtype=torch.float64))
    assert flow.double().log_prob(torch.zeros(2, 2, dtype=torch.float64)).dtype == torch.float64
    mixed = fk.Flow(fk.Sequential(Affine([0.0, 0.0], [1.0, 1.0]).double(), Affine([0.0, 0.0], [2.0, 2.0])),
                    event_shape=(2,))
    assert torch.isfinite(mixed.log_prob(torch.zeros(2, 2))).all()  # some parameters are float32: accepted
    with pytest.raises(fk.DataError, match="input is torch.float16"):
        mixed.log_prob(torch.zeros(2, 2, dtype=torch.float16))
    for bad in (-1, 2.0, True, "2"):
        with pytest.raises(fk.FlowkitError, match="number of samples must be an integer >= 0"):
            flow.sample(bad)
    assert flow.sample(0).shape == (0, 2)


_KINDS = ("plain", "mixing", "conditioned", "undeclared")


def _layer(kind: str) -> fk.Bijector:
    if kind == "plain":
        return fk.ActNorm(4)
    if kind == "mixing":
        return fk.Invertible1x1(4)
    if kind == "conditioned":
        return fk.AffineCoupling(4, hidden=4, spatial_dims=0, context_channels=2)
    return Affine([0.0] * 4, [1.0] * 4)


_trees = st.recursive(st.sampled_from(_KINDS), lambda inner: st.lists(inner, min_size=0, max_size=3), max_leaves=6)


def _build(tree, invert: bool) -> fk.Bijector:
    b = _layer(tree) if isinstance(tree, str) else fk.Sequential(*(_build(t, False) for t in tree))
    return b.inv if invert else b


def _kinds(tree) -> set[str]:
    return {tree} if isinstance(tree, str) else set().union(*map(_kinds, tree)) if tree else set()


@settings(max_examples=40, deadline=None)
@given(tree=_trees, invert=st.booleans())
def test_a_flow_refuses_a_context_exactly_when_no_layer_reads_one(tree, invert):
    flow = fk.Flow(_build(tree, invert), event_shape=(4,)).eval()
    kinds = _kinds(tree)
    expected = True if "conditioned" in kinds else None if "undeclared" in kinds else False
    assert flow.bijector.reads_context is expected
    x, context = torch.randn(3, 4), torch.randn(3, 2)
    if expected is False:
        with pytest.raises(ShapeError, match="no layer of this flow reads one"):
            flow.log_prob(x, context)
        assert flow.log_prob(x).shape == (3,)
    else:
        assert flow.log_prob(x, context).shape == (3,)
