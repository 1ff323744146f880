import pytest
import torch

import flowkit
from flowkit import ActNorm, Invertible1x1, Sequential, Squeeze
from flowkit.errors import ShapeError


class Shift(flowkit.Bijector):
    """Adds the context (or a constant) to the input: a bijector that uses context."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.value = value

    def forward(self, x, context=None):
        shift = self.value if context is None else context
        return x + shift, x.new_zeros(x.shape[0])

    def inverse(self, y, context=None):
        shift = self.value if context is None else context
        return y - shift, y.new_zeros(y.shape[0])


def test_sequential_composes_in_order_and_sums_logdets():
    a, b = ActNorm(4), Invertible1x1(4)
    flow = Sequential(a, b)
    x = torch.randn(5, 4, 3)
    y, ladj = flow(x)
    ya, la = a(x)
    yb, lb = b(ya)
    torch.testing.assert_close(y, yb)
    torch.testing.assert_close(ladj, la + lb)


def test_sequential_inverse_runs_backwards():
    flow = Sequential(Squeeze(2), ActNorm(8), Invertible1x1(8)).eval()
    x = torch.randn(2, 2, 4, 4)
    y, ladj = flow(x)
    x_back, ladj_back = flow.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ladj_back, -ladj)


def test_sequential_passes_context_to_every_member():
    flow = Sequential(Shift(), Shift())
    x, context = torch.zeros(3, 2), torch.full((3, 2), 2.0)
    assert torch.equal(flow(x, context)[0], torch.full((3, 2), 4.0))
    assert torch.equal(flow.inverse(x, context)[0], torch.full((3, 2), -4.0))


def test_indexing_slicing_and_len():
    layers = [ActNorm(4), Invertible1x1(4), ActNorm(4)]
    flow = Sequential(*layers)
    assert len(flow) == 3 and flow[1] is layers[1]
    head = flow[:2]
    assert isinstance(head, Sequential) and len(head) == 2 and head[0] is layers[0]
    assert list(flow) == layers
    assert len(Sequential(layers)) == 3  # an iterable is accepted too


def test_inv_swaps_directions_and_inverts_back():
    flow = Sequential(Squeeze(2), ActNorm(12))
    inv = flow.inv
    assert inv.inv is flow
    y = torch.randn(2, 12, 2, 2)
    torch.testing.assert_close(inv(y)[0], flow.inverse(y)[0])
    assert inv.forward_shape((12, 2, 2)) == (3, 4, 4)
    assert inv.inverse_shape((3, 4, 4)) == (12, 2, 2)


def test_shapes_chain_through_sequential():
    flow = Sequential(Squeeze(2), Squeeze(2))
    assert flow.forward_shape((3, 32, 32)) == (48, 8, 8)
    assert flow.inverse_shape((48, 8, 8)) == (3, 32, 32)


def test_non_bijector_member_is_rejected():
    with pytest.raises(TypeError, match="member 1 is a Linear"):
        Sequential(ActNorm(2), torch.nn.Linear(2, 2))


def test_wrong_channel_count_names_the_layer():
    with pytest.raises(ShapeError, match="ActNorm was built for 4 channels"):
        ActNorm(4)(torch.randn(2, 3, 5))


def test_logdet_follows_input_dtype():
    flow = Sequential(Shift())
    assert flow(torch.randn(3, 2, dtype=torch.float64))[1].dtype == torch.float64


def test_total_log_det_sums_every_step_and_broadcasts_odd_shapes():
    from flowkit.sequential import total_log_det

    x = torch.zeros(3, 2)
    steps = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0]), torch.tensor([0.5, 0.5, 0.5])]
    torch.testing.assert_close(total_log_det(steps, x), torch.tensor([11.5, 22.5, 33.5]))
    torch.testing.assert_close(total_log_det([], x), torch.zeros(3))
    assert total_log_det(steps[:1], x) is steps[0]
    # a user bijector returning a scalar log-det still adds up (broadcast), as a running sum would
    torch.testing.assert_close(total_log_det([steps[0], torch.tensor(1.0)], x), torch.tensor([2.0, 3.0, 4.0]))
    leaves = [s.clone().requires_grad_() for s in steps]
    total_log_det(leaves, x).sum().backward()
    assert all(torch.equal(leaf.grad, torch.ones(3)) for leaf in leaves)


def test_interleaved_pair_is_the_even_and_odd_channels_with_their_gradients():
    from flowkit.bijector import interleaved_pair

    h = torch.randn(2, 6, 3, 3).contiguous(memory_format=torch.channels_last).requires_grad_()
    even, odd = interleaved_pair(h)
    torch.testing.assert_close(even, h[:, 0::2])
    torch.testing.assert_close(odd, h[:, 1::2])
    (2 * even.sum() + 3 * odd.sum()).backward()
    torch.testing.assert_close(h.grad[:, 0::2], torch.full((2, 3, 3, 3), 2.0))
    torch.testing.assert_close(h.grad[:, 1::2], torch.full((2, 3, 3, 3), 3.0))
