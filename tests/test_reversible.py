"""Reversible and checkpointed backprop give plain autograd's gradients and store far less."""

import math

import pytest
import torch

import flowkit as fk
from flowkit.reversible import last_drift
from flowkit.sequential import set_memory_mode
from flowkit.testing.memory import peak_saved_bytes
from flowkit_image import GlowConfig, build_glow_bijector


def gradients(model, x, context, mode, accumulate_grads=False):
    set_memory_mode(model, mode, accumulate_grads)
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    ctx = None if context is None else context.clone().requires_grad_(True)
    y, ladj = model(x, ctx)
    (y.square().sum() * 0.5 - ladj.sum() + y.sum()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return y.detach(), ladj.detach(), x.grad, None if ctx is None else ctx.grad, grads


def glow(n_classes=0):
    torch.manual_seed(0)
    model = build_glow_bijector(GlowConfig(image_shape=(3, 8, 8), levels=2, depth=2, width=8, n_classes=n_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.double()


@pytest.mark.parametrize("mode,accumulate_grads", [("reversible", False), ("reversible", True),
                                                   ("reversible+boundaries", False), ("checkpoint", False)])
@pytest.mark.parametrize("n_classes", [0, 3])
def test_gradients_equal_plain_autograd_in_float64(mode, accumulate_grads, n_classes):
    model = glow(n_classes)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64) - 0.5
    context = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]] if n_classes else None
    model(x, context)  # ActNorm init before switching mode
    plain = gradients(model, x, context, "plain")
    other = gradients(model, x, context, mode, accumulate_grads)
    for a, b in zip(plain[:4], other[:4]):
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-8, rtol=1e-8)
    for a, b in zip(plain[4], other[4]):
        torch.testing.assert_close(b, a, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("accumulate_grads", [False, True])
def test_accumulate_grads_hands_each_layer_its_gradients_before_the_chain_is_done(accumulate_grads):
    torch.manual_seed(0)
    chain = fk.Sequential(fk.ActNorm(4), fk.Invertible1x1(4), fk.AffineCoupling(4, hidden=8, spatial_dims=1))
    x = torch.randn(3, 4, 5)
    chain(x)
    set_memory_mode(chain, "reversible", accumulate_grads)
    events = []
    first = chain.layers[0]
    original = first.reversible_backward
    first.reversible_backward = lambda *args: (events.append("first layer rebuilt"), original(*args))[1]

    def take_gradient(p):  # as an optimiser stepping in backward does
        if p.grad is not None:
            events.append("last layer's gradient")
            p.grad = None

    chain.layers[-1].net.conv_out.layer.weight.register_post_accumulate_grad_hook(take_gradient)
    y, ladj = chain(x)
    (y.square().sum() - ladj.sum()).backward()
    expected = ["last layer's gradient", "first layer rebuilt"]
    assert events == (expected if accumulate_grads else expected[::-1])


def test_coupling_context_gradient_flows_through_the_reversible_chain():
    torch.manual_seed(0)
    chain = fk.Sequential(fk.ActNorm(4), fk.AffineCoupling(4, hidden=8, spatial_dims=1, context_channels=2),
                          fk.Invertible1x1(4),
                          fk.AffineCoupling(4, hidden=8, spatial_dims=1, context_channels=2)).double()
    with torch.no_grad():
        for p in chain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, context = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    chain(x, context)
    plain, reversible = gradients(chain, x, context, "plain"), gradients(chain, x, context, "reversible")
    torch.testing.assert_close(reversible[3], plain[3], atol=1e-8, rtol=1e-8)


def test_reversible_activation_memory_does_not_grow_with_depth():
    x = torch.rand(8, 3, 16, 16) - 0.5
    peaks = {}
    for depth in (2, 8):
        torch.manual_seed(0)
        model = build_glow_bijector(GlowConfig(image_shape=(3, 16, 16), levels=2, depth=depth, width=16))
        model(x)
        for mode in ("plain", "checkpoint", "reversible"):
            set_memory_mode(model, mode)
            peaks[mode, depth] = peak_saved_bytes(lambda: model(x)[1].sum().backward())
    assert peaks["plain", 8] > 3 * peaks["plain", 2]  # plain autograd grows with depth
    assert peaks["reversible", 8] < 1.3 * peaks["reversible", 2]  # reversible does not
    assert peaks["reversible", 8] < peaks["checkpoint", 8] < peaks["plain", 8]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="memory mode"):
        set_memory_mode(fk.Sequential(), "magic")


def test_misspelt_mode_is_rejected_at_construction():
    with pytest.raises(ValueError, match="memory mode"):
        fk.Sequential(fk.ActNorm(2), memory="reversable")


def test_reversible_backward_runs_each_network_once_more_whatever_the_nesting():
    """Forward once, recompute once: nested levels must not re-run their inner chains."""
    torch.manual_seed(0)
    model = build_glow_bijector(GlowConfig(image_shape=(3, 16, 16), levels=3, depth=2, width=8))
    x = torch.rand(2, 3, 16, 16) - 0.5
    model(x)
    calls: dict[str, int] = {}
    networks = [(name, m) for name, m in model.named_modules() if isinstance(m,
                                                                             (fk.nn.GlowConditioner, fk.nn.ZeroConv))]
    for name, m in networks:
        m.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    for mode, expected in (("plain", 1), ("reversible", 2)):
        calls.clear()
        set_memory_mode(model, mode)
        model(x)[1].sum().backward()
        assert len(networks) > 12 and calls == {name: expected for name, _ in networks}


class SlightlyLossyDouble(fk.Bijector):
    """y = 2x, but the inverse is off by a factor 1 + 1e-3: a stand-in for float drift."""

    def forward(self, x, context=None):
        return 2 * x, x.new_full((x.shape[0],), x[0].numel() * math.log(2))

    def inverse(self, y, context=None):
        return y / 2 * (1 + 1e-3), y.new_full((y.shape[0],), -y[0].numel() * math.log(2))


def test_stored_boundaries_stop_drift_from_reaching_outer_levels():
    torch.manual_seed(0)
    inner = fk.Sequential(SlightlyLossyDouble(), fk.AffineCoupling(2, hidden=8, spatial_dims=1))
    model = fk.Sequential(fk.ActNorm(4), fk.AffineCoupling(4, hidden=8, spatial_dims=1),
                          fk.FactorOut(4, inner, spatial_dims=1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    model(x)
    plain = gradients(model, x, None, "plain")[4]
    drifting = gradients(model, x, None, "reversible")[4]
    bounded = gradients(model, x, None, "reversible+boundaries")[4]
    drift = last_drift()
    assert list(drift) == [model[2]] and 1e-5 < drift[model[2]] < 1e-1
    assert max((a - b).abs().max() for a, b in zip(plain, drifting)) > 1e-6
    for a, b in zip(plain, bounded):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)
