"""WaveGlow on real FSDD speech: the conformance kit on its layers, exact inversion,
the loss, synthesis, and a short training run that lowers held-out NLL."""

import math

import pytest
import torch

import flowkit as fk
from flowkit.testing import check_bijector
from flowkit_audio.features import MelConfig, log_mel
from flowkit_audio.vocoder.model import WaveGlow, WaveGlowConfig, WaveNet, preset
from flowkit_audio.vocoder.run import evaluate, load, train


def crops(clips, length: int) -> torch.Tensor:
    """(B, 1, length): the first ``length`` samples of each clip, zero-padded."""
    return torch.stack([torch.nn.functional.pad(c.audio[:length], (0, max(0, length - c.audio.shape[0])))
                        for c in clips])[:, None]


TINY = WaveGlowConfig(MelConfig(8000, 64, 64, 16, 8), n_group=8, n_flows=4, n_early_every=2, n_early_size=2,
                      wn_layers=2, wn_channels=8, sigma=0.8)


def test_wavenet_coupling_conforms():
    def coupling():
        return fk.AffineCoupling(6, scale="exp", clamp=None, context_channels=5,
                                 net=lambda i, o,
                                 context_channels: WaveNet(i, o, context_channels, layers=3, channels=8))

    check_bijector(coupling(), torch.randn(4, 6, 12), torch.randn(4, 5, 12), factory=coupling)


@pytest.mark.parametrize("upsample", [True, False])
def test_the_whole_waveglow_bijector_conforms_with_its_mel_context(upsample):
    config = WaveGlowConfig.from_dict({**TINY.to_dict(), "n_group": 8 if upsample else 16, "upsample": upsample})
    model = WaveGlow(config)
    audio = torch.randn(3, 1, 64) * 0.3
    context = model.context_net(torch.randn(3, 8, 5), (1, 64)).detach()
    check_bijector(model.bijector, audio, context, factory=lambda: WaveGlow(config).bijector)


def test_paper_preset_has_the_papers_size():
    assert sum(p.numel() for p in WaveGlow(preset("waveglow")).parameters()) == pytest.approx(87.9e6, rel=2e-3)


def test_loss_is_the_exact_nll_per_sample_at_initialisation(fsdd_held_out):
    """Identity couplings and rotations: log p(x) = log N(x / sigma; 0, I) - T log sigma."""
    model = WaveGlow(TINY).eval()
    audio = crops(fsdd_held_out[:3], 2048)
    mel = log_mel(audio, TINY.mel)
    expected = 0.5 * (audio / 0.8).square().mean((1, 2)) + 0.5 * math.log(2 * math.pi) + math.log(0.8)
    torch.testing.assert_close(model.nll_per_sample(audio, mel), expected, atol=1e-5, rtol=1e-5)



def test_unscaled_pcm_is_refused_not_scored(fsdd_held_out):
    model = WaveGlow(TINY).eval()
    audio = crops(fsdd_held_out[:2], 2048)
    mel = log_mel(audio, TINY.mel)
    assert torch.isfinite(model.nll_per_sample(audio + 1e-4 * torch.randn(audio.shape), mel)).all()
    with pytest.raises(fk.DataError, match=r"floats in \[-1, 1\].*peak of \d{3,}"):
        model.nll_per_sample(audio * 32768, mel)  # int16 values, not divided by 32768
    model.validate = False
    assert torch.isfinite(model.nll_per_sample(audio * 1.5, mel)).all()

def test_exact_inversion_and_synthesis_on_real_speech(fsdd_held_out):
    model = WaveGlow(preset("cpu"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # trained-like weights: couplings away from the identity
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    model.eval()
    audio = crops(fsdd_held_out[:4], 4096)
    mel = log_mel(audio, model.config.mel)
    with torch.no_grad():
        z = model.encode(audio, mel)
        assert z.shape == audio.view(4, 8, 512).shape
        assert model.bijector(audio, model.context_net(mel, (1, 4096)))[1].abs().min() > 10  # not the identity
        assert (model.decode(z, mel) - audio).abs().max() < 1e-4  # float32, 8 flows
        synthesis = model.infer(mel[..., :-1], sigma=0.6, generator=g)
        assert synthesis.shape == (4, 4096) and torch.isfinite(synthesis).all()
        silent = model.infer(mel[..., :-1], sigma=0.0)
        torch.testing.assert_close(silent, model.decode(torch.zeros_like(z), mel)[:, 0])
        assert model.vocode(audio[:, 0, :4000]).shape == (4, 3968)  # cut to a multiple of the hop
        assert model.denoise(synthesis, 0.05).shape == synthesis.shape


def test_a_short_run_lowers_held_out_nll(tmp_path, fsdd_subset, fsdd_held_out):
    torch.manual_seed(0)
    before = evaluate(WaveGlow(preset("cpu")), fsdd_held_out)
    metrics = train(str(fsdd_subset), tmp_path / "run", "cpu", steps=40, progress=False)
    after = evaluate(load(tmp_path / "run"), fsdd_held_out)
    assert metrics["eval_nll"] == pytest.approx(after, abs=0.2)  # the engine's held-out set is theo's too
    assert after < before - 1.0, (before, after)
