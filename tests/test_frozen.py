"""compile_frozen: compiled inference with frozen weights equals eager, and never goes stale."""

import pytest
import torch

import flowkit
from flowkit.frozen import compile_frozen, weights_key
from flowkit_image import Glow, GlowConfig


@pytest.fixture
def glow():
    torch.manual_seed(0)
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=2, depth=1, width=8))
    model(torch.rand(16, 3, 8, 8) - 0.5)  # ActNorm initialisation
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def eager_sample(glow):
    with torch.no_grad():
        return glow.sample(3, 0.7, None, torch.Generator().manual_seed(1))


def test_frozen_sampling_equals_eager_and_follows_weight_changes(glow):
    sample = compile_frozen(glow.sample, glow)
    first = sample(3, 0.7, None, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, eager_sample(glow), atol=1e-4, rtol=1e-4)
    assert not first.requires_grad
    with torch.no_grad():
        for p in glow.parameters():
            p.mul_(1.1)
    with pytest.warns(UserWarning, match="changed since sample was compiled"):
        second = sample(3, 0.7, None, torch.Generator().manual_seed(1))
    assert (second - first).abs().max() > 1e-2  # the change shows ...
    torch.testing.assert_close(second, eager_sample(glow), atol=1e-4, rtol=1e-4)  # ... and is the eager answer
    assert sample.compiles == 2


def test_frozen_log_prob_runs_without_autograd_and_compiles_once(glow):
    x = torch.rand(4, 3, 8, 8) - 0.5
    log_prob = compile_frozen(glow.log_prob, glow)
    with torch.enable_grad():
        got = log_prob(x)
        got_again = log_prob(x)
    assert not got.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(got, glow.log_prob(x), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(got_again, got)
    assert log_prob.compiles == 1


def test_weights_key_sees_in_place_changes_and_loads():
    layer = flowkit.ActNorm(3)
    key = weights_key(layer)
    assert weights_key(layer) == key
    with torch.no_grad():
        layer.bias.add_(1.0)
    changed = weights_key(layer)
    assert changed != key
    layer.load_state_dict({name: t.clone() for name, t in layer.state_dict().items()})
    assert weights_key(layer) != changed


def test_replaced_or_added_weights_are_seen_after_the_first_call(glow):
    """The tensors' list is kept between calls; a parameter replaced by a new one, or a
    buffer added, must still count as a change (planted: a list never refreshed)."""
    x = torch.rand(4, 3, 8, 8) - 0.5
    log_prob = compile_frozen(glow.log_prob, glow)
    log_prob(x)
    log_prob(x)
    actnorm = next(m for m in glow.modules() if isinstance(m, flowkit.ActNorm))
    actnorm.bias = torch.nn.Parameter(actnorm.bias.detach() + 0.5)  # a new tensor, version 0
    with pytest.warns(UserWarning, match="changed since log_prob was compiled"):
        got = log_prob(x)
    with torch.no_grad():
        torch.testing.assert_close(got, glow.log_prob(x), atol=1e-3, rtol=1e-5)
    assert log_prob.compiles == 2
