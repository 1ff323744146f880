"""Fast synthesis (flowkit_audio.vocoder.fast): the folded WaveNets compute the same function
as the trained ones, on real FSDD speech, for every architecture variant and length."""

import copy

import pytest
import torch

import flowkit.precision
from flowkit.errors import FlowkitError, ShapeError
from flowkit_audio.features import MelConfig, log_mel
from flowkit_audio.vocoder.fast import StackedFrames, SynthesisWaveNet
from flowkit_audio.vocoder.model import WaveGlow, WaveGlowConfig
from tests.audio.test_waveglow import TINY, crops

VARIANTS = {
    "upsampler": TINY,
    "kernel 5, 3 layers": WaveGlowConfig.from_dict({**TINY.to_dict(), "wn_kernel": 5, "wn_layers": 3}),
    "depthwise": WaveGlowConfig.from_dict({**TINY.to_dict(), "depthwise": True, "wn_layers": 3}),
    "frames (no upsampler)": WaveGlowConfig.from_dict({**TINY.to_dict(), "n_group": 16, "upsample": False}),
    "one layer": WaveGlowConfig.from_dict({**TINY.to_dict(), "wn_layers": 1}),
}


def perturbed(config: WaveGlowConfig, seed: int = 1) -> WaveGlow:
    """A WaveGlow whose every parameter moved off its initialisation (zero ends, unit norms)."""
    model = WaveGlow(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def speech(clips, config: WaveGlowConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    audio = crops(clips, length)
    return audio, log_mel(audio[:, 0], config.mel)


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float32_synthesis_is_the_same_function(variant, fold, fsdd_held_out):
    config = VARIANTS[variant]
    model = perturbed(config)
    fast = copy.deepcopy(model).prepare_synthesis("float32", fold_upsampler=fold)
    assert sum(isinstance(m, SynthesisWaveNet) for m in fast.modules()) == config.n_flows
    # 1024 samples fill whole mel frames; 1024 - 3 groups leave a partial frame (the unfused path)
    for length in (1024, 1024 - 3 * config.n_group):
        audio, mel = speech(fsdd_held_out[:3], config, length)
        with torch.no_grad():
            z, z_fast = model.encode(audio, mel), fast.encode(audio, mel)
            assert 0 < (z - audio.reshape(z.shape)).abs().max()  # the flow did transform the audio
            assert (z_fast - z).abs().max() < 1e-5 * z.abs().max(), (variant, length)
            assert (fast.decode(z_fast, mel) - audio).abs().max() < 1e-5
            assert fast.log_prob(audio, mel) == pytest.approx(model.log_prob(audio, mel), rel=1e-5)


def test_synthesis_from_mel_matches_with_the_same_noise(fsdd_held_out):
    model = perturbed(TINY)
    fast = copy.deepcopy(model).prepare_synthesis("float32")
    _, mel = speech(fsdd_held_out[:2], TINY, 1024)
    with torch.no_grad():
        reference = model.infer(mel, sigma=0.6, generator=torch.Generator().manual_seed(3))
        synthesised = fast.infer(mel, sigma=0.6, generator=torch.Generator().manual_seed(3))
    assert synthesised.shape == reference.shape == (2, mel.shape[-1] * TINY.mel.hop_length)
    assert (synthesised - reference).abs().max() < 1e-5 * reference.abs().max()


@pytest.mark.bf16
@pytest.mark.skipif(not flowkit.precision.bf16_supported(), reason="this CPU lacks native bfloat16")
def test_bf16_synthesis_is_close_to_float32_and_stays_invertible(fsdd_held_out):
    model = perturbed(TINY)
    audio, mel = speech(fsdd_held_out[:3], TINY, 1024)
    fast = copy.deepcopy(model).prepare_synthesis("bf16")
    with torch.no_grad():
        z32, z16 = model.encode(audio, mel), fast.encode(audio, mel)
        assert 0 < (z16 - z32).abs().max() < 0.05 * z32.abs().max()  # it did run in bf16, close to float32
        # decode inverts encode up to bfloat16 rounding straddles (see flowkit.precision)
        assert (fast.decode(z16, mel) - audio).abs().mean() < 1e-4 * audio.abs().max()


def test_a_prepared_model_refuses_gradients(fsdd_held_out):
    fast = perturbed(TINY).prepare_synthesis("float32")
    audio, mel = speech(fsdd_held_out[:1], TINY, 1024)
    with pytest.raises(FlowkitError, match="synthesis only"):
        fast.log_prob(audio, mel)


@pytest.mark.bf16
def test_bf16_falls_back_to_float32_with_a_warning(monkeypatch):
    monkeypatch.setattr(flowkit.precision, "bf16_supported", lambda device="cpu": False)
    with pytest.warns(UserWarning, match="float32"):
        fast = WaveGlow(TINY).prepare_synthesis("bf16")
    assert all(m.dtype == torch.float32 for m in fast.modules() if isinstance(m, SynthesisWaveNet))
    with pytest.raises(FlowkitError, match="precision"):
        WaveGlow(TINY).prepare_synthesis("fp16")


def test_stacked_frames_hold_each_blocks_frames_newest_first():
    stack = StackedFrames(n_mels=2, hop=4, win=8, n_group=2)  # 2 frames seen, 2 steps per frame
    mel = torch.arange(1.0, 7.0).reshape(1, 2, 3)  # frames [1, 4], [2, 5], [3, 6]
    rows = stack(mel, (1, 12))  # 6 steps: 3 rows
    assert rows.tolist() == [[[1, 4, 0, 0], [2, 5, 1, 4], [3, 6, 2, 5]]]
    with pytest.raises(ShapeError, match="cover"):
        stack(mel, (1, 4 * 2 + 8 + 2))  # 3 frames cover 16 samples


def test_too_few_mel_frames_are_refused_as_before(fsdd_held_out):
    fast = perturbed(TINY).prepare_synthesis("float32")
    audio, mel = speech(fsdd_held_out[:1], TINY, 1024)
    with torch.no_grad(), pytest.raises(ShapeError, match="mel frames cover"):
        fast.encode(audio, mel[..., :10])


def test_the_paper_size_fold_has_the_documented_shape():
    config = WaveGlowConfig.from_dict({**TINY.to_dict(),
                                       "mel": MelConfig(22050, 1024, 1024, 256, 80, 0.0, 8000.0).to_dict(),
                                       "wn_channels": 16, "wn_layers": 2, "n_flows": 1, "n_early_every": 0})
    net = SynthesisWaveNet(WaveGlow(config).bijector.layers[1].layers[1].net, torch.float32,
                           WaveGlow(config).context_net)
    # J = 1024 / 256 = 4 frames of 80 mels per row; r = 256 / 8 = 32 steps of 2 C = 32 channels per layer
    assert net.cond0.shape == (4 * 80, 32 * 32)
