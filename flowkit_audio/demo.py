"""``flowkit audio demo``: both audio models on the embedded FSDD sample, in a few CPU minutes.

Trains the ``cpu`` WaveGlow, the log-mel pitch flow and the ``speech-relative`` pitch
flow on four speakers, then, on the fifth (held out): copy synthesis through the vocoder
beside Griffin-Lim from the same mel, and pitch edits of -2 and +2 semitones by both
pitch flows (the log-mel one's clipped to the range it calibrated: a model trained for
seconds may not reach both). Writes WAVs, spectrogram PNGs and ``summary.json`` to the
output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowkit.train import prepare_run_folder

from .data import demo_clips, write_wav
from .features import griffin_lim, log_mel
from .notes import edit_note_files, train_notes
from .pitch import edit_files, load_pitch_model, train_pitch
from .vocoder import load_vocoder, log_spectral_distance, train_vocoder, vocode_files

EXAMPLES = 4


def run(out: str | Path = "out/audio-demo", vocoder_minutes: float = 3.0, pitch_minutes: float = 1.0,
        overwrite: bool = False, progress: bool = True, steps: int | None = None) -> dict[str, Any]:
    """Train (each model for its preset's steps or the minutes given, whichever ends first),
    synthesise, edit; returns the summary written to ``out/summary.json``."""
    out = Path(out)
    for run_folder in (out / "vocoder", out / "pitch", out / "speech_relative"):
        prepare_run_folder(run_folder, resume=False, overwrite=overwrite)
    examples = out / "held_out"
    examples.mkdir(parents=True, exist_ok=True)
    clips = demo_clips("test")[::10][:EXAMPLES]  # one take of different digits by the held-out speaker
    for clip in clips:
        write_wav(examples / f"{clip.name}.wav", clip.audio, clip.sample_rate)
    vocoder_metrics = train_vocoder("demo", out / "vocoder", "cpu", steps=steps, minutes=vocoder_minutes,
                                    progress=progress)
    pitch_report = train_pitch("demo", out / "pitch", steps=steps, minutes=pitch_minutes, progress=progress)
    relative_report = train_notes("demo", out / "speech_relative", steps=steps, minutes=pitch_minutes,
                                  progress=progress, preset="speech-relative")
    vocoded = vocode_files(out / "vocoder", examples, out / "vocoded")
    vocoder = load_vocoder(out / "vocoder")
    gl_folder = out / "griffin_lim"
    gl_folder.mkdir(exist_ok=True)
    gl_distance = []
    for clip in clips:
        gl = griffin_lim(log_mel(clip.audio[None], vocoder.config.mel), vocoder.config.mel)[0]
        write_wav(gl_folder / f"{clip.name}.wav", gl, clip.sample_rate)
        gl_distance.append(log_spectral_distance(clip.audio, gl))
    # A model trained for seconds may not have calibrated the full +-2 semitones: ask for what it reaches.
    low, high = load_pitch_model(out / "pitch").calibrated_range
    edits = {f"{s:+d}": edit_files(out / "pitch", examples, out / f"pitch_{s:+d}",
                                   semitones_wanted=min(max(float(s), low), high))
             for s in (-2, 2)}
    relative_edits = {f"{s:+d}": edit_note_files(out / "speech_relative", examples, out / f"speech_relative_{s:+d}",
                                                 semitones_wanted=float(s))
                      for s in (-2, 2)}
    summary = {
        "vocoder": {"steps": vocoder_metrics.get("step"), "held_out_nll_nats_per_sample": vocoder_metrics.get("eval_nll"),
                    "log_spectral_distance_db": vocoded["mean"]["log_spectral_distance_db"],
                    "griffin_lim_log_spectral_distance_db": round(sum(gl_distance) / len(gl_distance), 3),
                    "real_time_factor": vocoded["mean"]["real_time_factor"]},
        "pitch": {"steps": pitch_report["steps"], "held_out_nll_nats_per_dim": pitch_report["held_out_nll"],
                  "calibrated_range_semitones": [round(low, 2), round(high, 2)],
                  **{f"requested {k} semitones: median change": v["median_semitones_vs_resynthesis"]
                     for k, v in edits.items()}},
        "speech_relative": {"steps": relative_report["steps"],
                            "held_out_nll_nats_per_dim": relative_report["held_out_nll"],
                            **{f"requested {k} semitones: median change": v["median_semitones_vs_resynthesis"]
                               for k, v in relative_edits.items()}},
    }
    result = {"summary": summary, "vocode": vocoded, "pitch_training": pitch_report, "edits": edits,
              "speech_relative_training": relative_report, "speech_relative_edits": relative_edits}
    (out / "summary.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    return result
