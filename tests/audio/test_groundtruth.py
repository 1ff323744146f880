"""The ground-truth measure of a transposition (flowkit_audio.pitch.groundtruth) on real
instrument notes: an edit is judged against the same instrument's real note D semitones away."""

import librosa
import numpy as np
import pytest
import torch

from flowkit.errors import DataError
from flowkit_audio.data import load_clips
from flowkit_audio.pitch.groundtruth import average_log_mel, spectral_distance_db, transposition_pairs
from flowkit_audio.pitch.notes import note_label, split_notes
from tests.conftest import require_data

RATE = 16000


@pytest.fixture(scope="module")
def notes():
    return load_clips(require_data("notes"), RATE)


@pytest.fixture(scope="module")
def cellos(notes):
    return [c for c in notes if c.name.startswith("cello_")]


def test_the_distance_ignores_loudness_and_is_symmetric(cellos):
    a, b = cellos[0].audio, cellos[3].audio
    assert spectral_distance_db(a, a, RATE) == 0.0
    assert spectral_distance_db(a, 0.3 * a, RATE) < 0.05  # each spectrum minus its own mean
    assert spectral_distance_db(a, b, RATE) == pytest.approx(spectral_distance_db(b, a, RATE))
    assert spectral_distance_db(a, b, RATE) > 3


def test_the_distance_grows_with_the_interval_between_two_tones():
    t = torch.arange(2 * RATE) / RATE

    def tone(midi):  # a harmonic tone: three partials
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        return sum(torch.sin(2 * torch.pi * h * f0 * t) / h for h in (1, 2, 3))

    distances = [spectral_distance_db(tone(60), tone(60 + d), RATE) for d in (0, 1, 4)]
    assert distances[0] == 0.0 < distances[1] < distances[2]


def test_only_the_loud_frames_count():
    note = torch.cat([torch.sin(2 * torch.pi * 440 * torch.arange(RATE) / RATE), torch.zeros(RATE)])
    noise_tail = note.clone()
    noise_tail[RATE:] = 1e-3 * torch.randn(RATE, generator=torch.Generator().manual_seed(0))  # 60 dB down
    assert spectral_distance_db(note, noise_tail, RATE) < 0.5
    louder_tail = note.clone()
    louder_tail[RATE:] = 0.3 * torch.randn(RATE, generator=torch.Generator().manual_seed(0))  # within 30 dB
    assert spectral_distance_db(note, louder_tail, RATE) > 3


def test_a_real_shift_lands_nearer_the_real_neighbour_than_the_input(cellos):
    labels = [note_label(c.name) for c in cellos]
    pairs = transposition_pairs(labels, labels)[::3]
    assert len(pairs) >= 10
    unedited, shifted = [], []
    for i, d, j in pairs:
        truth = cellos[j].audio
        unedited.append(spectral_distance_db(cellos[i].audio, truth, RATE))
        moved = librosa.effects.pitch_shift(cellos[i].audio.numpy(), sr=RATE, n_steps=d)
        shifted.append(spectral_distance_db(moved, truth, RATE))
    assert np.median(shifted) < 0.6 * np.median(unedited)  # pairs vary one by one; the median does not


def test_pairs_are_the_same_instrument_d_semitones_away_in_any_split(notes):
    clips = notes
    _, held_out = split_notes(clips)
    recorded = [note_label(c.name) for c in clips]
    pairs = transposition_pairs([note_label(c.name) for c in held_out], recorded)
    assert len(pairs) > 2 * len(held_out)
    for i, d, j in pairs:
        instrument, midi = note_label(held_out[i].name)
        assert recorded[j] == (instrument, midi + d) and 1 <= abs(d) <= 4
    assert transposition_pairs([("cello", 40)], [("cello", 40), ("violin", 42), ("cello", 45)]) == []


def test_bad_audio_gets_one_clear_error():
    with pytest.raises(DataError, match="16000 Hz"):
        average_log_mel(np.zeros(16000), 8000)
    with pytest.raises(DataError, match="NaN"):
        average_log_mel(np.full(16000, np.nan), RATE)
    with pytest.raises(DataError, match="mono"):
        average_log_mel(np.zeros((2, 16000)), RATE)
