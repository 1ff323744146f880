"""`flowkit audio demo` on a fresh machine: the embedded sample, every artefact, no data given."""

import json

import pytest

from flowkit.errors import FlowkitError
from flowkit_audio import demo


def test_demo_writes_every_artefact_and_never_replaces_a_run(tmp_path):
    result = demo.run(tmp_path / "demo", vocoder_minutes=0.5, pitch_minutes=0.5, progress=False, steps=5)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())["summary"]
    assert summary == result["summary"]
    low, high = summary["pitch"]["calibrated_range_semitones"]
    for key, wanted in (("-2", -2.0), ("+2", 2.0)):  # requests beyond the calibrated range are clipped to it
        assert result["edits"][key]["requested_semitones"] == pytest.approx(min(max(wanted, low), high), abs=0.01)
    assert {"log_spectral_distance_db", "griffin_lim_log_spectral_distance_db", "real_time_factor"} <= set(
        summary["vocoder"])
    for key, wanted in (("-2", -2.0), ("+2", 2.0)):  # the summary says what was asked, applied and measured
        row = summary["pitch"]["edits"][key]
        assert row["requested_semitones"] == wanted
        assert row["applied_semitones"] == pytest.approx(min(max(wanted, low), high), abs=1e-3)
        assert row["clipped_to_the_calibrated_range"] == (not low <= wanted <= high)
        assert row["measured_median_semitones"] == result["edits"][key]["median_semitones_vs_resynthesis"]
        change = summary["speech_relative"]["edits"][key]["measured_median_semitones"]
        assert change * wanted > 0 and abs(change) > 1.0, (key, change)  # 4 clips: Praat's misses move the median
    for folder in ("held_out", "vocoded", "griffin_lim", "pitch_-2", "pitch_+2", "speech_relative_-2",
                   "speech_relative_+2"):
        assert len(list((tmp_path / "demo" / folder).glob("*.wav"))) == demo.EXAMPLES, folder
    assert len(list((tmp_path / "demo" / "pitch_+2").glob("*.png"))) == demo.EXAMPLES
    with pytest.raises(FlowkitError, match="already holds a checkpoint"):
        demo.run(tmp_path / "demo", steps=1, progress=False)
