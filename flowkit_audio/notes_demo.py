"""``flowkit audio demo --preset notes``: the notes flow on the embedded sample of notes.

Trains the notes flow for the minutes given on 48 notes of five instruments, then on the
12 held-out notes: edits of -4, -2, +2 and +4 semitones (WAVs, spectrogram PNGs and
Praat's F0 in and out), a ladder picture of one note from -4 to +4, and a cello note
played as a violin through the timbre direction. Writes ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flowkit.train import prepare_run_folder

from .data import write_wav
from .notes import demo_notes, edit_note_files, load_notes_model, note_label, train_notes
from .plots import save_note_spectrograms

REQUESTS = (-4, -2, 2, 4)


def run(out: str | Path = "out/notes-demo", minutes: float = 1.0, overwrite: bool = False, progress: bool = True,
        steps: int | None = None) -> dict[str, Any]:
    """Train, edit, write every artefact; returns the summary written to ``out/summary.json``."""
    out = Path(out)
    prepare_run_folder(out / "notes", resume=False, overwrite=overwrite)
    examples = out / "held_out"
    examples.mkdir(parents=True, exist_ok=True)
    held_out = demo_notes("test")
    for clip in held_out:
        write_wav(examples / f"{clip.name}.wav", clip.audio, clip.sample_rate)
    report = train_notes("demo", out / "notes", steps=steps, minutes=minutes, progress=progress)
    editor = load_notes_model(out / "notes")
    low, high = editor.calibrated_range
    edits = {f"{s:+d}": edit_note_files(out / "notes", examples, out / f"pitch_{s:+d}",
                                        semitones_wanted=min(max(float(s), low), high))
             for s in REQUESTS}
    ladder_note = next(c for c in held_out if note_label(c.name)[0] == "violin")
    features, _ = editor.spectrum.analyse(ladder_note.audio)
    steps_st = [-4, -2, 0, 2, 4]
    ladder = editor.edit(features, [editor.alpha_for(s) for s in steps_st])
    save_note_spectrograms(out / "ladder.png", [editor.synthesise(f) for f in ladder],
                           [f"{ladder_note.name} {s:+d}" for s in steps_st], editor.spectrum.sample_rate)
    cello = next(c for c in held_out if note_label(c.name)[0] == "cello")
    features, _ = editor.spectrum.analyse(cello.audio)
    as_violin = editor.synthesise(editor.edit(features, 1.0, editor.timbre_direction("cello", "violin")))
    (out / "timbre").mkdir(exist_ok=True)
    write_wav(out / "timbre" / f"{cello.name}_as_violin.wav", as_violin, editor.spectrum.sample_rate)
    save_note_spectrograms(out / "timbre" / f"{cello.name}_as_violin.png", [cello.audio, as_violin],
                           [cello.name, "cello -> violin"], editor.spectrum.sample_rate)
    summary = {
        "steps": report["steps"], "held_out_nll_nats_per_dim": report["held_out_nll"],
        "semitones_per_unit": report["calibration"]["semitones_per_unit"],
        "calibrated_range_semitones": [round(low, 2), round(high, 2)],
        **{f"requested {k} semitones: median change (Praat)": v["median_semitones_vs_resynthesis"]
           for k, v in edits.items()},
        "held_out_notes": len(held_out),
    }
    result = {"summary": summary, "training": report, "edits": edits,
              "timbre": {"note": cello.name, "direction": "cello -> violin", "alpha": 1.0},
              "ladder": {"note": ladder_note.name, "semitones": steps_st},
              "median_abs_error_semitones": _median_error(edits)}
    (out / "summary.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    return result


def _median_error(edits: dict[str, dict[str, Any]]) -> float | None:
    errors = [abs(row["semitones_vs_resynthesis"] - float(key)) for key, result in edits.items()
              for row in result["files"] if row["semitones_vs_resynthesis"] is not None]
    return round(float(np.median(errors)), 3) if errors else None
