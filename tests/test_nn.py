import pytest
import torch
import torch.nn.functional as F

import flowkit
from flowkit.errors import ShapeError
from flowkit.nn import Conv, GlowConditioner, NormedConv, ZeroConv, join_context, keep_border_patches


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_edge_padded_conv_equals_openai_concatenation(spatial_dims):
    conv = Conv(5, 7, spatial_dims, 3, bias=True, edge_bias=True)
    x = torch.randn(2, 5, *([6] * spatial_dims))
    pad = [1] * (2 * spatial_dims)
    border = F.pad(x.new_zeros(2, 1, *x.shape[2:]), pad, value=1.0)
    plain = F.conv1d if spatial_dims == 1 else F.conv2d
    expected = plain(torch.cat([F.pad(x, pad), border], dim=1), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_kept_border_patches_give_the_same_convolution(spatial_dims):
    torch.manual_seed(0)
    conv = Conv(5, 7, spatial_dims, 3, bias=True, edge_bias=True)
    x = torch.randn(2, 5, *([6] * spatial_dims))
    other = torch.randn(2, 5, *([4] * spatial_dims))
    expected, expected_other = conv(x), conv(other)
    conv.keep_border_patches(x.shape[2:])
    assert conv.border_patches.shape == (6**spatial_dims, 3**spatial_dims)
    assert torch.equal(conv(x), expected) and torch.equal(conv(other), expected_other)  # other sizes: computed
    assert list(conv.state_dict()) == ["weight", "bias"]  # a cache, not a weight: checkpoints are unchanged
    with pytest.raises(ShapeError, match="spatial dims"):
        conv.keep_border_patches((6,) * (3 - spatial_dims))


def test_kept_border_patches_are_used_and_follow_dtype_changes():
    torch.manual_seed(0)
    net = GlowConditioner(6, 10, hidden=16, edge_bias=True)
    with torch.no_grad():
        net.conv_out.layer.weight.normal_()  # zero-initialised: the border would not show
    x = torch.randn(2, 6, 5, 5)
    expected = net(x)
    keep_border_patches(net, (5, 5))
    kept = [m for m in net.modules() if isinstance(m, Conv) and m.border_patches is not None]
    assert len(kept) == 2  # the 3x3 convolutions; the 1x1 one has no border channel
    assert torch.equal(net(x), expected)
    net.double()
    assert all(conv.border_patches.dtype == torch.float64 for conv in kept)
    torch.testing.assert_close(net(x.double()), expected.double(), atol=1e-5, rtol=1e-5)
    for conv in kept:
        conv.border_patches.zero_()  # a planted fault in the kept buffers must show in the output
    assert not torch.allclose(net(x.double()), expected.double(), atol=1e-3)


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


@pytest.mark.parametrize("spatial_dims", [0, 1, 2])
def test_normed_conv_equals_conv_then_actnorm(spatial_dims):
    layer = NormedConv(4, 6, spatial_dims, 3, edge_bias=spatial_dims > 0)
    x = torch.randn(8, 4, *([5] * spatial_dims)) * 3
    out = layer(x)  # initialises
    dims = [0, *range(2, out.dim())]
    torch.testing.assert_close(out.mean(dims), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dims, unbiased=False), torch.ones(6), atol=1e-3, rtol=0)
    with torch.no_grad():
        layer.norm.logs.normal_()
        layer.norm.bias.normal_()
    actnorm = flowkit.ActNorm(6)
    actnorm.load_state_dict(layer.norm.state_dict())  # the same keys: checkpoints keep loading
    expected = actnorm(layer.conv(x))[0]
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-4)
