import pytest
import torch

from flowkit import ActNorm


def test_first_training_batch_standardises_each_channel():
    x = torch.randn(64, 3, 8, 8) * torch.tensor([0.1, 2.0, 5.0]).view(1, 3, 1, 1) + 3
    y, ladj = ActNorm(3)(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    expected = 64 * -torch.log(x.std((0, 2, 3), unbiased=False) + 1e-6).sum()
    torch.testing.assert_close(ladj, expected.expand(64), rtol=1e-5, atol=1e-4)


def test_constant_channel_gets_unit_scale_not_infinity():
    x = torch.randn(16, 2, 5)
    x[:, 1] = 0.7
    norm = ActNorm(2)
    y, ladj = norm(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    assert float(norm.logs[1]) == 0.0 and torch.allclose(y[:, 1], torch.zeros(16, 5))


def test_initialises_once_and_the_flag_survives_loading():
    norm = ActNorm(3)
    norm(torch.randn(8, 3) * 4)
    state = {k: v.clone() for k, v in norm.state_dict().items()}
    assert bool(state["initialized"])
    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    fresh(torch.randn(8, 3) * 100)  # a training-mode pass must not re-initialise
    torch.testing.assert_close(fresh.logs, state["logs"])


def test_eval_mode_on_a_new_layer_does_not_initialise():
    norm = ActNorm(2).eval()
    x = torch.randn(4, 2) * 3
    assert torch.equal(norm(x)[0], x) and not norm._initialized


def test_logscale_factor_scales_the_stored_parameter():
    x = torch.randn(32, 2) * 4
    a, b = ActNorm(2), ActNorm(2, logscale_factor=3.0)
    torch.testing.assert_close(a(x)[0], b(x)[0])
    torch.testing.assert_close(a.logs, 3.0 * b.logs)


@pytest.mark.parametrize("spatial", [(), (6,), (3, 4)])
def test_forward_inverse_and_logdet_of_an_initialised_perturbed_layer(spatial):
    """y = (x + b) e^s and x = y e^-s - b, log-det |S| sum(s), on arbitrary b and s (not the init values)."""
    norm = ActNorm(3, logscale_factor=2.0).double()
    norm(torch.randn(16, 3, *spatial, dtype=torch.float64) * 3 + 1)  # initialise
    with torch.no_grad():
        norm.bias.add_(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
        norm.logs.add_(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    b = norm.bias.detach().view(1, 3, *([1] * len(spatial)))
    s = (2.0 * norm.logs.detach()).view(1, 3, *([1] * len(spatial)))
    x = torch.randn(4, 3, *spatial, dtype=torch.float64)
    y, ladj = norm(x)
    positions = x[0, 0].numel()
    torch.testing.assert_close(y, (x + b) * s.exp(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj, (positions * s.sum()).expand(4), rtol=1e-12, atol=1e-12)
    x_back, ladj_back = norm.inverse(y)
    torch.testing.assert_close(x_back, y * (-s).exp() - b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_back, -ladj, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch, message", [(torch.zeros(0, 3, 4), "empty batch"),
                                            (torch.full((4, 3, 4), float("nan")), "NaN")])
def test_empty_or_non_finite_first_batches_never_poison_the_layer(batch, message):
    norm = ActNorm(3)
    with pytest.raises(Exception, match=message):
        norm(batch)
    assert not norm._initialized and torch.equal(norm.logs, torch.zeros(3)) and torch.equal(norm.bias, torch.zeros(3))
    y, _ = norm(torch.randn(8, 3, 4) * 2 + 1)  # a good batch still initialises it afterwards
    assert norm._initialized and torch.isfinite(y).all()


def test_mark_initialized_keeps_the_identity_and_survives_a_reload():
    layer = ActNorm(3).train()
    layer.mark_initialized()
    x = torch.randn(4, 3, 5) * 7 + 2
    y, ladj = layer(x)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(4))  # no data-dependent init happened
    fresh = ActNorm(3).train()
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x)[0], x)
