"""The mel flow and calibrated pitch edits on real FSDD speech (speaker theo held out)."""

import json

import numpy as np
import pytest
import torch

from flowkit.errors import FlowkitError
from flowkit.testing import check_bijector
from flowkit_audio.features import MelConfig, log_mel
from flowkit_audio.pitch.melflow import MelFlow, MelFlowConfig
from flowkit_audio.pitch.run import edit_files, load, train
from flowkit_audio.pitch.training import held_out_nll


@pytest.fixture(scope="module")
def pitch_run(tmp_path_factory, fsdd_subset):
    out = tmp_path_factory.mktemp("pitch") / "run"
    report = train(str(fsdd_subset), out, steps=120, progress=False)
    return out, report


@pytest.fixture(scope="module")
def held_out_folder(tmp_path_factory, fsdd_folder):
    import shutil

    folder = tmp_path_factory.mktemp("theo")
    for path in sorted(fsdd_folder.glob("*_theo_1[12].wav")):  # two takes of every digit, unseen in training
        shutil.copy(path, folder / path.name)
    return folder


def test_mel_flow_conforms_and_inverts_real_log_mels_exactly(fsdd_held_out):
    config = MelFlowConfig(n_mels=6, levels=2, depth=1, width=8)
    check_bijector(MelFlow(config).bijector, torch.randn(3, 6, 8), factory=lambda: MelFlow(config).bijector)
    flow = MelFlow(MelFlowConfig())
    mels = [log_mel(c.audio[None], MelConfig())[0] for c in fsdd_held_out[:8]]
    flow.fit_standardisation(mels)
    g = torch.Generator().manual_seed(0)
    x, length = flow.pad(flow.standardise(mels[0])[None])
    assert x.shape[-1] % 4 == 0 and x.shape[-1] - length < 4
    batch = torch.stack([flow.pad(flow.standardise(m))[0][:, :32] for m in mels])
    flow(batch)  # ActNorm init
    optimiser = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for _ in range(20):  # trained-like weights: couplings and priors away from their identity init
        loss = -flow.log_prob(batch + 0.05 * torch.randn(batch.shape, generator=g)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    flow.eval()
    with torch.no_grad():
        z = flow.encode(x)
        assert (flow.decode(z) - x).abs().max() < 1e-4


def test_training_lowers_held_out_nll_and_stores_the_calibration(pitch_run, fsdd_held_out):
    out, report = pitch_run
    editor = load(out)
    untrained = MelFlow(MelFlowConfig())
    untrained.load_state_dict({k: v for k, v in editor.flow.state_dict().items() if k in ("mean", "std")},
                              strict=False)
    mels = [log_mel(c.audio[None], MelConfig())[0] for c in fsdd_held_out]
    torch.manual_seed(0)
    untrained(untrained.pad(untrained.standardise(mels[0])[None])[0])  # ActNorm init
    assert report["held_out_nll"] < held_out_nll(untrained, mels) - 0.2
    curve = editor.flow.get_buffer("calibration_semitones")
    assert (curve.diff() >= 0).all() and curve[0] < -2 < 2 < curve[-1]  # monotone, spans +-2 semitones
    assert editor.direction.shape == (80, 1)
    assert json.loads((out / "pitch.json").read_text())["calibration"]["clips"] == 32


@pytest.mark.parametrize("requested", [-2.0, 2.0])
def test_calibrated_edits_move_the_measured_f0_of_held_out_speech(tmp_path, pitch_run, held_out_folder, requested):
    out, _ = pitch_run
    result = edit_files(out, held_out_folder, tmp_path / "edited", semitones_wanted=requested)
    changes = [f["semitones_vs_resynthesis"] for f in result["files"] if f["semitones_vs_resynthesis"] is not None]
    assert len(changes) >= 15
    assert np.sign(np.median(changes)) == np.sign(requested)
    assert np.mean(np.sign(changes) == np.sign(requested)) >= 0.7  # most clips move the requested way
    assert len(list((tmp_path / "edited").glob("*.wav"))) == len(result["files"]) == 20
    assert len(list((tmp_path / "edited").glob("*.png"))) == 20


def test_requests_outside_the_calibrated_range_are_refused(tmp_path, pitch_run, held_out_folder):
    out, _ = pitch_run
    with pytest.raises(FlowkitError, match="calibrated pitch range"):
        edit_files(out, held_out_folder, tmp_path / "x", semitones_wanted=40.0)
    with pytest.raises(FlowkitError, match="exactly one of"):
        edit_files(out, held_out_folder, tmp_path / "x", semitones_wanted=1.0, alpha=1.0)


def test_the_standardisation_needs_frames():
    flow = MelFlow(MelFlowConfig(n_mels=8, levels=2, depth=1, width=8))
    for frames in ([], [torch.randn(8, 1)]):
        with pytest.raises(FlowkitError, match="at least 2 frames"):
            flow.fit_standardisation(frames)
    flow.fit_standardisation([torch.randn(8, 1), torch.randn(8, 3)])
    assert (flow.std > 0).all()
