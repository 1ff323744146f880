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
from flowkit_audio.pitch.groundtruth import average_log_mel, spectral_distance_db, transposition_pairs
from flowkit_audio.pitch.melflow import MelFlow, MelFlowConfig
from flowkit_audio.pitch.notes import measure_pitch, note_label, split_notes
from flowkit_audio.plots import save_note_spectrograms

NOTES = Path(__file__).resolve().parents[2] / "shared" / "data" / "notes"
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
RATE = 16000
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


def _gaussian_slope(features: list[torch.Tensor]) -> torch.Tensor:
    """The whitening ablation's transposition: a Gaussian over (pitch, spectrum) frames of
    the training notes has E[spectrum | pitch] linear in the pitch, so encoding under one
    pitch and decoding under another adds the pooled least-squares slope times D."""
    frames = torch.cat(features, dim=1).double()
    pitch = frames[0] - frames[0].mean()
    return ((frames[1:] - frames[1:].mean(1, keepdim=True)) @ pitch / (pitch @ pitch)).float()


def edit_methods(editor, slope: torch.Tensor) -> dict:
    """Each row of the ground-truth table: ``(clip, features, D) -> audio``."""
    import librosa

    def shifted(features, d, spectrum_step=None):
        moved = features.clone()
        moved[0] += d
        if spectrum_step is not None:
            moved[1:] += spectrum_step[:, None] * d
        return editor.synthesise(moved)

    return {
        "unedited (the input)": lambda clip, f, d: clip.audio,
        "librosa pitch_shift": lambda clip, f, d: torch.from_numpy(
            librosa.effects.pitch_shift(clip.audio.numpy(), sr=RATE, n_steps=float(d))),
        "front-end alone (identity flow)": lambda clip, f, d: shifted(f, d),
        "Gaussian (whitening) transfer": lambda clip, f, d: shifted(f, d, slope),
        "flow: transfer to the new pitch": lambda clip, f, d: editor.synthesise(editor.transpose(f, float(d))),
        "flow: calibrated direction": lambda clip, f, d: editor.synthesise(editor.edit(f, editor.alpha_for(float(d)))),
    }


def ground_truth(editor, train, held_out, clips, instruments_model, train_features, max_semitones: int = 4,
                 training_pairs: int | None = None) -> dict:
    """Every held-out note transposed by every D in -4..4 for which the same instrument has
    a real note D semitones away (any split): each method's edit against that recording
    (:func:`~flowkit_audio.pitch.groundtruth.spectral_distance_db`), its pitch change
    (Praat, against the input) and the instrument the recogniser hears."""
    recorded = [note_label(c.name) for c in clips]
    pairs = transposition_pairs([note_label(c.name) for c in held_out], recorded, max_semitones)
    methods = edit_methods(editor, _gaussian_slope(train_features))
    rows = {name: {"distance": [], "change": [], "d": [], "audio": [], "label": []} for name in methods}
    analysed: dict[int, tuple] = {}
    for i, d, j in pairs:
        clip = held_out[i]
        if i not in analysed:
            features, info = editor.spectrum.analyse(clip.audio)
            analysed[i] = (features, info, measure_pitch(clip.audio, RATE, info["pitch"]))
        features, info, f0_in = analysed[i]
        for name, method in methods.items():
            audio = method(clip, features, d).float()
            row = rows[name]
            row["distance"].append(spectral_distance_db(audio.numpy(), clips[j].audio.numpy(), RATE))
            row["change"].append(_st(f0_in, measure_pitch(audio, RATE, info["pitch"] + d)))
            row["d"].append(d)
            row["audio"].append(audio.numpy())
            row["label"].append(recorded[j][0])
    table_rows = []
    for name, row in rows.items():
        distance, error = np.array(row["distance"]), np.abs(np.array(row["change"]) - np.array(row["d"]))
        table_rows.append({
            "method": name, "pairs": len(distance),
            "distance_db_median": round(float(np.median(distance)), 3),
            "distance_db_p25_p75": [round(float(np.percentile(distance, q)), 3) for q in (25, 75)],
            "distance_db_median_by_d": {str(d): round(float(np.median(distance[np.array(row["d"]) == d])), 3)
                                        for d in sorted(set(row["d"]))},
            "pitch_error_median": _nan_median(error),
            "pitch_within_0.25": round(float(np.mean(error[~np.isnan(error)] <= 0.25)), 3) if (~np.isnan(error)).any()
            else None,
            "pitch_unmeasured": int(np.isnan(error).sum()),
            "instrument_kept": accuracy(instruments_model, row["audio"], row["label"])})
    by_name = {r["method"]: r["distance_db_median"] for r in table_rows}
    librosa = by_name["librosa pitch_shift"]
    round_trip = [spectral_distance_db(editor.synthesise(f).numpy(), held_out[i].audio.numpy(), RATE)
                  for i, (f, _, _) in analysed.items()]
    return {"pairs": len(pairs), "notes": len(analysed), "rows": table_rows,
            "round_trip_db_median": round(float(np.median(round_trip)), 3),
            "flow_transfer_vs_librosa": round(by_name["flow: transfer to the new pitch"] / librosa, 3),
            "flow_transfer_vs_identity": round(by_name["flow: transfer to the new pitch"]
                                               / by_name["front-end alone (identity flow)"], 3),
            "headroom": correction_headroom(train, held_out, clips, pairs, max_semitones, training_pairs),
            "reference": {"instrument accuracy on the held-out originals":
                          accuracy(instruments_model, [c.audio.numpy() for c in held_out],
                                   [note_label(c.name)[0] for c in held_out])}}


def correction_headroom(train, held_out, clips, held_pairs, max_semitones: int = 4,
                        limit: int | None = None) -> dict:
    """How far any spectral correction of librosa's shift could go on this measure: each
    correction is fitted on the *training* notes' pairs (their real neighbours as targets)
    and applied to the held-out pairs' time-averaged spectra, so no audio rendering limits
    it. If none beats librosa, a pitch-conditioned model of the spectrum has little to add."""
    import librosa
    from scipy.fft import dct, idct

    recorded = [note_label(c.name) for c in clips]
    held_names = {c.name for c in held_out}
    train_pairs = [p for p in transposition_pairs([note_label(c.name) for c in train], recorded, max_semitones)
                   if clips[p[2]].name not in held_names][:limit]

    def spectra(notes, pairs):
        return [(average_log_mel(librosa.effects.pitch_shift(notes[i].audio.numpy(), sr=RATE, n_steps=float(d)), RATE),
                 average_log_mel(clips[j].audio.numpy(), RATE), average_log_mel(notes[i].audio.numpy(), RATE), d)
                for i, d, j in pairs]

    fit, test = spectra(train, train_pairs), spectra(held_out, held_pairs)
    residual = np.stack([target - shifted for shifted, target, _, _ in fit])

    def ridge_features(shifted, d):
        return np.concatenate([shifted, d * shifted, [d, 1.0]])

    design = np.stack([ridge_features(s, d) for s, _, _, d in fit])
    weights = np.linalg.solve(design.T @ design + 1000.0 * np.eye(design.shape[1]), design.T @ residual)

    def envelope(spectrum, coefficients=4):
        c = dct(spectrum, norm="ortho")
        c[coefficients:] = 0
        return idct(c, norm="ortho")

    corrections = {
        "librosa pitch_shift": lambda s, o, d: s,
        "+ the mean residual of the training pairs": lambda s, o, d: s + residual.mean(0),
        "+ ridge regression of the residual on (spectrum, D)": lambda s, o, d: s + ridge_features(s, d) @ weights,
        "+ the input's envelope kept (formant-preserving)": lambda s, o, d: s + envelope(o) - envelope(s),
    }
    return {"training_pairs": len(fit), "held_out_pairs": len(test),
            "distance_db_median": {name: round(float(np.median([np.sqrt(np.mean((fix(s, o, d) - t) ** 2))
                                                                for s, t, o, d in test])), 3)
                                   for name, fix in corrections.items()}}


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
    train_features = [editor.spectrum.analyse(c.audio)[0] for c in train]
    truth = ground_truth(editor, train, held_out[:3] if args.quick else held_out, clips, instruments, train_features,
                         max_semitones=2 if args.quick else 4, training_pairs=24 if args.quick else None)
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
               "ground_truth": truth, "linearity": linear,
               "timbre": timbre_rows, "mel_baseline": baseline}
    path = write("notes_quick" if args.quick else "notes", payload, args.results)
    columns = ["method", "pairs", "distance_db_median", "pitch_error_median", "pitch_within_0.25", "instrument_kept"]
    print(table(truth["rows"], columns))
    print({k: v for k, v in truth.items() if k != "rows"})
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
