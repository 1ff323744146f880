"""flowkit.transfer: encode under one context, decode under another. Properties on flows
whose context-reading weights are perturbed (fresh ones ignore the context entirely)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit as fk
from flowkit.errors import FlowkitError
from flowkit.transfer import batched_context


def _perturb(flow: fk.Flow, seed: int = 0, scale: float = 0.05) -> fk.Flow:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow.eval()


def conditional_vector_flow(channels: int = 6, k: int = 3, seed: int = 0) -> fk.Flow:
    """Couplings, a factor-out prior and a top prior that all read a (B, k) context; the same
    flow for the same seed (hypothesis replays examples)."""
    torch.manual_seed(seed)
    inner = fk.Sequential(fk.AffineCoupling(channels // 2, hidden=16, spatial_dims=0, context_channels=k),
                          fk.LearnedPrior(channels // 2, context_channels=k))
    layers = fk.Sequential(fk.ActNorm(channels), fk.Invertible1x1(channels),
                           fk.AffineCoupling(channels, hidden=16, spatial_dims=0, context_channels=k),
                           fk.FactorOut(channels, inner, spatial_dims=0, context_channels=k))
    flow = fk.Flow(layers, event_shape=(channels,))
    flow.log_prob(torch.randn(64, channels), torch.randn(64, k))  # ActNorm's data-dependent init
    return _perturb(flow, seed)


def one_hot(index, k: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(index), k).float()


def test_a_prior_only_flow_transfers_in_closed_form():
    """With only a class-conditional prior, x' = mean_t + exp(logs_t - logs_s) (x - mean_s)."""
    prior = fk.LearnedPrior(4, context_channels=2)
    flow = _perturb(fk.Flow(fk.Sequential(prior), event_shape=(4,)))
    x, cat, dog = torch.randn(5, 4), one_hot([0], 2), one_hot([1], 2)
    mean_s, logs_s = prior._params(x, cat.expand(5, -1))
    mean_t, logs_t = prior._params(x, dog.expand(5, -1))
    expected = mean_t + (logs_t - logs_s).exp() * (x - mean_s)
    assert torch.allclose(fk.transfer(flow, x, cat, dog), expected, atol=1e-5)
    halfway = prior._params(x, (cat + 0.5 * (dog - cat)).expand(5, -1))
    assert torch.allclose(fk.transfer(flow, x, cat, dog, strength=0.5),
                          halfway[0] + (halfway[1] - logs_s).exp() * (x - mean_s), atol=1e-5)


def test_the_same_context_is_an_exact_round_trip_and_another_one_changes_the_sample():
    flow = conditional_vector_flow()
    x = torch.randn(8, 6)
    assert torch.allclose(fk.transfer(flow, x, one_hot([1]), one_hot([1])), x, atol=1e-5)
    assert torch.allclose(fk.transfer(flow, x, one_hot([0]), one_hot([2]), strength=0.0), x, atol=1e-5)
    moved = fk.transfer(flow, x, one_hot([0]), one_hot([2]))
    assert (moved - x).abs().amax(1).min() > 1e-2  # every sample moved


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), source=st.integers(0, 2), target=st.integers(0, 2),
       strength=st.floats(-0.5, 1.5, allow_nan=False), seed=st.integers(0, 3))
def test_swapping_the_contexts_undoes_a_transfer(batch, source, target, strength, seed):
    """Within and a little beyond the trained contexts (far extrapolation of a one-hot
    context can overflow an affine coupling: decoding then names the layer)."""
    flow = conditional_vector_flow(seed=seed).double()
    x = torch.randn(batch, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    s, t = one_hot([source]).double(), one_hot([target]).double()
    moved = fk.transfer(flow, x, s, t, strength)
    goal = s + strength * (t - s)
    assert torch.allclose(fk.transfer(flow, moved, goal, s), x, atol=1e-8)


def test_per_sample_contexts_act_sample_by_sample():
    flow = conditional_vector_flow()
    x = torch.randn(6, 6)
    source, target = one_hot([0, 1, 2, 0, 1, 2]), one_hot([1, 2, 0, 2, 0, 1])
    together = fk.transfer(flow, x, source, target, batch_size=4)  # two chunks
    alone = torch.cat([fk.transfer(flow, x[i:i + 1], source[i:i + 1], target[i:i + 1]) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_a_scalar_attribute_broadcasts_as_a_column():
    coupling = fk.AffineCoupling(4, hidden=8, spatial_dims=0, context_channels=1)
    flow = _perturb(fk.Flow(fk.Sequential(coupling, fk.LearnedPrior(4, context_channels=1)), event_shape=(4,)))
    x = torch.randn(3, 4)
    assert torch.equal(batched_context(60, 3), torch.full((3, 1), 60.0))
    assert torch.allclose(fk.transfer(flow, x, 60, 62.5), fk.transfer(flow, x, torch.full((3, 1), 60.0),
                                                                     torch.full((3, 1), 62.5)))


def test_clips_of_different_lengths_keep_their_lengths():
    layers = fk.Sequential(fk.ActNorm(2), fk.AffineCoupling(2, hidden=8, spatial_dims=1, context_channels=1),
                           fk.LearnedPrior(2, context_channels=1))
    flow = fk.Flow(layers, event_shape=(2, None))
    flow.log_prob(torch.randn(4, 2, 10), torch.randn(4, 1))
    _perturb(flow)
    clips = [torch.randn(2, 7), torch.randn(2, 12)]
    moved = fk.transfer(flow, clips, [0.0, 1.0], 2.0)
    assert [m.shape for m in moved] == [(2, 7), (2, 12)]
    assert torch.allclose(moved[1], fk.transfer(flow, clips[1][None], 1.0, 2.0)[0])


def test_a_flow_that_reads_no_context_is_refused_in_one_line():
    flow = fk.Flow(fk.Sequential(fk.ActNorm(4), fk.Invertible1x1(4)), event_shape=(4,))
    with pytest.raises(FlowkitError, match="transfer needs a flow conditioned on a context") as error:
        fk.transfer(flow, torch.randn(2, 4), one_hot([0]), one_hot([1]))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("source, target, message", [
    (one_hot([0, 1, 2]), one_hot([1]), "fits neither a batch of 2"),
    (one_hot([0]), one_hot([1], 4), "differ in shape"),
    (one_hot([0]) * float("nan"), one_hot([1]), "source context"),
    ("cat", one_hot([1]), "a context is a tensor or a number"),
])
def test_bad_contexts_are_named(source, target, message):
    with pytest.raises(FlowkitError, match=message):
        fk.transfer(conditional_vector_flow(), torch.randn(2, 6), source, target)


def test_a_non_finite_strength_is_named():
    with pytest.raises(FlowkitError, match="strength must be a finite number"):
        fk.transfer(conditional_vector_flow(), torch.randn(2, 6), one_hot([0]), one_hot([1]), float("inf"))
