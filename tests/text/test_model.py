"""The embedding flows and whitening: the conformance kit, exact round trips on real
embeddings, and the whitening initialisation that starts a flow at the Gaussian."""

import pytest
import torch

import flowkit as fk
from flowkit.errors import FlowkitError, ShapeError
from flowkit.testing import check_bijector
from flowkit_text.model import PRESETS, EmbeddingFlow, EmbeddingFlowConfig, preset
from flowkit_text.whitening import Whitening


@pytest.fixture(scope="module")
def embeddings(text_encoder, rt_polarity):
    pos, neg = rt_polarity
    return torch.from_numpy(text_encoder.encode(pos + neg))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_pass_the_kit_on_small_vectors(name):
    cfg = EmbeddingFlowConfig.from_dict({**preset(name, 8).to_dict(), "width": 16, "depth": 2})
    flow = EmbeddingFlow(cfg)
    check_bijector(flow.bijector, torch.randn(6, 8) * 2)


def test_whitening_passes_the_kit_and_is_the_gaussian():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64) @ mix + 3
    whitening = Whitening.fitted(x)
    check_bijector(whitening, x[:8].float(), perturb=False, atol=1e-5)
    reference = torch.distributions.MultivariateNormal(x.mean(0), torch.cov(x.T, correction=0))
    gaussian = fk.Flow(whitening, event_shape=(6,))
    torch.testing.assert_close(gaussian.log_prob(x[:20]), reference.log_prob(x[:20]))
    z = whitening.reduce(x)
    torch.testing.assert_close(torch.cov(z.T, correction=0), torch.eye(6, dtype=torch.float64), atol=1e-8, rtol=0)
    assert whitening.reduce(x, 2).shape == (400, 2)
    torch.testing.assert_close(whitening.reduce(x, 2), z[:, :2])


def test_whitening_refuses_wrong_shapes():
    whitening = Whitening(4)
    with pytest.raises(ShapeError, match="4-d vectors"):
        whitening(torch.randn(2, 4, 3))
    with pytest.raises(ShapeError):
        whitening.fit(torch.randn(10, 5))


def test_whitening_init_starts_the_flow_at_the_gaussian(embeddings):
    train, held = embeddings[100:1900], torch.cat([embeddings[:100], embeddings[1900:]])
    flow = EmbeddingFlow(preset("affine", 384))
    flow.initialise(train)
    with torch.no_grad():
        flow.train()
        flow.log_prob(flow.dequantise(train[:512], torch.Generator().manual_seed(1)))  # later ActNorms initialise
        flow.eval()
        noisy = flow.dequantise(held, torch.Generator().manual_seed(2))
        flow_nll = float((-flow.log_prob(noisy) / 384).mean())
    gaussian = fk.Flow(Whitening.fitted(train, noise_var=float(flow.noise_std[0]) ** 2), event_shape=(384,))
    gaussian_nll = float((-gaussian.log_prob(noisy.double()) / 384).mean())
    random_start = EmbeddingFlow(EmbeddingFlowConfig.from_dict({**preset("affine", 384).to_dict(), "init": "random"}))
    random_start.initialise(train)
    with torch.no_grad():
        random_start.log_prob(flow.dequantise(train[:512], torch.Generator().manual_seed(1)))
        random_nll = float((-random_start.eval().log_prob(noisy) / 384).mean())
    assert abs(flow_nll - gaussian_nll) < 0.05, (flow_nll, gaussian_nll)
    assert random_nll > gaussian_nll + 0.1, (random_nll, gaussian_nll)


def test_noise_is_isotropic_and_covers_constant_directions(embeddings):
    flow = EmbeddingFlow(preset("bert-flow", 384))
    flow.fit_noise(embeddings)
    assert torch.all(flow.noise_std == flow.noise_std[0]) and flow.noise_std[0] > 0
    expected = 0.05 * float(embeddings.double().var(0).mean().sqrt())
    assert abs(float(flow.noise_std[0]) - expected) < 1e-6


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_on_real_embeddings_after_training_steps(name, embeddings):
    """float32 encode/decode of real sentence embeddings through perturbed, trained weights."""
    flow = EmbeddingFlow(preset(name, 384))
    flow.initialise(embeddings)
    optimizer = torch.optim.Adam(flow.parameters(), 1e-3)
    for step in range(5):
        loss = -flow.log_prob(flow.dequantise(embeddings[step * 200:(step + 1) * 200])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flow.eval()
    with torch.no_grad():
        error = (flow.decode(flow.encode(embeddings)) - embeddings).abs()
        exact = flow.double()
        error64 = (exact.decode(exact.encode(embeddings.double())) - embeddings).abs()
    # float32 through 18 layers in 384 dims (entries are about 0.05): a few 1e-4 at most
    assert error.max() < 5e-4 and error.mean() < 2e-5, (error.max(), error.mean())
    assert error64.max() < 1e-9


@pytest.mark.parametrize("bad", [{"coupling": "glow"}, {"mixing": "dense"}, {"levels": 0}, {"init": "zeros"},
                                 {"noise": -0.1}, {"dim": 4, "levels": 3}])
def test_bad_configs_are_refused(bad):
    with pytest.raises(FlowkitError):
        EmbeddingFlowConfig.from_dict({**EmbeddingFlowConfig().to_dict(), **bad})
