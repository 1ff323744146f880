"""torch.compile works on Flow.log_prob, sample and a training step, matching eager results."""

import pytest
import torch

from flowkit_image import Glow, GlowConfig


@pytest.fixture(scope="module")
def glow():
    torch.manual_seed(0)
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=2, depth=2, width=8))
    model(torch.rand(16, 3, 8, 8) - 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_compiled_log_prob_and_sample_equal_eager(glow):
    glow.eval()
    x = torch.rand(4, 3, 8, 8) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(glow.log_prob)(x), glow.log_prob(x), atol=1e-3, rtol=1e-5)
        compiled = torch.compile(glow.sample)(3, 0.7, None, torch.Generator().manual_seed(1))
        torch.testing.assert_close(compiled, glow.sample(3, 0.7, None, torch.Generator().manual_seed(1)),
                                   atol=1e-4, rtol=1e-4)


def test_compiled_training_step_gives_eager_gradients(glow):
    glow.train()
    x = torch.rand(4, 3, 8, 8) - 0.5

    def loss_and_grads(fn):
        glow.zero_grad()
        loss = fn(x)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in glow.parameters()]

    def bits(x):
        return glow.nll_to_bits_per_dim(glow.log_prob(x)).mean()

    eager_loss, eager_grads = loss_and_grads(bits)
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(bits))
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-4, rtol=1e-5)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_bf16_autocast_keeps_bits_per_dim(glow):
    glow.eval()
    x = torch.rand(8, 3, 8, 8) - 0.5
    with torch.no_grad():
        full = glow.bits_per_dim(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = glow.bits_per_dim(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, atol=0.01, rtol=0)


@pytest.mark.parametrize("precision", ["float32", "bf16-conditioners"])
def test_validated_training_loss_compiles_once(precision):
    """The engine compiles the loss of a model that validates its input, in either
    precision: no graph break (the finite-input check) and no recompile on the next step
    (a Python-side cache filled while tracing, as the border patches under bfloat16 were,
    fails a guard and recompiles the whole model, a minute and more at K = 4)."""
    from torch._dynamo.utils import counters

    from flowkit.precision import set_conditioner_precision

    torch.manual_seed(0)
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=2, depth=1, width=8))
    assert model.validate
    x = torch.rand(4, 3, 8, 8) - 0.5
    model(x)  # ActNorm's data-dependent initialisation, eagerly
    set_conditioner_precision(model, precision, torch.device("cpu"), warn=False)
    torch._dynamo.reset()
    counters.clear()
    loss = torch.compile(lambda x: model.nll_to_bits_per_dim(model(x)).mean())
    for _ in range(2):
        loss(x).backward()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    with pytest.raises(Exception, match="NaN"):  # eagerly, the check still names the problem
        model(torch.full((1, 3, 8, 8), float("nan")))


def test_validated_sampling_and_evaluation_compile_without_graph_breaks():
    """The decoded-sample and input checks step aside inside torch.compile (each would be a
    data-dependent branch, one graph break per call); eagerly they still raise."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=2, depth=1, width=8))
    x = torch.rand(4, 3, 8, 8) - 0.5
    model(x)
    model.eval()
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        torch.compile(model.log_prob)(x)
        torch.compile(model.sample)(3, 0.7)
    assert model.validate and not counters["graph_break"], dict(counters["graph_break"])
