import torch

from flowkit import RQSplineCoupling
from flowkit.layers.spline import rational_quadratic_spline


def _params(shape, bins, scale=1.0):
    g = torch.Generator().manual_seed(0)
    return (scale * torch.randn(*shape, bins, generator=g, dtype=torch.float64),
            scale * torch.randn(*shape, bins, generator=g, dtype=torch.float64),
            scale * torch.randn(*shape, bins - 1, generator=g, dtype=torch.float64))


def test_monotonic_and_maps_the_interval_onto_itself():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    w, h, d = (p.expand(601, -1) for p in _params((1,), 6, 2.0))
    y, _ = rational_quadratic_spline(x, w, h, d, bound=3.0)
    assert (y.diff() > 0).all()
    torch.testing.assert_close(y[[0, -1]], torch.tensor([-3.0, 3.0], dtype=torch.float64))


def test_identity_outside_the_bound():
    x = torch.tensor([-7.0, -3.5, 4.0, 9.0], dtype=torch.float64)
    y, log_deriv = rational_quadratic_spline(x, *_params((4,), 5), bound=3.0)
    assert torch.equal(y, x) and torch.equal(log_deriv, torch.zeros(4, dtype=torch.float64))


def test_log_derivative_matches_finite_differences():
    x = torch.linspace(-2.9, 2.9, 50, dtype=torch.float64)
    params = _params((50,), 8, 1.5)
    y, log_deriv = rational_quadratic_spline(x, *params, bound=3.0)
    eps = 1e-6
    up = rational_quadratic_spline(x + eps, *params, bound=3.0)[0]
    down = rational_quadratic_spline(x - eps, *params, bound=3.0)[0]
    numeric = (up - down) / (2 * eps)
    torch.testing.assert_close(log_deriv, numeric.log(), atol=1e-6, rtol=1e-6)


def test_inverse_inverts_and_negates_the_log_derivative():
    x = torch.linspace(-2.99, 2.99, 200, dtype=torch.float64)
    params = _params((200,), 10, 2.0)
    y, log_deriv = rational_quadratic_spline(x, *params, bound=3.0)
    x_back, inv_log_deriv = rational_quadratic_spline(y, *params, bound=3.0, inverse=True)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(inv_log_deriv, -log_deriv)


def test_new_spline_coupling_is_the_identity():
    x = torch.randn(16, 6) * 2
    y, ladj = RQSplineCoupling(6, hidden=16, spatial_dims=0)(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros(16), atol=1e-5, rtol=0)
