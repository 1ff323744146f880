import pytest
import torch

import flowkit as fk
from flowkit.errors import ShapeError


@pytest.fixture
def flow():
    bijector = fk.Sequential(fk.ActNorm(3), fk.Invertible1x1(3), fk.AffineCoupling(3, hidden=8, spatial_dims=1))
    flow = fk.Flow(bijector, event_shape=(3, 4))
    flow(torch.randn(16, 3, 4))
    with torch.no_grad():
        bijector[2].net.conv_out.layer.weight.normal_(0, 0.1)
    return flow.eval()


def test_direction_is_the_difference_of_mean_latents(flow):
    pos, neg = torch.randn(10, 3, 4) + 1, torch.randn(7, 3, 4)
    d = fk.attribute_direction(flow, pos, neg, batch_size=3)
    expected = flow.encode(pos).mean(0) - flow.encode(neg).mean(0)
    torch.testing.assert_close(d, expected, atol=1e-5, rtol=1e-5)


def test_apply_direction_moves_latents_by_alpha(flow):
    x, d = torch.randn(5, 3, 4), torch.randn(3, 4)
    edited = fk.apply_direction(flow, x, d, [0.0, 1.0, -0.5])
    assert edited.shape == (3, 5, 3, 4)
    torch.testing.assert_close(edited[0], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(flow.encode(edited[1]), flow.encode(x) + d, atol=1e-4, rtol=0)
    torch.testing.assert_close(flow.encode(edited[2]), flow.encode(x) - 0.5 * d, atol=1e-4, rtol=0)
    assert fk.apply_direction(flow, x, d, 1.0).shape == x.shape
    with pytest.raises(ShapeError, match="direction has shape"):
        fk.apply_direction(flow, x, torch.randn(4, 3), 1.0)


def test_interpolation_ends_at_the_inputs_and_is_linear_in_latent(flow):
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    path = fk.interpolate(flow, a, b, steps=5)
    assert path.shape == (5, 2, 3, 4)
    torch.testing.assert_close(path[0], a, atol=1e-5, rtol=0)
    torch.testing.assert_close(path[-1], b, atol=1e-5, rtol=0)
    mid = flow.encode(path[2])
    torch.testing.assert_close(mid, (flow.encode(a) + flow.encode(b)) / 2, atol=1e-4, rtol=0)


@pytest.fixture
def sequence_flow():
    """A flow over sequences of any length: a direction averaged over time applies to every length."""
    bijector = fk.Sequential(fk.Squeeze(2), fk.ActNorm(6), fk.Invertible1x1(6),
                             fk.AffineCoupling(6, hidden=8, spatial_dims=1), fk.Squeeze(2).inv)
    flow = fk.Flow(bijector, event_shape=(3, None))
    flow(torch.randn(16, 3, 10))
    with torch.no_grad():
        bijector[3].net.conv_out.layer.weight.normal_(0, 0.1)
    return flow.eval()


def test_directions_from_clips_of_different_lengths_broadcast_along_time(sequence_flow):
    flow = sequence_flow
    pos = [torch.randn(3, n) + 1 for n in (8, 12, 20)]
    neg = [torch.randn(3, n) for n in (6, 10)]
    d = fk.attribute_direction(flow, pos, neg, average_positions=True)
    assert d.shape == (3, 1)
    expected = (torch.stack([flow.encode(c[None]).mean(-1)[0] for c in pos]).mean(0)
                - torch.stack([flow.encode(c[None]).mean(-1)[0] for c in neg]).mean(0))
    torch.testing.assert_close(d[:, 0], expected, atol=1e-5, rtol=1e-5)
    clips = [torch.randn(3, 4), torch.randn(3, 14)]
    edited = fk.apply_direction(flow, clips, d, [0.0, 2.0])
    assert [e.shape for e in edited] == [(2, 3, 4), (2, 3, 14)]
    for clip, out in zip(clips, edited):
        torch.testing.assert_close(out[0], clip, atol=1e-5, rtol=0)
        torch.testing.assert_close(flow.encode(out[1][None])[0], flow.encode(clip[None])[0] + 2 * d, atol=1e-4, rtol=0)
    with pytest.raises(ShapeError, match="average_positions=True"):
        fk.attribute_direction(flow, pos, neg)


def test_editing_runs_in_evaluation_mode_and_restores_the_mode():
    bijector = fk.Sequential(fk.ActNorm(3), fk.Invertible1x1(3))
    flow = fk.Flow(bijector, event_shape=(3, 4)).train()
    fk.attribute_direction(flow, torch.randn(5, 3, 4) * 9, torch.randn(5, 3, 4))
    fk.apply_direction(flow, torch.randn(2, 3, 4) * 9, torch.ones(3, 4), 1.0)
    assert not bijector[0]._initialized  # an edit never initialises a fresh ActNorm from its inputs
    assert flow.training and bijector[0].training


def test_regression_direction_is_the_least_squares_slope_of_the_latent(flow):
    g = torch.Generator().manual_seed(4)
    x, values = torch.randn(23, 3, 4, generator=g), torch.linspace(48, 72, 23)
    d = fk.regression_direction(flow, x, values, batch_size=5)
    z = flow.encode(x).reshape(23, -1).double()
    design = torch.stack([torch.ones(23, dtype=torch.float64), values.double()], dim=1)
    slope = torch.linalg.lstsq(design, z).solution[1]
    torch.testing.assert_close(d.reshape(-1).double(), slope, atol=1e-5, rtol=1e-4)


def test_regression_direction_recovers_a_planted_label_direction():
    identity = fk.Flow(fk.Sequential(), event_shape=(2, None))
    truth = torch.tensor([[0.5], [-2.0]])
    values = torch.arange(12.0)
    clips = [torch.randn(2, 10 + i) * 0.01 + v * truth for i, v in enumerate(values)]  # lengths differ
    d = fk.regression_direction(identity, clips, values, average_positions=True)
    assert d.shape == (2, 1)
    torch.testing.assert_close(d, truth, atol=2e-3, rtol=0)


def test_regression_direction_refuses_bad_labels(flow):
    x = torch.randn(4, 3, 4)
    with pytest.raises(ShapeError, match="3 labels for 4 samples"):
        fk.regression_direction(flow, x, [1.0, 2.0, 3.0])
    with pytest.raises(ShapeError, match="not all equal"):
        fk.regression_direction(flow, x, [5.0] * 4)
    with pytest.raises(ShapeError, match="finite"):
        fk.regression_direction(flow, x, [1.0, float("nan"), 2.0, 3.0])


def test_regression_direction_within_groups_is_the_fixed_effects_slope(flow):
    g = torch.Generator().manual_seed(5)
    x, values = torch.randn(18, 3, 4, generator=g), torch.linspace(40, 80, 18)
    groups = ["cello"] * 6 + ["violin"] * 7 + ["flute"] * 5
    d = fk.regression_direction(flow, x, values, batch_size=4, groups=groups)
    z = flow.encode(x).reshape(18, -1).double()
    dummies = torch.stack([torch.tensor([k == name for k in groups], dtype=torch.float64)
                           for name in ("cello", "violin", "flute")], dim=1)
    design = torch.cat([values.double()[:, None], dummies], dim=1)  # one intercept per group
    slope = torch.linalg.lstsq(design, z).solution[0]
    torch.testing.assert_close(d.reshape(-1).double(), slope, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(d, fk.regression_direction(flow, x, values), atol=1e-3)


def test_regression_direction_within_groups_ignores_a_confounded_group_offset():
    identity = fk.Flow(fk.Sequential(), event_shape=(2,))
    pitch, offset = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    values = torch.tensor([40.0, 41, 42, 60, 61, 62])
    groups = ["low"] * 3 + ["high"] * 3
    x = values[:, None] * pitch + torch.tensor([0, 0, 0, 1, 1, 1.0])[:, None] * offset
    torch.testing.assert_close(fk.regression_direction(identity, x, values, groups=groups),
                               pitch, atol=1e-6, rtol=0)
    assert float(fk.regression_direction(identity, x, values)[1]) > 0.1  # the pooled slope picks up the offset
    with pytest.raises(ShapeError, match="vary within"):
        fk.regression_direction(identity, x, [1.0, 1, 1, 2, 2, 2], groups=groups)
    with pytest.raises(ShapeError, match="5 group keys"):
        fk.regression_direction(identity, x, values, groups=groups[:5])


def test_non_finite_edits_and_bad_step_counts_are_named(flow):
    x = torch.randn(2, 3, 4)
    direction = torch.zeros(3, 4)
    direction[1, 1] = float("nan")
    with pytest.raises(fk.NonFiniteError, match="the direction holds 1 NaN"):
        fk.apply_direction(flow, x, direction, 1.0)
    with pytest.raises(fk.NonFiniteError, match="alpha holds 0 NaN and 1 infinite"):
        fk.apply_direction(flow, x, torch.zeros(3, 4), [0.0, float("inf")])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(fk.FlowkitError, match="interpolation steps must be an integer >= 1"):
            fk.interpolate(flow, x, x, steps=bad)
    assert fk.interpolate(flow, x, x, steps=1).shape == (1, 2, 3, 4)
