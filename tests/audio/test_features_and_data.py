"""The shared mel definition, F0 (Praat), WAV reading and writing, on real FSDD speech."""

import math

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowkit.errors import DataError
from flowkit_audio.data import demo_clips, load_clips, read_wav, split_clips, write_wav
from flowkit_audio.features import MelConfig, f0_hz, griffin_lim, log_mel, semitones


def test_log_mel_frames_and_floor():
    mel = MelConfig()
    audio = torch.zeros(2, 4096)
    frames = log_mel(audio, mel)
    assert frames.shape == (2, 80, 4096 // 64 + 1) and mel.frames(4096) == 65
    assert torch.allclose(frames, torch.full_like(frames, math.log(1e-5)))  # silence sits on the floor
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / 8000)[None]
    peak_bin = log_mel(tone, mel)[0, :, 10:-10].mean(-1).argmax()

    def slaney(f):  # linear to 1 kHz, logarithmic above
        return 3 * f / 200 if f < 1000 else 15 + 27 / math.log(6.4) * math.log(f / 1000)

    expected = slaney(1000) / slaney(4000) * (mel.n_mels + 1) - 1  # filter centres are evenly spaced in mel
    assert abs(int(peak_bin) - expected) <= 1


def test_f0_of_a_harmonic_tone_and_of_real_speech(fsdd_train):
    t = torch.arange(8000) / 8000
    tone = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 6))
    assert f0_hz(tone.numpy() * 0.3, 8000) == pytest.approx(150, abs=1)
    measured = [f0_hz(c.audio.numpy(), 8000) for c in fsdd_train[:40]]
    assert np.nanmedian(measured) == pytest.approx(115, abs=40)  # adult male voices
    assert math.isnan(f0_hz(np.zeros(4000), 8000))  # silence has no F0
    assert semitones(100, 200) == pytest.approx(12) and semitones(200, 100) == pytest.approx(-12)


def test_griffin_lim_recovers_the_pitch_of_real_speech(fsdd_held_out):
    mel = MelConfig()
    clip = fsdd_held_out[3]
    audio = griffin_lim(log_mel(clip.audio[None], mel), mel)[0]
    assert audio.shape[0] == (mel.frames(clip.audio.shape[0]) - 1) * 64
    assert abs(semitones(f0_hz(clip.audio.numpy(), 8000), f0_hz(audio.numpy(), 8000))) < 1.0


def test_wav_round_trip_resampling_and_stereo(tmp_path, fsdd_held_out):
    clip = fsdd_held_out[0]
    write_wav(tmp_path / "a.wav", clip.audio, 8000)
    again = read_wav(tmp_path / "a.wav", 8000)
    assert (again.audio - clip.audio).abs().max() <= 1 / 32768 + 1e-7 and not again.notes
    stereo = np.stack([clip.audio.numpy(), clip.audio.numpy()], axis=1)
    soundfile.write(tmp_path / "s.wav", stereo, 16000)
    mixed = read_wav(tmp_path / "s.wav", 8000)
    assert mixed.sample_rate == 8000 and abs(mixed.audio.shape[0] - clip.audio.shape[0] // 2) <= 1
    assert mixed.notes == ["mixed 2 channels down to mono", "resampled from 16000 Hz to 8000 Hz"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"RIFF\x00\x00garbage"), "not a readable audio file"),
    (lambda p: p.write_text("hello"), "not a readable audio file"),
    (lambda p: soundfile.write(p, np.zeros((0,), np.float32), 8000), "holds no audio samples"),
    (lambda p: soundfile.write(p, np.array([0.1, np.nan, 0.2], np.float32), 8000, subtype="FLOAT"), "NaN"),
])
def test_bad_audio_files_are_named(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(DataError, match=message) as error:
        read_wav(path, 8000)
    assert "bad.wav" in str(error.value)


def test_folders_and_outputs(tmp_path):
    with pytest.raises(DataError, match="no audio files"):
        load_clips(tmp_path, 8000)
    with pytest.raises(DataError, match="no such file"):
        load_clips(tmp_path / "missing.wav", 8000)
    with pytest.raises(DataError, match="must end in .wav"):
        write_wav(tmp_path / "x.mp3", torch.zeros(10), 8000)
    with pytest.raises(DataError, match="non-finite"):
        write_wav(tmp_path / "x.wav", torch.tensor([0.0, float("nan")]), 8000)


def test_embedded_sample_and_speaker_split(fsdd_subset):
    train, test = demo_clips("train"), demo_clips("test")
    assert len(train) == 320 and len(test) == 40
    assert {c.speaker for c in train} == {"george", "jackson", "lucas",
                                          "nicolas"} and {c.speaker for c in test} == {"theo"}
    kept, held = split_clips(str(fsdd_subset), 8000)
    assert {c.speaker for c in held} == {"theo"} and "theo" not in {c.speaker for c in kept}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096), st.booleans())
def test_wav_reader_survives_arbitrary_bytes(tmp_path_factory, data, with_header):
    path = tmp_path_factory.mktemp("fuzz") / "x.wav"
    path.write_bytes((b"RIFF\x24\x08\x00\x00WAVEfmt " if with_header else b"") + data)
    try:
        clip = read_wav(path, 8000)
    except DataError:
        return  # the only acceptable failure: a clear DataError naming the file
    assert torch.isfinite(clip.audio).all() and clip.audio.abs().max() <= 1.0
