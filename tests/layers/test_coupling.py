import pytest
import torch

from flowkit import AdditiveCoupling, AffineCoupling
from flowkit.errors import ShapeError


@pytest.mark.parametrize("layer", [AffineCoupling, AdditiveCoupling])
def test_new_coupling_is_identity_on_the_transformed_half(layer):
    x = torch.randn(4, 6, 8, 8)
    y, ladj = layer(6, hidden=16, spatial_dims=2)(x)
    if layer is AffineCoupling:  # openai: scale = sigmoid(0 + 2) at init
        torch.testing.assert_close(y[:, 3:], x[:, 3:] * torch.sigmoid(torch.tensor(2.0)))
    else:
        torch.testing.assert_close(y, x)
    torch.testing.assert_close(y[:, :3], x[:, :3])


def test_first_half_passes_through_and_conditions_the_second():
    coupling = AffineCoupling(4, hidden=16, spatial_dims=0)
    with torch.no_grad():
        coupling.net.conv_out.layer.weight.normal_()
    x = torch.randn(8, 4)
    y = coupling(x)[0]
    assert torch.equal(y[:, :2], x[:, :2])
    x2 = x.clone()
    x2[:, :2] += 1
    assert not torch.allclose(coupling(x2)[0][:, 2:], y[:, 2:])


def test_context_changes_the_output_and_is_required_in_shape():
    coupling = AffineCoupling(4, hidden=16, spatial_dims=1, context_channels=3)
    with torch.no_grad():
        coupling.net.conv_out.layer.weight.normal_()
    x = torch.randn(2, 4, 10)
    a = coupling(x, torch.zeros(2, 3))[0]
    b = coupling(x, torch.ones(2, 3))[0]
    assert not torch.allclose(a, b)
    with pytest.raises(ShapeError, match="batch size"):
        coupling(x, torch.ones(3, 3))


def test_exp_scale_is_soft_clamped():
    coupling = AffineCoupling(2, hidden=8, spatial_dims=0, scale="exp", clamp=1.5)
    with torch.no_grad():
        coupling.net.conv_out.layer.bias.fill_(1e4)
    _, ladj = coupling(torch.randn(5, 2))
    assert (ladj.abs() <= 1.5 + 1e-5).all()


def test_custom_net_factory():
    calls = []

    def factory(cin, cout):
        calls.append((cin, cout))
        return torch.nn.Linear(cin, cout)

    coupling = AffineCoupling(5, net=factory)
    assert calls == [(2, 6)]
    x = torch.randn(3, 5)
    torch.testing.assert_close(coupling.inverse(coupling(x)[0])[0], x, atol=1e-5, rtol=0)


def test_one_channel_is_rejected():
    with pytest.raises(ValueError, match="at least 2 channels"):
        AffineCoupling(1, spatial_dims=0)
