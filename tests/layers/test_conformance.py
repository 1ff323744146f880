"""Every bijector flowkit ships passes the conformance kit on hypothesis-drawn shapes and values."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowkit as fk
from flowkit.testing import check_bijector
from flowkit.testing import strategies as fst

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def conforms(factory, x, context=None):
    check_bijector(factory(), x.float(), None if context is None else context.float(), factory=factory)


@SETTINGS
@given(fst.batches(fst.event_shapes(min_channels=1)))
def test_actnorm(x):
    conforms(lambda: fk.ActNorm(x.shape[1]), x)


@SETTINGS
@given(fst.batches(fst.event_shapes(min_channels=1)), st.floats(1.0, 3.0))
def test_actnorm_logscale_factor(x, factor):
    conforms(lambda: fk.ActNorm(x.shape[1], logscale_factor=factor), x)


@SETTINGS
@given(fst.batches(fst.event_shapes(min_channels=1, max_channels=8)), st.booleans())
def test_invertible_1x1(x, lu):
    seed = int(x.abs().sum() * 1000) % 1000
    layer = fk.Invertible1x1LU if lu else fk.Invertible1x1
    conforms(lambda: layer(x.shape[1], generator=torch.Generator().manual_seed(seed)), x)


@SETTINGS
@given(fst.batches(fst.event_shapes()), st.sampled_from(["reverse", "shuffle"]))
def test_permute(x, kind):
    conforms(lambda: fk.Permute(x.shape[1], kind, seed=3), x)


@SETTINGS
@given(fst.batches(fst.event_shapes()), st.sampled_from([("sigmoid", 2.0), ("exp", 2.0), ("exp", None)]))
def test_affine_coupling(x, scale_and_clamp):
    rank, (scale, clamp) = x.dim() - 2, scale_and_clamp
    conforms(lambda: fk.AffineCoupling(x.shape[1], hidden=8, spatial_dims=rank, scale=scale, clamp=clamp), x)


@SETTINGS
@given(fst.batches(fst.event_shapes()), st.integers(1, 3))
def test_affine_coupling_with_context(x, context_channels):
    rank = x.dim() - 2
    context = torch.randn(x.shape[0], context_channels, dtype=x.dtype)
    conforms(lambda: fk.AffineCoupling(x.shape[1], hidden=8, spatial_dims=rank, context_channels=context_channels),
             x, context)


@SETTINGS
@given(fst.batches(fst.event_shapes()))
def test_additive_coupling(x):
    rank = x.dim() - 2
    conforms(lambda: fk.AdditiveCoupling(x.shape[1], hidden=8, spatial_dims=rank), x)


@SETTINGS
@given(fst.batches(fst.event_shapes(spatial_dims=0, max_channels=8)), st.integers(2, 10))
def test_spline_coupling_vectors(x, bins):
    conforms(lambda: fk.RQSplineCoupling(x.shape[1], bins=bins, bound=2.5, hidden=8, spatial_dims=0), x)


@SETTINGS
@given(fst.batches(fst.event_shapes(spatial_dims=1, max_side=4)))
def test_spline_coupling_sequences(x):
    conforms(lambda: fk.RQSplineCoupling(x.shape[1], hidden=8, spatial_dims=1), x)


@SETTINGS
@given(fst.batches(fst.event_shapes(spatial_dims=2,
                                    side_multiple=2, max_side=6, min_channels=1, max_channels=3)))
def test_squeeze_2d(x):
    conforms(lambda: fk.Squeeze(2), x)


@SETTINGS
@given(fst.batches(fst.event_shapes(spatial_dims=1, side_multiple=4, max_side=12, min_channels=1, max_channels=3)))
def test_squeeze_1d(x):
    conforms(lambda: fk.Squeeze(4), x)


@SETTINGS
@given(fst.batches(fst.event_shapes(spatial_dims=2, channel_multiple=4, max_channels=8, max_side=3)))
def test_unsqueeze(x):
    conforms(lambda: fk.Squeeze(2).inv, x)


@SETTINGS
@given(fst.batches(fst.event_shapes(min_channels=1)), st.integers(0, 3))
def test_learned_prior(x, classes):
    context = torch.eye(max(classes, 1))[torch.arange(x.shape[0]) % max(classes, 1)] if classes else None
    conforms(lambda: fk.LearnedPrior(x.shape[1], context_channels=classes), x, context)


@SETTINGS
@given(fst.batches(fst.event_shapes(min_channels=2, max_side=4)), st.sampled_from(["learned", "standard"]),
       st.data())
def test_factor_out(x, prior, data):
    rank = x.dim() - 2
    kept = data.draw(st.integers(1, x.shape[1] - 1), label="keep")
    sigma = data.draw(st.sampled_from([1.0, 0.5, 2.0]), label="sigma") if prior == "standard" else 1.0

    def factory():
        inner = fk.Sequential(fk.ActNorm(kept), fk.Invertible1x1(kept))
        return fk.FactorOut(x.shape[1], inner, spatial_dims=rank, prior=prior, keep=kept, sigma=sigma)

    conforms(factory, x)


@SETTINGS
@given(fst.batches(fst.event_shapes(spatial_dims=1, min_channels=8, max_channels=8, max_side=5)))
def test_waveglow_like_early_outputs(x):
    """8 channels: 2 factored out, then 2 of the remaining 6 (WaveGlow's early outputs)."""
    def factory():
        inner = fk.FactorOut(6, fk.Sequential(fk.Invertible1x1(4), fk.AffineCoupling(4, hidden=8, spatial_dims=1,
                                                                                       scale="exp", clamp=None)),
                             spatial_dims=1, prior="standard", keep=4, sigma=0.7)
        return fk.Sequential(fk.Invertible1x1(8), fk.AffineCoupling(8, hidden=8, spatial_dims=1, scale="exp",
                                                                    clamp=None),
                             fk.FactorOut(8, inner, spatial_dims=1, prior="standard", keep=6, sigma=0.7))

    conforms(factory, x)


@SETTINGS
@given(fst.batches(fst.event_shapes(spatial_dims=2, min_channels=4, max_channels=4, side_multiple=2, max_side=4)))
def test_glow_like_sequential(x):
    def factory():
        return fk.Sequential(fk.ActNorm(4), fk.Invertible1x1LU(4), fk.AffineCoupling(4, hidden=8, spatial_dims=2),
                             fk.Squeeze(2), fk.FactorOut(16, fk.LearnedPrior(8)), fk.Squeeze(2).inv)

    conforms(factory, x)
