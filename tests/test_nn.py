import pytest
import torch
import torch.nn.functional as F

from flowkit.errors import ShapeError
from flowkit.nn import EdgePaddedConv, GlowConditioner, ZeroConv, join_context


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_edge_padded_conv_equals_openai_concatenation(spatial_dims):
    conv = EdgePaddedConv(5, 7, spatial_dims, 3, bias=True)
    x = torch.randn(2, 5, *([6] * spatial_dims))
    pad = [1] * (2 * spatial_dims)
    border = F.pad(x.new_zeros(2, 1, *x.shape[2:]), pad, value=1.0)
    expected = conv.conv(torch.cat([F.pad(x, pad), border], dim=1))
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims, shape", [(0, (4, 6)), (1, (4, 6, 9)), (2, (4, 6, 5, 5))])
def test_conditioner_starts_at_zero_for_every_rank(spatial_dims, shape):
    net = GlowConditioner(6, 10, hidden=16, spatial_dims=spatial_dims, edge_bias=spatial_dims > 0)
    out = net(torch.randn(shape))
    assert out.shape == (4, 10, *shape[2:]) and torch.equal(out, torch.zeros_like(out))


def test_zero_conv_output_scale():
    conv = ZeroConv(3, 2, spatial_dims=0)
    with torch.no_grad():
        conv.layer.bias.fill_(1.0)
        conv.logs.fill_(0.1)
    torch.testing.assert_close(conv(torch.randn(4, 3)), torch.full((4, 2), torch.tensor(0.3).exp().item()))


def test_join_context_broadcasts_vectors_and_checks_maps():
    x = torch.randn(2, 3, 4, 4)
    joined = join_context(x, torch.tensor([[1.0], [2.0]]))
    assert joined.shape == (2, 4, 4, 4) and torch.equal(joined[1, 3], torch.full((4, 4), 2.0))
    assert join_context(x, torch.randn(2, 2, 4, 4)).shape == (2, 5, 4, 4)
    with pytest.raises(ShapeError, match="spatial shape"):
        join_context(x, torch.randn(2, 2, 3, 3))
