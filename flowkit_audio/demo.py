"""``flowkit audio demo [--preset speech|notes]``: the audio models on embedded samples,
in a few CPU minutes, with every artefact written to one folder.

:func:`run` (speech) trains the ``cpu`` WaveGlow, the log-mel pitch flow and the ``speech-relative`` pitch
flow on four speakers, then, on the fifth (held out): copy synthesis through the vocoder
beside Griffin-Lim from the same mel, and pitch edits of -2 and +2 semitones by both
pitch flows (the log-mel one's clipped to the range it calibrated: a model trained for
seconds may not reach both). Writes WAVs, spectrogram PNGs and ``summary.json`` to the
output folder.

:func:`run_notes` trains the notes flow for the minutes given on 48 notes of five
instruments, then on the 12 held-out notes: edits of -4, -2, +2 and +4 semitones (WAVs,
spectrogram PNGs and Praat's F0 in and out), a ladder picture of one note from -4 to +4,
and a cello note moved towards violin along the timbre direction, its file named for the
instrument a recogniser fitted on the training notes hears.
Writes ``summary.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from flowkit.files import write_json
from flowkit.train import DEMO_ADVICE, prepare_run_folder

from .data import demo_clips, write_wav
from .features import griffin_lim, log_mel
from .pitch import run as pitch_run
from .pitch.notes import demo_notes, note_label
from .pitch.recogniser import InstrumentRecogniser
from .plots import save_note_spectrograms
from .vocoder import run as vocoder_run
from .vocoder.run import log_spectral_distance

__all__ = ["run", "run_notes"]

EXAMPLES = 4
NOTE_REQUESTS = (-4, -2, 2, 4)


def _edit_rows(edits: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each demo edit asked, what was applied (a request beyond what the model
    calibrated is clipped to its range) and what Praat measured (median over the clips)."""
    return {key: {"requested_semitones": float(key), "applied_semitones": round(result["requested_semitones"], 3),
                  "clipped_to_the_calibrated_range": abs(result["requested_semitones"] - float(key)) > 1e-9,
                  "alpha": result["alpha"], "measured_median_semitones": result["median_semitones_vs_resynthesis"]}
            for key, result in edits.items()}


def run(out: str | Path = "out/audio-demo", vocoder_minutes: float = 3.0, pitch_minutes: float = 1.0,
        overwrite: bool = False, progress: bool = True, steps: int | None = None) -> dict[str, Any]:
    """Train (each model for its preset's steps or the minutes given, whichever ends first),
    synthesise, edit; returns the summary written to ``out/summary.json``. The minutes bound
    each training; the pitch runs' analysis and calibration, the synthesis and the edits
    come on top, and the summary's ``seconds`` gives every part's wall time."""
    started = time.monotonic()
    out = Path(out)
    for run_folder in (out / "vocoder", out / "pitch", out / "speech_relative"):
        prepare_run_folder(run_folder, resume=False, overwrite=overwrite, advice=DEMO_ADVICE)
    examples = out / "held_out"
    examples.mkdir(parents=True, exist_ok=True)
    clips = demo_clips("test")[::10][:EXAMPLES]  # one take of different digits by the held-out speaker
    for clip in clips:
        write_wav(examples / f"{clip.name}.wav", clip.audio, clip.sample_rate)
    vocoder_metrics = vocoder_run.train("demo", out / "vocoder", "cpu", steps=steps, minutes=vocoder_minutes,
                                        progress=progress)
    vocoder_seconds = round(time.monotonic() - started, 1)
    pitch_report = pitch_run.train("demo", out / "pitch", "speech", steps=steps, minutes=pitch_minutes,
                                   progress=progress)
    relative_report = pitch_run.train("demo", out / "speech_relative", "speech-relative", steps=steps,
                                      minutes=pitch_minutes, progress=progress)
    vocoded = vocoder_run.vocode_files(out / "vocoder", examples, out / "vocoded")
    vocoder = vocoder_run.load(out / "vocoder")
    gl_folder = out / "griffin_lim"
    gl_folder.mkdir(exist_ok=True)
    gl_distance = []
    for clip in clips:
        gl = griffin_lim(log_mel(clip.audio[None], vocoder.config.mel), vocoder.config.mel)[0]
        write_wav(gl_folder / f"{clip.name}.wav", gl, clip.sample_rate)
        gl_distance.append(log_spectral_distance(clip.audio, gl))
    # A model trained for seconds may not have calibrated the full +-2 semitones: ask for what it reaches.
    low, high = pitch_run.load(out / "pitch").calibrated_range
    edits = {f"{s:+d}": pitch_run.edit_files(out / "pitch", examples, out / f"pitch_{s:+d}",
                                             semitones_wanted=min(max(float(s), low), high))
             for s in (-2, 2)}
    relative_low, relative_high = pitch_run.load(out / "speech_relative").calibrated_range
    relative_edits = {f"{s:+d}": pitch_run.edit_files(out / "speech_relative", examples,
                                                      out / f"speech_relative_{s:+d}",
                                                      semitones_wanted=min(max(float(s), relative_low), relative_high))
                      for s in (-2, 2)}
    summary = {
        "vocoder": {"steps": vocoder_metrics.get("step"),
                    "held_out_nll_nats_per_sample": vocoder_metrics.get("eval_nll"),
                    "log_spectral_distance_db": vocoded["mean"]["log_spectral_distance_db"],
                    "griffin_lim_log_spectral_distance_db": round(sum(gl_distance) / len(gl_distance), 3),
                    "real_time_factor": vocoded["mean"]["real_time_factor"]},
        "pitch": {"steps": pitch_report["steps"], "held_out_nll_nats_per_dim": pitch_report["held_out_nll"],
                  "calibrated_range_semitones": [round(low, 2), round(high, 2)], "edits": _edit_rows(edits)},
        "speech_relative": {"steps": relative_report["steps"],
                            "held_out_nll_nats_per_dim": relative_report["held_out_nll"],
                            "calibrated_range_semitones": [round(relative_low, 2), round(relative_high, 2)],
                            "edits": _edit_rows(relative_edits)},
    }
    summary["seconds"] = {"vocoder": vocoder_seconds, "pitch": pitch_report["seconds"],
                          "speech_relative": relative_report["seconds"], "total": round(time.monotonic() - started, 1)}
    result = {"summary": summary, "vocode": vocoded, "pitch_training": pitch_report, "edits": edits,
              "speech_relative_training": relative_report, "speech_relative_edits": relative_edits}
    write_json(out / "summary.json", result)
    return result


def run_notes(out: str | Path = "out/notes-demo", minutes: float = 1.0, overwrite: bool = False, progress: bool = True,
        steps: int | None = None) -> dict[str, Any]:
    """Train, edit, write every artefact; returns the summary written to ``out/summary.json``.
    ``minutes`` bounds the training; the summary's ``seconds`` gives every part's wall time."""
    started = time.monotonic()
    out = Path(out)
    prepare_run_folder(out / "notes", resume=False, overwrite=overwrite, advice=DEMO_ADVICE)
    examples = out / "held_out"
    examples.mkdir(parents=True, exist_ok=True)
    held_out = demo_notes("test")
    for clip in held_out:
        write_wav(examples / f"{clip.name}.wav", clip.audio, clip.sample_rate)
    report = pitch_run.train("demo", out / "notes", "notes", steps=steps, minutes=minutes, progress=progress)
    editor = pitch_run.load(out / "notes")
    low, high = editor.calibrated_range
    edits = {f"{s:+d}": pitch_run.edit_files(out / "notes", examples, out / f"pitch_{s:+d}",
                                             semitones_wanted=min(max(float(s), low), high))
             for s in NOTE_REQUESTS}
    ladder_note = next(c for c in held_out if note_label(c.name)[0] == "violin")
    features, _ = editor.spectrum.analyse(ladder_note.audio)
    steps_st = [-4, -2, 0, 2, 4]
    ladder = editor.edit(features, [editor.alpha_for(s) for s in steps_st])
    save_note_spectrograms(out / "ladder.png", [editor.synthesise(f) for f in ladder],
                           [f"{ladder_note.name} {s:+d}" for s in steps_st], editor.spectrum.sample_rate)
    cello = next(c for c in held_out if note_label(c.name)[0] == "cello")
    features, _ = editor.spectrum.analyse(cello.audio)
    as_violin = editor.synthesise(editor.edit(features, 1.0, editor.timbre_direction("cello", "violin")))
    timbre = _heard(as_violin, held_out, editor.spectrum.sample_rate)
    name = f"{cello.name}_to_violin_heard_as_{timbre['heard_as']}"  # what the recogniser hears, not the request
    (out / "timbre").mkdir(exist_ok=True)
    write_wav(out / "timbre" / f"{name}.wav", as_violin, editor.spectrum.sample_rate)
    save_note_spectrograms(out / "timbre" / f"{name}.png", [cello.audio, as_violin],
                           [cello.name, f"cello -> violin, heard as {timbre['heard_as']}"], editor.spectrum.sample_rate)
    summary = {
        "steps": report["steps"], "held_out_nll_nats_per_dim": report["held_out_nll"],
        "semitones_per_unit": report["calibration"]["semitones_per_unit"],
        "calibrated_range_semitones": [round(low, 2), round(high, 2)],
        "edits": _edit_rows(edits),
        "timbre": {"requested": "cello -> violin", "file": f"timbre/{name}.wav", **timbre},
        "held_out_notes": len(held_out),
        "seconds": {**report["seconds"], "total": round(time.monotonic() - started, 1)},
    }
    result = {"summary": summary, "training": report, "edits": edits,
              "timbre": {"note": cello.name, "direction": "cello -> violin", "alpha": 1.0, **timbre},
              "ladder": {"note": ladder_note.name, "semitones": steps_st},
              "median_abs_error_semitones": _median_error(edits)}
    write_json(out / "summary.json", result)
    return result


def _heard(audio, held_out, sample_rate: int) -> dict[str, Any]:
    """The instrument a recogniser fitted on the demo's training notes hears in ``audio``,
    and how often it names the held-out originals right (its yardstick)."""
    train = demo_notes("train")
    recogniser = InstrumentRecogniser.fit([c.audio for c in train], [note_label(c.name)[0] for c in train],
                                          sample_rate)
    accuracy = recogniser.accuracy([c.audio for c in held_out], [note_label(c.name)[0] for c in held_out])
    return {"heard_as": recogniser.predict([audio])[0],
            "recogniser_accuracy_on_held_out_originals": round(accuracy, 3)}


def _median_error(edits: dict[str, dict[str, Any]]) -> float | None:
    errors = [abs(row["semitones_vs_resynthesis"] - float(key)) for key, result in edits.items()
              for row in result["files"] if row["semitones_vs_resynthesis"] is not None]
    return round(float(np.median(errors)), 3) if errors else None
