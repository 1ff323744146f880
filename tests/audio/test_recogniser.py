"""The demo's instrument recogniser (flowkit_audio.pitch.recogniser) on real notes."""

import pytest
import torch

from flowkit.errors import DataError
from flowkit_audio.data import load_clips
from flowkit_audio.pitch.notes import note_label, split_notes
from flowkit_audio.pitch.recogniser import InstrumentRecogniser
from tests.conftest import require_data

INSTRUMENTS = ("cello", "flute", "piano", "trumpet", "violin", "xylophone")


def test_it_names_held_out_notes_far_above_chance():
    folder = require_data("notes")
    clips = [c for c in load_clips(folder, 16000) if note_label(c.name)[0] in INSTRUMENTS]
    train, held_out = split_notes(clips)
    recogniser = InstrumentRecogniser.fit([c.audio for c in train], [note_label(c.name)[0] for c in train], 16000)
    labels = [note_label(c.name)[0] for c in held_out]
    assert recogniser.accuracy([c.audio for c in held_out], labels) >= 0.45  # chance: 1 in 6
    wrong = [INSTRUMENTS[(INSTRUMENTS.index(label) + 1) % len(INSTRUMENTS)] for label in labels]
    assert recogniser.accuracy([c.audio for c in held_out], wrong) < 0.3  # every note called another instrument


def test_bad_input_gets_one_clear_error():
    tone = torch.sin(torch.arange(16000) / 10.0)
    with pytest.raises(DataError, match="two instruments"):
        InstrumentRecogniser.fit([tone, tone], ["cello", "cello"], 16000)
    recogniser = InstrumentRecogniser.fit([tone, -tone, tone * 0.5, torch.sign(tone)], ["a", "a", "b", "b"], 16000)
    with pytest.raises(DataError, match="finite mono"):
        recogniser.predict([torch.full((16000,), float("nan"))])
