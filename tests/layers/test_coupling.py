import pytest
import torch
import torch.nn.functional as F

from flowkit import AdditiveCoupling, AffineCoupling, Coupling, ElementTransform, RQSplineTransform
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


def perturbed(layer, **kwargs):
    """A coupling whose conditioner does something: every parameter moved off its (zero) init."""
    coupling = layer(4, hidden=8, **kwargs).double()
    g = torch.Generator().manual_seed(3)
    coupling(torch.randn(16, 4, 5, dtype=torch.float64, generator=g))  # ActNorm init inside the conditioner
    with torch.no_grad():
        for p in coupling.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return coupling.eval()


@pytest.mark.parametrize("scale, clamp", [("sigmoid", 1.5), ("exp", 1.5), ("exp", None)])
def test_affine_forward_inverse_and_logdet_follow_the_formula(scale, clamp):
    coupling = perturbed(AffineCoupling, spatial_dims=1, scale=scale, clamp=clamp)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    h = coupling.net(x[:, :2])  # the conditioner output, computed apart from the layer
    shift, raw = h[:, 0::2], h[:, 1::2]
    if scale == "sigmoid":
        log_scale = F.logsigmoid(raw + 2.0)
    else:  # WaveGlow's exp(r), or exp of the soft clamp c tanh(r / c)
        log_scale = raw if clamp is None else clamp * torch.tanh(raw / clamp)
    assert log_scale.abs().sum(dim=(1, 2)).min() > 0.1  # far from the identity, so a sign error shows
    y, ladj = coupling(x)
    torch.testing.assert_close(y[:, 2:], (x[:, 2:] + shift) * log_scale.exp(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj, log_scale.sum(dim=(1, 2)), rtol=1e-12, atol=1e-12)
    x_back, ladj_back = coupling.inverse(y)
    torch.testing.assert_close(x_back[:, 2:], y[:, 2:] * (-log_scale).exp() - shift, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ladj_back, -ladj, rtol=1e-12, atol=1e-12)


def test_additive_forward_and_inverse_follow_the_formula():
    coupling = perturbed(AdditiveCoupling, spatial_dims=1)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    h = coupling.net(x[:, :2])
    assert h.abs().max() > 0.1
    y, ladj = coupling(x)
    torch.testing.assert_close(y[:, 2:], x[:, 2:] + h, rtol=1e-12, atol=1e-12)
    assert torch.equal(ladj, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(coupling.inverse(y)[0], x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [AffineCoupling, AdditiveCoupling])
def test_gradients_through_the_conditioner_match_finite_differences(layer):
    """A conditioner that sees x_a.detach() keeps inverse and log-det right but breaks this."""
    coupling = perturbed(layer, spatial_dims=1)
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: coupling(t), (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_unclamped_exp_scale_follows_the_network():
    coupling = AffineCoupling(2, hidden=8, spatial_dims=0, scale="exp", clamp=None)
    with torch.no_grad():
        coupling.net.conv_out.layer.bias.fill_(4.0)  # raw log-scale 4 (ZeroConv scale e^0 = 1)
    _, ladj = coupling(torch.randn(5, 2))
    torch.testing.assert_close(ladj, torch.full((5,), 4.0))


def test_a_factory_asking_for_context_channels_gets_the_counts_apart():
    calls = []

    class AudioAndMel(torch.nn.Module):
        def __init__(self, in_channels, out_channels, context_channels):
            super().__init__()
            calls.append((in_channels, out_channels, context_channels))
            self.audio, self.mel = torch.nn.Conv1d(in_channels, out_channels, 3, padding=1), torch.nn.Conv1d(
                context_channels, out_channels, 1)

        def forward(self, x, context):
            return self.audio(x) + self.mel(context)

    coupling = AffineCoupling(6, net=AudioAndMel, context_channels=5)
    assert calls == [(3, 6, 5)]
    x, mel = torch.randn(2, 6, 7), torch.randn(2, 5, 7)
    y, _ = coupling(x, mel)
    torch.testing.assert_close(coupling.inverse(y, mel)[0], x, atol=1e-5, rtol=0)
    assert not torch.allclose(coupling(x, mel + 1)[0], y)  # the context reaches the network


def test_a_tensor_of_another_rank_is_a_shape_error():
    with pytest.raises(ShapeError, match="built for 1 spatial dims"):
        AffineCoupling(4, hidden=8, spatial_dims=1)(torch.randn(2, 4, 5, 5))


class Scale(ElementTransform):
    """A one-output element transform: y = x * exp(tanh(h))."""

    params = 1

    def forward(self, x_b, h, inverse=False):
        log_scale = torch.tanh(h)
        sign = -1 if inverse else 1
        return x_b * (sign * log_scale).exp(), sign * log_scale.flatten(1).sum(1)


def test_a_coupling_takes_any_element_transform_and_sizes_its_network_by_it():
    from flowkit.testing import check_bijector

    def outputs(coupling):
        return coupling.net.conv_out.layer.weight.shape[0]

    coupling = Coupling(5, Scale(), hidden=8, spatial_dims=1)
    assert outputs(coupling) == 3  # 3 transformed channels x 1 output each
    assert outputs(Coupling(5, RQSplineTransform(bins=4), hidden=8, spatial_dims=1)) == 3 * 11
    check_bijector(coupling, torch.randn(4, 5, 6), factory=lambda: Coupling(5, Scale(), hidden=8, spatial_dims=1))
    with pytest.raises(TypeError, match="ElementTransform"):
        Coupling(4, lambda x, h, inverse: (x, h), spatial_dims=0)


def test_the_transform_adds_no_state_so_saved_couplings_keep_loading():
    keys = set(AffineCoupling(4, hidden=8, spatial_dims=0).state_dict())
    assert keys and all(k.startswith("net.") for k in keys)
