"""Notes preset: calibrated transpositions of real instrument notes through a flow latent,
against ``librosa.effects.pitch_shift``, and a timbre (instrument) direction.

Data: the shared notes folder (359 notes of 20 instruments, 16 kHz, 2 s); every fifth
note of each instrument is held out (:func:`flowkit_audio.pitch.notes.split_notes`).

1. Training: the notes flow for ``--minutes`` on 2 threads; held-out NLL.
2. Pitch table: requested -4 .. +4 semitones on every held-out note; achieved change
   measured by Praat, searched within 8 semitones of the expected pitch (this keeps the
   tracker off octave errors, for both methods alike): median, 10th / 90th percentile and
   the share within 0.25 semitone; ours against the unedited resynthesis and against the
   input, librosa's against the input.
3. Instrument recogniser: scikit-learn logistic regression on MFCC statistics (librosa),
   trained on the training notes; accuracy on the held-out originals, on our unedited
   resynthesis, and after each transposition by us and by librosa.
4. Linearity over two octaves: requests -12 .. +12 in steps of 3 on held-out notes.
5. Timbre: held-out notes moved along instrument-to-instrument directions (cello ->
   violin and back, piano -> flute, trumpet -> saxophone): how far the note's mean
   spectrum (relative to its pitch) moved towards the target instrument's, what the
   recogniser then says, and how far the pitch moved.
6. The baseline that motivates the front-end: a log-mel flow (the speech preset's
   architecture at 16 kHz) trained for the same time, with the same within-instrument
   MIDI regression: achieved semitones at +-4.

    python -m benchmarks.notes                # about 20 minutes
    python -m benchmarks.notes --quick        # smoke run (the test suite)

Writes benchmarks/results/notes.json (or notes_quick.json), docs/images/notes_ladder.png
and docs/images/notes_timbre.png (not with --quick), and prints the tables.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import flowkit as fk
from benchmarks._common import RESULTS, options, table, write
from flowkit_audio.data import load_clips
from flowkit_audio.features import MelConfig, griffin_lim, log_mel, semitones
from flowkit_audio.pitch import run as pitch_run
from flowkit_audio.pitch.melflow import MelFlow, MelFlowConfig
from flowkit_audio.pitch.notes import measure_pitch, note_label, split_notes
from flowkit_audio.plots import save_note_spectrograms

NOTES = Path(__file__).resolve().parents[2] / "shared" / "data" / "notes"
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
RATE = 16000
REQUESTS = (-4, -3, -2, -1, 1, 2, 3, 4)
LINEARITY = (-12, -9, -6, -3, 3, 6, 9, 12)


def _mfcc(audio: np.ndarray) -> np.ndarray:
    import librosa

    mfcc = librosa.feature.mfcc(y=np.asarray(audio, dtype=np.float32), sr=RATE, n_mfcc=20, n_fft=1024,
                                hop_length=256, n_mels=64)
    return np.concatenate([mfcc.mean(1), mfcc.std(1)])


def recogniser(clips):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.stack([_mfcc(c.audio.numpy()) for c in clips])
    labels = [note_label(c.name)[0] for c in clips]
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.5)).fit(features, labels)


def accuracy(model, audios, labels) -> float:
    return round(float(np.mean(model.predict(np.stack([_mfcc(np.asarray(a)) for a in audios])) == np.array(labels))), 3)


def _summary(values: list[float], request: float) -> dict:
    v = np.array([x for x in values if not math.isnan(x)])
    if v.size == 0:
        return {"median": None}
    return {"median": round(float(np.median(v)), 3), "p10": round(float(np.percentile(v, 10)), 3),
            "p90": round(float(np.percentile(v, 90)), 3),
            "within_0.25": round(float(np.mean(np.abs(v - request) <= 0.25)), 3), "measured": int(v.size)}


def pitch_table(editor, held_out, instruments_model, requests) -> tuple[list[dict], dict, dict]:
    import librosa

    labels = [note_label(c.name)[0] for c in held_out]
    analysed = [editor.spectrum.analyse(c.audio) for c in held_out]
    alphas = [editor.alpha_for(float(s)) for s in requests]
    rows, resynth_audio, ours_by_request = [], [], {s: [] for s in requests}
    base_f0, input_f0 = [], []
    for clip, (features, info) in zip(held_out, analysed):
        edited = editor.edit(features, [0.0, *alphas])
        audio = [editor.synthesise(e) for e in edited]
        resynth_audio.append(audio[0].numpy())
        base_f0.append(measure_pitch(audio[0], RATE, info["pitch"]))
        input_f0.append(measure_pitch(clip.audio, RATE, info["pitch"]))
        for s, a in zip(requests, audio[1:]):
            ours_by_request[s].append((a, measure_pitch(a, RATE, info["pitch"] + s)))
    for s in requests:
        shifted = [librosa.effects.pitch_shift(c.audio.numpy(), sr=RATE, n_steps=float(s)) for c in held_out]
        librosa_f0 = [measure_pitch(torch.from_numpy(a), RATE, info["pitch"] + s) for a, (_, info) in
                      zip(shifted, analysed)]
        ours = ours_by_request[s]
        rows.append({
            "requested": s, "alpha": round(alphas[requests.index(s)], 3),
            "flowkit vs resynthesis": _summary([_st(b, f) for b, (_, f) in zip(base_f0, ours)], s),
            "flowkit vs input": _summary([_st(i, f) for i, (_, f) in zip(input_f0, ours)], s),
            "librosa vs input": _summary([_st(i, f) for i, f in zip(input_f0, librosa_f0)], s),
            "flowkit instrument accuracy": accuracy(instruments_model, [a.numpy() for a, _ in ours], labels),
            "librosa instrument accuracy": accuracy(instruments_model, shifted, labels),
        })
    reference = {"instrument accuracy on the held-out originals":
                 accuracy(instruments_model, [c.audio.numpy() for c in held_out], labels),
                 "instrument accuracy on the unedited resynthesis": accuracy(instruments_model, resynth_audio, labels),
                 "resynthesis pitch error (median |semitones| vs input)":
                 _nan_median(np.abs([_st(i, b) for i, b in zip(input_f0, base_f0)]))}
    return rows, reference, {"notes": len(held_out)}


def _nan_median(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return None if np.isnan(values).all() else round(float(np.nanmedian(values)), 3)


def _st(f_from: float, f_to: float) -> float:
    return math.nan if math.isnan(f_from) or math.isnan(f_to) else semitones(f_from, f_to)


def linearity(editor, held_out, requests) -> dict:
    changes = {s: [] for s in requests}
    for clip in held_out:
        features, info = editor.spectrum.analyse(clip.audio)
        edited = editor.edit(features, [0.0, *[editor.alpha_for(float(s)) for s in requests]])
        base = measure_pitch(editor.synthesise(edited[0]), RATE, info["pitch"])
        for s, e in zip(requests, edited[1:]):
            changes[s].append(_st(base, measure_pitch(editor.synthesise(e), RATE, info["pitch"] + s)))
    if any(np.isnan(changes[s]).all() for s in requests):
        return {"requested": list(requests), "achieved_median": None, "notes": len(held_out)}
    medians = [float(np.nanmedian(changes[s])) for s in requests]
    slope, intercept = np.polyfit(requests, medians, 1)
    fit = np.polyval([slope, intercept], requests)
    r2 = 1 - np.sum((np.array(medians) - fit) ** 2) / np.sum((np.array(medians) - np.mean(medians)) ** 2)
    return {"requested": list(requests), "achieved_median": [round(m, 3) for m in medians],
            "slope": round(float(slope), 4), "r2": round(float(r2), 5),
            "max_abs_error_semitones": round(float(np.max(np.abs(np.array(medians) - np.array(requests)))), 3),
            "notes": len(held_out)}


def timbre(editor, train, held_out, instruments_model, pairs, alpha: float = 1.0) -> list[dict]:
    rows = []
    for source, target in pairs:
        if source not in editor.instruments or target not in editor.instruments:
            continue
        clips = [c for c in held_out if note_label(c.name)[0] == source]
        target_spectrum = torch.stack([editor.spectrum.analyse(c.audio)[0][1:].mean(-1) for c in train
                                       if note_label(c.name)[0] == target]).mean(0)
        direction = editor.timbre_direction(source, target)
        before, after, moved, ratios = [], [], [], []
        for clip in clips:
            features, info = editor.spectrum.analyse(clip.audio)
            unedited, edited = editor.edit(features, [0.0, alpha], direction)
            base, out = editor.synthesise(unedited), editor.synthesise(edited)
            before.append(base.numpy())
            after.append(out.numpy())
            moved.append(_st(measure_pitch(base, RATE, info["pitch"]), measure_pitch(out, RATE, info["pitch"])))
            ratios.append(float((edited[1:].mean(-1) - target_spectrum).norm() /
                                (unedited[1:].mean(-1) - target_spectrum).norm()))
        predicted = instruments_model.predict(np.stack([_mfcc(a) for a in after]))
        names, counts = np.unique(predicted, return_counts=True)
        rows.append({"direction": f"{source} -> {target}", "alpha": alpha, "notes": len(clips),
                     "recognised as the target before": accuracy(instruments_model, before, [target] * len(clips)),
                     "recognised as the target after": accuracy(instruments_model, after, [target] * len(clips)),
                     "recognised as the source after": accuracy(instruments_model, after, [source] * len(clips)),
                     "most common label after": str(names[np.argmax(counts)]),
                     "distance to the target's mean spectrum (after / before, median)":
                     round(float(np.median(ratios)), 3),
                     "pitch moved (median |semitones|)": _nan_median(np.abs(moved))})
    return rows


def mel_baseline(train, held_out, seconds: float, requests=(-4, 4)) -> dict:
    """A log-mel flow with the same MIDI regression: the front-end this preset replaces."""
    torch.manual_seed(0)
    mel = MelConfig(RATE, 1024, 1024, 256, 80, 0.0, None)
    flow = MelFlow(MelFlowConfig(n_mels=80))
    frames = [log_mel(c.audio[None], mel)[0] for c in train]
    flow.fit_standardisation(frames)
    x = torch.stack([flow.pad(flow.standardise(f))[0] for f in frames])
    optimiser = torch.optim.Adam(flow.parameters(), 1e-3)
    generator, start, steps = torch.Generator().manual_seed(0), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        flow.train()
        batch = x[torch.randint(len(x), (16,), generator=generator)]
        offset = int(torch.randint(x.shape[-1] - 31, (1,), generator=generator))
        batch = batch[..., offset:offset + 32] + 0.05 * torch.randn(16, 80, 32, generator=generator)
        loss = (-flow.log_prob(batch) / batch[0].numel()).mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
        optimiser.step()
        steps += 1
    flow.eval()
    labels = [note_label(c.name) for c in train]
    direction = fk.regression_direction(flow, x, [m for _, m in labels], average_positions=True,
                                        groups=[i for i, _ in labels])
    changes = {s: [] for s in requests}
    for clip in held_out:
        pitch = note_label(clip.name)[1]
        z, length = flow.pad(flow.standardise(log_mel(clip.audio[None], mel)[0])[None])
        edited = fk.apply_direction(flow, z, direction, [0.0, *map(float, requests)])[:, 0, :, :length]
        audio = [griffin_lim(flow.unstandardise(e)[None], mel)[0] for e in edited]
        base = measure_pitch(audio[0], RATE, pitch)
        for s, a in zip(requests, audio[1:]):
            changes[s].append(_st(base, measure_pitch(a, RATE, pitch + s)))
    return {"steps": steps, "seconds": seconds,
            **{f"requested {s:+d}: achieved median": _nan_median(changes[s]) for s in requests}}


def pictures(editor, held_out) -> None:
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    note = next(c for c in held_out if c.name.startswith("violin_"))
    features, _ = editor.spectrum.analyse(note.audio)
    ladder = editor.edit(features, [editor.alpha_for(float(s)) for s in range(-4, 5)])
    save_note_spectrograms(DOCS_IMAGES / "notes_ladder.png", [editor.synthesise(f) for f in ladder[::2]],
                           [f"{note.name} {s:+d}" for s in range(-4, 5, 2)], RATE)
    cello = next(c for c in held_out if c.name.startswith("cello_"))
    features, _ = editor.spectrum.analyse(cello.audio)
    edited = editor.edit(features, [0.0, 1.0], editor.timbre_direction("cello", "violin"))
    save_note_spectrograms(DOCS_IMAGES / "notes_timbre.png",
                           [cello.audio, editor.synthesise(edited[0]), editor.synthesise(edited[1])],
                           [cello.name, "resynthesis", "cello -> violin"], RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of the notes flow")
    parser.add_argument("--baseline-minutes", type=float, default=4.0, help="training budget of the log-mel flow")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a few notes")
    parser.add_argument("--data", type=Path, default=NOTES)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    clips = load_clips(args.data, RATE)
    if args.quick:
        keep = {"cello", "violin", "flute"}
        clips = [c for c in clips if note_label(c.name) and note_label(c.name)[0] in keep]
    train, held_out = split_notes(clips)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = pitch_run.train(args.data if not args.quick else _subset(clips, Path(tmp) / "data"),
                                 Path(tmp) / "run", "notes", steps=30 if args.quick else None, minutes=args.minutes,
                                 progress=False, checkpoint_every=10**6)
        editor = pitch_run.load(Path(tmp) / "run")
    train_seconds = time.perf_counter() - start
    instruments = recogniser(train)
    evaluated = held_out[:6] if args.quick else held_out
    requests = (-2, 2) if args.quick else REQUESTS
    rows, reference, counts = pitch_table(editor, evaluated, instruments, requests)
    linear = linearity(editor, evaluated[:4] if args.quick else evaluated[::2], (-12, 12) if args.quick else LINEARITY)
    timbre_rows = timbre(editor, train, held_out, instruments,
                         [("cello", "violin"), ("violin", "cello"), ("piano", "flute"), ("trumpet", "saxophone")])
    baseline = mel_baseline(train, evaluated[:3] if args.quick else evaluated,
                            5.0 if args.quick else args.baseline_minutes * 60)
    if not args.quick:
        pictures(editor, held_out)
    payload = {"config": options(args),
               "data": {"train": f"{len(train)} notes of {len({note_label(c.name)[0] for c in train})} instruments",
                        "held_out": f"{len(held_out)} notes (every fifth of each instrument)"},
               "training": {"steps": report["steps"], "seconds": round(train_seconds, 1),
                            "held_out_nll": report["held_out_nll"],
                            "held_out_nll_at_start": report["held_out_nll_at_start"], "train_nll": report["train_nll"],
                            "calibration": report["calibration"]},
               "pitch": rows, "reference": reference, "evaluated": counts, "linearity": linear,
               "timbre": timbre_rows, "mel_baseline": baseline}
    path = write("notes_quick" if args.quick else "notes", payload, args.results)
    flat = [{"requested": r["requested"], "flowkit (vs resynth)": r["flowkit vs resynthesis"]["median"],
             "flowkit within 0.25": r["flowkit vs resynthesis"].get("within_0.25"),
             "librosa": r["librosa vs input"]["median"],
             "librosa within 0.25": r["librosa vs input"].get("within_0.25"),
             "flowkit instr.": r["flowkit instrument accuracy"], "librosa instr.": r["librosa instrument accuracy"]}
            for r in rows]
    print(table(flat, list(flat[0])))
    print(reference)
    print("linearity:", linear)
    print(table(timbre_rows, list(timbre_rows[0])) if timbre_rows else "no timbre pair")
    print("log-mel baseline:", baseline)
    print(f"wrote {path}")


def _subset(clips, folder: Path) -> Path:
    from flowkit_audio.data import write_wav

    folder.mkdir(parents=True)
    for clip in clips:
        write_wav(folder / f"{clip.name}.wav", clip.audio, clip.sample_rate)
    return folder


if __name__ == "__main__":
    main()
