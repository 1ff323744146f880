r"""The ``notes`` preset: transposing isolated instrument notes through a flow latent,
calibrated in semitones, and instrument-to-instrument (timbre) directions.

1. Each note becomes :mod:`~flowkit_audio.pitch.notespec` features (its tracked pitch, its
   spectrum relative to that pitch) and a :class:`~flowkit_audio.pitch.noteflow.NoteFlow` is
   trained on them by maximum likelihood (no labels).
2. Directions come from labels when the file names carry them
   (``{instrument}_{midi}_{note}.wav``): the pitch direction is the within-instrument
   least-squares slope of the time-averaged latent on the MIDI number
   (:func:`flowkit.regression_direction` with ``groups``), so "violins play higher than
   cellos" does not leak into it; without labels the tracked pitch is the label. The
   timbre offset of each instrument is its mean latent outside the pitch coordinate (the
   spectrum's latent is conditioned on the pitch already), and ``timbre_direction(a, b)``
   is the difference of two offsets: ``a`` played as ``b`` at the same pitch.
3. Calibration: the training notes are edited at a grid of strengths and the decoded
   pitch channel (which the synthesis renders exactly) gives the median semitones per
   strength, a monotone curve inverted by interpolation; ``benchmarks/notes.py`` checks
   the result with Praat on the audio.

References:
    Kingma and Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. 2018.
    Boersma. Praat, a system for doing phonetics by computer (the pitch tracker).
"""

from __future__ import annotations

import io
import math
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

import flowkit as fk
from flowkit.config import check_model_size
from flowkit.errors import CheckpointError, DataError, FlowkitError, NonFiniteError
from flowkit.files import write_json
from flowkit.train import load_run, start_run

from ..data import Clip, load_clips, split_clips, write_wav
from ..features import f0_hz
from .editor import CalibratedEditor, add_calibration_buffers, hz_or_none, interval_or_none
from .noteflow import NoteFlow, NoteFlowConfig
from .notespec import NoteSpectrum, griffin_lim_notes, midi_to_hz, render_magnitude
from .training import calibration_stage, fit_frame_flow, held_out_nll, run_settings

__all__ = ["NoteEditor", "demo_notes", "load", "measure_pitch", "note_label", "split_notes", "train"]

NOTE_NAME = re.compile(r"^(?P<instrument>[a-z][a-z0-9-]*)_(?P<midi>\d{1,3})_(?P<note>[A-G]s?-?\d)$")
TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "batch_size": 16, "warmup_steps": 20, "ema_decay": None,
                  "grad_clip": 5.0, "steps": 1500, "log_every": 10, "checkpoint_every": 250, "eval_every": 250}
CALIBRATION_ALPHAS = (-24.0, -18.0, -12.0, -8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0, 12.0, 18.0, 24.0)
# speech (FSDD, 8 kHz) on the same pitch-relative front-end: the cpu vocoder's STFT (512 / 64), voices 60-400 Hz
SPEECH_SPECTRUM = NoteSpectrum(sample_rate=8000, n_fft=512, hop_length=64, bands_per_octave=24, octaves=7,
                               octaves_below=1, pitch_floor=60.0, pitch_ceiling=400.0, formant_lifter=30)
SPEECH_ALPHAS = (-8.0, -6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # a voice spans ~1 octave
PRESETS = ("notes", "speech-relative")
MAX_INSTRUMENTS = 64
TRACKER_MARGIN = 8.0  # semitones either side of the expected pitch when measuring F0


def note_label(name: str) -> tuple[str, int] | None:
    """``(instrument, midi)`` from a ``{instrument}_{midi}_{note}`` file name, else ``None``."""
    match = NOTE_NAME.match(name)
    return (match["instrument"], int(match["midi"])) if match else None


def split_notes(clips: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    """Training and held-out notes: every fifth note of each instrument (by MIDI number,
    from the third) is held out; without labelled names, every fifth clip."""
    labels = [note_label(c.name) for c in clips]
    if len(clips) < 2:
        raise DataError("need at least 2 notes (one to hold out)")
    if not all(labels):
        return [c for i, c in enumerate(clips) if i % 5 != 2], [c for i, c in enumerate(clips) if i % 5 == 2]
    held = set()
    for instrument in sorted({lab[0] for lab in labels}):
        members = sorted((lab[1], i) for i, lab in enumerate(labels) if lab[0] == instrument)
        held.update(i for _, i in members[2::5])
    if not held:
        held = {len(clips) - 1}
    return [c for i, c in enumerate(clips) if i not in held], [c for i, c in enumerate(clips) if i in held]


def demo_notes(split: str = "train") -> list[Clip]:
    """The embedded sample of notes (CC BY 3.0, tonejs-instruments; see assets/README.md)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    import soundfile

    raw = resources.files("flowkit_audio").joinpath("assets", "notes_demo.npz").read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        names = [str(n) for n in data["names"]]
        ends = np.cumsum(data["flac_lengths"])
        blobs = np.split(data["flac"], ends[:-1])
    clips = []
    for name, blob in zip(names, blobs):
        audio, rate = soundfile.read(io.BytesIO(blob.tobytes()), dtype="float32")
        clips.append(Clip(name, torch.from_numpy(audio), int(rate)))
    train, test = split_notes(clips)
    return train if split == "train" else test


def _load(data: str | os.PathLike | None, sample_rate: int, preset: str) -> tuple[list[Clip], list[Clip]]:
    if preset == "speech-relative":
        return split_clips(data, sample_rate)  # the embedded FSDD sample, or a folder with a speaker held out
    if data in (None, "demo"):
        return demo_notes("train"), demo_notes("test")
    return split_notes(load_clips(data, sample_rate))


class NoteEditor(CalibratedEditor):
    """A trained :class:`NoteFlow` with its pitch direction, calibration and timbre offsets.

    Example (with a trained run)::

        editor = flowkit_audio.pitch.run.load("out/notes")
        features, info = editor.spectrum.analyse(clip.audio)
        higher = editor.edit(features, editor.alpha_for(3.0))          # three semitones up
        violin = editor.edit(features, 1.0, editor.timbre_direction("cello", "violin"))
        audio = editor.synthesise(higher)
    """

    def __init__(self, flow: NoteFlow, spectrum: NoteSpectrum, instruments: list[str], vocoder: Any | None = None,
                 preset: str = "notes"):
        self.preset = preset
        self.flow = flow.eval()
        self.spectrum = spectrum
        self.instruments = instruments
        self.vocoder = vocoder

    @property
    def sample_rate(self) -> int:
        return self.spectrum.sample_rate

    def timbre_direction(self, source: str, target: str) -> Tensor:
        """The latent step from ``source``'s timbre to ``target``'s at the same pitch."""
        for name in (source, target):
            if name not in self.instruments:
                raise FlowkitError(f"unknown instrument {name!r}; this model knows {', '.join(self.instruments)}")
        offsets = self.flow.get_buffer("instrument_offsets")
        return offsets[self.instruments.index(target)] - offsets[self.instruments.index(source)]

    def transpose(self, features: Tensor, semitones_wanted: float | list[float]) -> Tensor:
        """Transfer to another pitch: encode the note under its own pitch, decode the same
        spectral latent under ``pitch + semitones_wanted``. The pitch coordinate of the
        latent is the standardised pitch itself, so this is exact in the pitch and leaves
        the spectrum to the flow's ``p(spectrum | pitch)``; no calibration is involved."""
        direction = torch.zeros_like(self.direction)
        direction[0] = 1.0 / self.flow.get_buffer("std")[0]
        return self.edit(features, semitones_wanted, direction)

    @torch.no_grad()
    def synthesise(self, features: Tensor, reference: Tensor | None = None) -> Tensor:
        """Audio ``(samples,)``: the spectrum rendered at the features' pitch, then
        Griffin-Lim, or the vocoder from that spectrum's log-mel frames. ``reference``: the
        unedited clip's features, whose formants a speech edit keeps
        (``NoteSpectrum.formant_lifter``)."""
        if self.vocoder is None:
            return griffin_lim_notes(features, self.spectrum, reference=reference)
        from ..features import mel_filterbank

        mel = self.vocoder.config.mel
        magnitude = render_magnitude(features, self.spectrum, reference).float()
        logmel = torch.log(torch.clamp(mel_filterbank(mel).T @ magnitude, min=mel.log_floor))
        return self.vocoder.infer(logmel[None, :, :-1], sigma=0.6)[0]

    @torch.no_grad()
    def edit_clip(self, clip: Clip, strength: float, out: Path) -> dict[str, Any]:
        """The notes' row: F0 measured by Praat around the note's tracked pitch (in, the
        unedited resynthesis, and out, around the pitch the edit moved it to)."""
        from ..plots import save_note_spectrograms

        rate = self.sample_rate
        features, info = self.spectrum.analyse(clip.audio)
        unedited, edited = self.edit(features, [0.0, strength])
        resynthesised, audio = self.synthesise(unedited, features), self.synthesise(edited, features)
        write_wav(out / f"{clip.name}.wav", audio, rate)
        moved = float(edited[0].median() - features[0].median())
        f0_in = measure_pitch(clip.audio, rate, info["pitch"])
        f0_resynth = measure_pitch(resynthesised, rate, info["pitch"])
        f0_out = measure_pitch(audio, rate, info["pitch"] + moved)
        save_note_spectrograms(out / f"{clip.name}.png", [clip.audio, audio],
                               ["input", f"edited ({moved:+.2f} semitones, alpha {strength:+.2f})"], rate)
        notes = clip.notes + ([] if info["tracked"] else ["no pitch found; the note was taken as C4"])
        return {"file": clip.name, "alpha": round(strength, 4), "pitch_midi": round(info["pitch"], 3),
                "f0_in_hz": hz_or_none(f0_in), "f0_resynthesised_hz": hz_or_none(f0_resynth),
                "f0_out_hz": hz_or_none(f0_out), "semitones_vs_input": interval_or_none(f0_in, f0_out),
                "semitones_vs_resynthesis": interval_or_none(f0_resynth, f0_out), "notes": notes}


def _labels(clips: list[Clip], infos: list[dict[str, Any]]) -> tuple[list[float], list[str], str]:
    """Pitch labels and the groups the direction is fitted within: instruments from
    ``{instrument}_{midi}_{note}`` names, speakers from FSDD names (the tracked pitch as the
    label: a speaker's higher and lower takes, not one voice against another), else one group."""
    labels = [note_label(c.name) for c in clips]
    if all(labels):
        return [float(lab[1]) for lab in labels], [lab[0] for lab in labels], "midi numbers in the file names"
    tracked = [float(i["pitch"]) for i in infos]
    if all(c.speaker for c in clips) and len({c.speaker for c in clips}) > 1:
        return tracked, [str(c.speaker) for c in clips], "tracked pitch within speakers (FSDD names)"
    return tracked, ["all"] * len(clips), "tracked pitch (no labelled file names)"


@torch.no_grad()
def fit_directions(flow: NoteFlow, features: list[Tensor], pitch: list[float],
                   instruments: list[str]) -> tuple[Tensor, list[str], Tensor]:
    """The within-instrument pitch slope ``(C, 1)``, the instrument names and their mean
    time-averaged latents ``(n, C, 1)`` with the pitch coordinate zeroed.

    The spectrum's latent is already "given the pitch" (the flow is conditioned on it), so
    the difference of two instruments' mean latents outside the pitch coordinate is the
    timbre difference at the note's own pitch. (A fixed-effects correction by the pitch
    slope extrapolates across pitch ranges that barely overlap, violin 55-96 against cello
    36-72, and decoded to changes unrelated to the instruments.)"""
    x = [flow.pad(flow.standardise(f))[0] for f in features]
    groups = instruments if len(set(instruments)) > 1 else None
    slope = fk.regression_direction(flow, x, pitch, average_positions=True, groups=groups)
    names = sorted(set(instruments))[:MAX_INSTRUMENTS]
    offsets = []
    with fk.evaluation_mode(flow):
        for name in names:
            members = [i for i, inst in enumerate(instruments) if inst == name]
            offsets.append(torch.stack([flow.encode(x[i][None])[0].mean(-1, keepdim=True) for i in members]).mean(0))
    offsets = torch.stack(offsets)
    offsets[:, 0] = 0.0  # the pitch coordinate: a timbre edit keeps the note
    return slope, names, offsets


def _decoded_pitch_changes(editor: NoteEditor, features: Tensor, alphas: tuple[float, ...]) -> np.ndarray:
    """The decoded pitch's median change at each strength; NaN where the edit leaves the
    range the flow decodes (a note at the edge of the training pitches pushed further out)."""
    try:
        edited = editor.edit(features, list(alphas))[:, 0]
        return (edited.median(-1).values - features[0].median()).numpy()
    except NonFiniteError:
        return np.array([_decoded_pitch_changes(editor, features, (a,))[0] if len(alphas) > 1 else np.nan
                         for a in alphas])


@torch.no_grad()
def calibrate(editor: NoteEditor, features: list[Tensor], alphas: tuple[float, ...] = CALIBRATION_ALPHAS,
              progress: bool = False) -> dict:
    """Median change of the decoded pitch (semitones) at each strength, made monotone; stored in buffers."""
    changes = np.array([_decoded_pitch_changes(editor, f, alphas)  # (notes, alphas)
                        for f in tqdm(features, desc="calibrate", disable=not progress, dynamic_ncols=True)])
    if np.isnan(changes).all(axis=0).any():
        raise DataError("pitch calibration: no note decodes at some strength; the direction is broken")
    medians = np.nanmedian(changes, axis=0)
    monotone = np.maximum.accumulate(medians)
    editor.flow.get_buffer("calibration_alphas").copy_(torch.tensor(alphas, dtype=torch.float64))
    editor.flow.get_buffer("calibration_semitones").copy_(torch.tensor(monotone))
    slope = float(np.polyfit(alphas, medians, 1)[0])
    return {"alphas": list(alphas), "median_semitones": [round(float(m), 3) for m in medians],
            "semitones_per_unit": round(slope, 4),
            "spread_semitones_at_max": round(float(np.nanstd(changes[:, -1])), 3), "notes": len(features),
            "undecodable_edits": int(np.isnan(changes).sum())}


def _with_buffers(flow: NoteFlow, n_instruments: int) -> NoteFlow:
    add_calibration_buffers(flow, CALIBRATION_ALPHAS)
    flow.register_buffer("instrument_offsets", torch.zeros(n_instruments, flow.config.channels, 1))
    return flow


def analyse_clips(clips: list[Clip], spectrum: NoteSpectrum,
                  progress: bool = False) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Features and pitch info of each clip (resampled to the front-end's rate by the reader)."""
    pairs = []
    for clip in tqdm(clips, desc="analyse", disable=not progress, dynamic_ncols=True):
        if clip.sample_rate != spectrum.sample_rate:
            raise DataError(f"{clip.name}: {clip.sample_rate} Hz audio for a {spectrum.sample_rate} Hz model")
        pairs.append(spectrum.analyse(clip.audio))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def train(data: str | os.PathLike | None = None, out: str | Path = "out/notes", steps: int | None = None,
          minutes: float | None = None, seed: int | None = None, resume: bool = False,
          checkpoint_every: int | None = None, spectrum: NoteSpectrum | None = None,
          config: NoteFlowConfig | None = None, progress: bool = True, preset: str = "notes",
          calibration_clips: int | None = None) -> dict[str, Any]:
    """Train the note flow, fit the pitch and timbre directions, calibrate; writes ``notes.json``.

    ``data``: a WAV folder (default: the embedded notes, or FSDD for ``"speech-relative"``).
    The calibration runs on about ``calibration_clips`` training clips spread over the set
    (default: every note for ``"notes"``, 64 clips for ``"speech-relative"``). ``minutes``
    bounds the training; the analysis before it and the calibration after it show
    progress, and the report gives each part's wall time (``seconds``).

    ``preset="speech-relative"``: the same front-end and flow on speech (:data:`SPEECH_SPECTRUM`,
    the embedded FSDD sample or a WAV folder with FSDD names, the direction fitted within
    speakers, strengths up to +-8)."""
    out = Path(out)
    started = time.monotonic()
    if preset not in PRESETS:
        raise FlowkitError(f"unknown notes preset {preset!r}; choose from {', '.join(PRESETS)}")
    saved = start_run(out, resume, "notes")
    if saved is not None:
        spectrum = NoteSpectrum.from_dict(saved["model"]["spectrum"])
        config = NoteFlowConfig.from_dict(saved["model"]["flow"])
        check_model_size(lambda: NoteFlow(config), f"the note flow in {out}")
        preset = saved["model"].get("preset", "notes")
    else:
        default = SPEECH_SPECTRUM if preset == "speech-relative" else NoteSpectrum()
        spectrum, config = spectrum or default, config or NoteFlowConfig()
    loop, data, resumed = run_settings(saved, TRAIN_DEFAULTS, data, steps=steps, max_minutes=minutes, seed=seed,
                                       checkpoint_every=checkpoint_every)
    config = NoteFlowConfig.from_dict({**config.to_dict(), "channels": spectrum.channels})
    train_clips, held_out = _load(data, spectrum.sample_rate, preset)
    features, infos = analyse_clips(train_clips, spectrum, progress)
    held_features, _ = analyse_clips(held_out, spectrum, progress)
    pitch, instruments, label_source = _labels(train_clips, infos)
    names = sorted(set(instruments))[:MAX_INSTRUMENTS]
    seconds = {"analysis": round(time.monotonic() - started, 1)}
    torch.manual_seed(loop.seed)
    flow = _with_buffers(NoteFlow(config), len(names))
    flow.fit_standardisation(features)
    start_nll = None if resume else held_out_nll(flow, held_features)
    trainer, metrics = fit_frame_flow(flow, features, held_features, loop, out, resume, progress,
                                      {"kind": "notes", "preset": preset, "spectrum": spectrum.to_dict(),
                                       "flow": config.to_dict(), "instruments": names}, {"data": data})
    seconds["training"] = round(time.monotonic() - started - seconds["analysis"], 1)
    with calibration_stage(trainer, seconds):
        slope, names, offsets = fit_directions(flow, features, pitch, instruments)
        flow.get_buffer("pitch_direction").copy_(slope)
        flow.get_buffer("instrument_offsets").copy_(offsets)
        if preset == "speech-relative":  # the decoded pitch moves linearly: 64 clips spread over the set pin the curve
            calibration_clips = calibration_clips or 64
        every = max(1, len(features) // calibration_clips) if calibration_clips else 1
        alphas = SPEECH_ALPHAS if preset == "speech-relative" else CALIBRATION_ALPHAS
        curve = calibrate(NoteEditor(flow, spectrum, names), features[::every], alphas, progress)
    report = {"preset": preset, "held_out_nll": metrics.get("eval_nll"), "held_out_nll_at_start": start_nll,
              "train_nll": metrics.get("nll"), "steps": trainer.step,
              "train_notes": len(train_clips), "held_out_notes": len(held_out), "labels": label_source,
              "instruments": names, "untracked_notes": sum(not i["tracked"] for i in infos), "calibration": curve,
              "seconds": seconds}
    if resumed is not None:
        report["resumed"] = resumed.to_dict()
    write_json(out / "notes.json", report)
    return report


def load(checkpoint: str | Path, vocoder: str | Path | None = None) -> NoteEditor:
    """A :class:`NoteEditor` from a notes run (folder or ``checkpoint/``); ``vocoder``: a
    vocoder run with the same STFT (``--preset notes``), or ``None`` / ``"griffinlim"``."""
    def build(saved: dict[str, Any]) -> tuple[NoteFlow, NoteSpectrum, list[str], str]:
        instruments = [str(n) for n in saved["instruments"]]
        flow = _with_buffers(NoteFlow(NoteFlowConfig.from_dict(saved["flow"])), len(instruments))
        return flow, NoteSpectrum.from_dict(saved["spectrum"]), instruments, str(saved.get("preset", "notes"))

    flow, spectrum, instruments, preset = load_run(checkpoint, "notes", build)
    synth = None
    if vocoder not in (None, "griffinlim"):
        from ..vocoder import run as vocoder_run

        synth = vocoder_run.load(vocoder, synthesis="bf16")
        mel = synth.config.mel
        if (mel.sample_rate, mel.n_fft, mel.win_length, mel.hop_length) != (
                spectrum.sample_rate, spectrum.n_fft, spectrum.n_fft, spectrum.hop_length):
            raise CheckpointError(f"the vocoder {vocoder} uses another STFT ({mel.sample_rate} Hz, {mel.n_fft}/"
                                  f"{mel.hop_length}) than the notes model ({spectrum.sample_rate} Hz, "
                                  f"{spectrum.n_fft}/{spectrum.hop_length}); train one with the same STFT "
                                  f"(--preset notes for notes, --preset cpu for speech-relative)")
    return NoteEditor(flow, spectrum, instruments, synth, preset)


def measure_pitch(audio: Tensor, sample_rate: int, expected: float, margin: float = TRACKER_MARGIN) -> float:
    """F0 in Hz (Praat) searched within ``margin`` semitones of ``expected`` (MIDI), which
    keeps the tracker off octave errors; NaN if no frame is voiced."""
    nyquist_midi = 69 + 12 * math.log2(sample_rate / 2 / 440)
    low, high = expected - margin, min(expected + margin, nyquist_midi - 0.5)
    if high <= low:
        return math.nan
    return f0_hz(audio.numpy(), sample_rate, float(midi_to_hz(low)), float(midi_to_hz(high)))
