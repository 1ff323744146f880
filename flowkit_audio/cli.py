"""``flowkit audio ...``: the vocoder and pitch editing on the command line.

    flowkit audio train-vocoder --data FOLDER --out DIR [--preset P] [--steps N] [--minutes M] [--seed S] [--resume]
    flowkit audio vocode --checkpoint DIR --input WAV_OR_FOLDER --out FOLDER [--sigma S] [--json]
    flowkit audio train-pitch --data FOLDER --out DIR [--preset speech|speech-relative|notes] [--steps N]
                              [--minutes M] [--seed S] [--resume]
    flowkit audio edit-pitch --checkpoint DIR --input WAV_OR_FOLDER --out FOLDER (--semitones S | --alpha A)
                             [--vocoder DIR | --vocoder griffinlim] [--json]
    flowkit audio demo [--preset speech|notes]

Registering the commands imports nothing heavy: torchaudio, soundfile and Praat load when
a command runs, and a missing ``audio`` extra is reported in one line.
"""

from __future__ import annotations

import argparse
from typing import Any

from flowkit.cli import (
    add_training_flags,
    finite_float,
    json_line,
    non_negative_float,
    note_resumed,
    positive_float,
)
from flowkit.errors import FlowkitError

REQUIRED = {"torchaudio": "torchaudio", "soundfile": "soundfile", "parselmouth": "praat-parselmouth"}
PITCH_PRESETS = ["speech", "speech-relative", "notes"]  # pitch.run.PRESETS, named here without importing it
DEMO_PRESETS = ["speech", "notes"]
MAX_SIGMA = 4.0


def require_audio_extra() -> None:
    """Raise a one-line error naming the extra if an audio dependency is missing."""
    import importlib.util

    missing = [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise FlowkitError(f"the audio commands need {', '.join(missing)}: pip install 'flowkit[audio]'")


def sigma(text: str) -> float:
    """argparse type: a synthesis sigma from 0 to :data:`MAX_SIGMA`."""
    value = non_negative_float(text)
    if value > MAX_SIGMA:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SIGMA} (WaveGlow synthesises at 0.6; beyond a few "
                                         f"the output is noise), got {value:g}")
    return value


def _print(result: dict[str, Any], as_json: bool, summary: str) -> None:
    print(json_line(result) if as_json else summary)


def _train_vocoder(args: argparse.Namespace) -> None:
    require_audio_extra()
    from .vocoder import run as vocoder_run

    metrics = vocoder_run.train(args.data, args.out, args.preset, args.steps, args.minutes, args.seed, args.resume,
                                checkpoint_every=args.checkpoint_every)
    print(json_line({k: metrics[k] for k in ("step", "nll", "eval_nll") if k in metrics}))
    note_resumed(metrics)


def _vocode(args: argparse.Namespace) -> None:
    require_audio_extra()
    from .vocoder import run as vocoder_run

    result = vocoder_run.vocode_files(args.checkpoint, args.input, args.out, args.sigma, args.denoise)
    mean = result["mean"]
    _print(result, args.json, f"wrote {len(result['files'])} file(s) to {result['out']}: log-spectral distance "
                              f"{mean['log_spectral_distance_db']:.2f} dB, "
                              f"real-time factor {mean['real_time_factor']:.3f}")


def _train_pitch(args: argparse.Namespace) -> None:
    require_audio_extra()
    from .pitch import run as pitch_run

    report = pitch_run.train(args.data, args.out, args.preset, args.steps, args.minutes, args.seed, args.resume,
                             args.checkpoint_every)
    print(json_line({k: report[k] for k in ("steps", "held_out_nll", "train_nll", "seconds")}))
    note_resumed(report)


def _edit_pitch(args: argparse.Namespace) -> None:
    require_audio_extra()
    from .pitch import run as pitch_run

    vocoder = None if args.vocoder in (None, "griffinlim") else args.vocoder
    result = pitch_run.edit_files(args.checkpoint, args.input, args.out, args.semitones, args.alpha, vocoder)
    median = result["median_semitones_vs_resynthesis"]
    _print(result, args.json,
           f"wrote {len(result['files'])} file(s) to {result['out']} (alpha {result['alpha']:+.3f}); "
                              f"median F0 change {'n/a' if median is None else f'{median:+.2f} semitones'}")


def _demo(args: argparse.Namespace) -> None:
    require_audio_extra()
    from . import demo

    if args.preset == "notes":
        result = demo.run_notes(args.out or "out/notes-demo", args.pitch_minutes, overwrite=args.overwrite)
    else:
        result = demo.run(args.out or "out/audio-demo", args.vocoder_minutes, args.pitch_minutes,
                          overwrite=args.overwrite)
    print(json_line(result["summary"]))


def _training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="a folder of WAV files, or 'demo' (the embedded sample; the default "
                                                "for a new run, a resumed run reuses its own)")
    add_training_flags(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Entry point of the ``flowkit.plugins`` group: adds ``flowkit audio``."""
    from .vocoder.model import PRESETS  # torch only: torchaudio, soundfile and Praat load when a command runs

    audio = subparsers.add_parser("audio", help="WaveGlow vocoder and pitch editing",
                                  description="WaveGlow vocoder and pitch editing through a flow latent.")
    commands = audio.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("train-vocoder", help="train a WaveGlow vocoder")
    _training_flags(p)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help='vocoder size (cpu: trains in minutes on a CPU)')
    p.set_defaults(run=_train_vocoder)

    p = commands.add_parser("vocode", help="copy synthesis of WAV files through a trained vocoder")
    p.add_argument("--checkpoint", required=True, help="a vocoder run folder or its checkpoint/")
    p.add_argument("--input", required=True, help="a WAV file or a folder of them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sigma", type=sigma, default=0.6, help="synthesis sigma, 0 to 4 (WaveGlow: 0.6)")
    p.add_argument("--denoise", type=non_negative_float, default=0.0, help="denoiser strength (0.01-0.1)")
    p.add_argument("--json", action="store_true", help='print one JSON object')
    p.set_defaults(run=_vocode)

    p = commands.add_parser("train-pitch", help="train the pitch flow and calibrate its pitch direction")
    _training_flags(p)
    p.add_argument("--preset", default=None, choices=PITCH_PRESETS,
                   help="speech (default): log-mel flow, F0 direction (8 kHz); speech-relative: speech on the "
                        "notes' pitch-relative spectrum, F0 direction within speakers (8 kHz, edits within 0.1 "
                        "semitone); notes: instrument notes, MIDI direction (16 kHz). --minutes bounds the training; "
                        "the analysis before it and the calibration after it show progress, and their times are in "
                        "the report (seconds)")
    p.set_defaults(run=_train_pitch)

    p = commands.add_parser("edit-pitch", help="raise or lower the pitch of WAV files through the latent")
    p.add_argument("--checkpoint", required=True, help="a pitch run folder or its checkpoint/")
    p.add_argument("--input", required=True, help='a WAV file or a folder of them')
    p.add_argument("--out", required=True, help='output folder (never one holding the inputs)')
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument("--semitones", type=finite_float, help="calibrated change of F0")
    amount.add_argument("--alpha", type=finite_float, help="raw strength along the pitch direction")
    p.add_argument("--vocoder", default="griffinlim", help="a vocoder run folder, or 'griffinlim'")
    p.add_argument("--json", action="store_true", help='print one JSON object')
    p.set_defaults(run=_edit_pitch)

    p = commands.add_parser("demo", help="train on an embedded sample (FSDD speech, or notes) and write every artefact")
    p.add_argument("--preset", default="speech", choices=DEMO_PRESETS,
                   help="speech: vocoder and pitch flow on FSDD; notes: the notes flow on instrument notes")
    p.add_argument("--out", default=None, help="output folder (out/audio-demo, or out/notes-demo)")
    p.add_argument("--vocoder-minutes", type=positive_float, default=3.0, help='vocoder training budget')
    p.add_argument("--pitch-minutes", type=positive_float, default=1.0,
                   help='pitch-flow training budget (analysis and calibration come on top)')
    p.add_argument("--overwrite", action="store_true", help="replace runs already in --out")
    p.set_defaults(run=_demo)
