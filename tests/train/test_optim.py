import pytest
import torch
from torch import nn

from flowkit.train.optim import ema_decay_at, make_ema, warmed_up_ema


@pytest.mark.parametrize("decay", [0.9, 0.99, 0.999])
def test_ema_decay_rises_to_the_given_decay_and_stays_there(decay):
    decays = [ema_decay_at(t, decay) for t in range(20_000)]
    assert decays[0] == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(decays, decays[1:]))
    reached = round((10 * decay - 1) / (1 - decay))
    assert decays[reached - 1] < decay and decays[reached + 1] == decay
    assert decays[-1] == decay


def test_ema_follows_the_warmed_up_recursion():
    model = nn.Linear(3, 2, dtype=torch.float64)
    ema = make_ema(model, 0.95)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 120):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        ema.update_parameters(model)
        if step == 1:  # the first update copies
            expected = [p.detach().clone() for p in model.parameters()]
        else:
            d = ema_decay_at(step - 1, 0.95)
            expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    assert int(ema.n_averaged) == 119
    for a, b in zip(ema.module.parameters(), expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_short_run_average_forgets_the_initial_weights():
    """A constant 0.999 would still hold 90 % of the initial weights after 100 updates."""
    model = nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.zero_()
    ema = make_ema(model, 0.999)
    ema.update_parameters(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(100):
        ema.update_parameters(model)
    assert ema.module.weight.min() > 0.999


def test_ema_rejects_a_decay_outside_zero_one():
    with pytest.raises(ValueError, match="decay"):
        warmed_up_ema(1.5)
