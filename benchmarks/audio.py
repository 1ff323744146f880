"""Audio plug-in: WaveGlow synthesis speed, vocoder quality against Griffin-Lim, and the
pitch table against librosa's ``pitch_shift``, on real FSDD speech (speaker theo held out).

1. Speed: the paper-size WaveGlow (``waveglow`` preset, 256 channels, 87.9 M parameters,
   random weights as in the reference measurement), 1 s of 22.05 kHz audio, 2 threads:
   kHz synthesised and real-time factor, with weight normalisation folded, with the WaveNet
   conditioners in bfloat16, and compiled with ``--compile``. Reference: NVIDIA's code synthesises about 12.5 kHz here.
2. Quality: the ``cpu`` vocoder trained for ``--vocoder-minutes`` on four speakers, then
   copy synthesis of the fifth: log-spectral distance and narrow-band PESQ (``pesq``)
   against the originals, beside Griffin-Lim from the same mel.
3. Pitch: the mel flow trained for ``--pitch-steps``; requested -4 .. +4 semitones on
   held-out clips, achieved median change (Praat F0), and how often a spoken-digit
   recogniser (scikit-learn logistic regression on MFCC statistics, trained on the four
   training speakers) still names the digit, beside ``librosa.effects.pitch_shift``.

    python benchmarks/audio.py                 # about 20 minutes
    python benchmarks/audio.py --quick         # smoke run (the test suite)

Writes benchmarks/results/audio.json (or _quick.json) and prints the tables.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, options, table, write  # noqa: E402
from flowkit_audio.data import fsdd_clips  # noqa: E402
from flowkit_audio.features import MelConfig, f0_hz, griffin_lim, log_mel, semitones  # noqa: E402
from flowkit_audio.pitch import load_pitch_model, train_pitch  # noqa: E402
from flowkit_audio.vocoder import load_vocoder, log_spectral_distance, train_vocoder  # noqa: E402
from flowkit_audio.waveglow import WaveGlow, preset  # noqa: E402

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
TRAIN_SPEAKERS = {"george", "jackson", "lucas", "nicolas"}
REFERENCE_KHZ = 12.5


def speed(seconds: float, compile_too: bool) -> list[dict]:
    torch.manual_seed(0)
    model = WaveGlow(preset("waveglow")).eval()
    frames = int(seconds * 22050 / 256)
    mel = torch.randn(1, 80, frames)

    def measure(name: str, infer) -> dict:
        with torch.no_grad():
            infer(mel[..., :8])  # warm-up (and compile)
            start = time.perf_counter()
            audio = infer(mel)
            elapsed = time.perf_counter() - start
        khz = audio.shape[-1] / elapsed / 1000
        return {"model": "waveglow (87.9 M)", "mode": name, "audio_s": round(audio.shape[-1] / 22050, 2),
                "kHz": round(khz, 1), "real_time_factor": round(elapsed / (audio.shape[-1] / 22050), 2),
                "vs NVIDIA's 12.5 kHz": round(khz / REFERENCE_KHZ, 2)}

    rows = [measure("weight norm (as trained)", model.infer)]
    model.fold_weight_norm()
    rows.append(measure("weight norm folded", model.infer))
    model.bf16_synthesis()
    rows.append(measure("folded + bf16 conditioners", model.infer))
    if compile_too:
        rows.append(measure("folded + bf16 + torch.compile", torch.compile(model.infer)))
    return rows


def _pesq(reference: np.ndarray, degraded: np.ndarray) -> float:
    from pesq import pesq

    n = min(len(reference), len(degraded))
    try:
        return float(pesq(8000, reference[:n], degraded[:n], "nb"))
    except Exception:  # pesq refuses clips without speech activity
        return math.nan


def quality(run: Path, held_out, minutes: float, steps: int | None) -> tuple[list[dict], dict]:
    metrics = train_vocoder(str(run.parent / "fsdd4"), run, "cpu", steps=steps, minutes=minutes, progress=False)
    model = load_vocoder(run)
    rows = []
    for name, synth in (("WaveGlow cpu (sigma 0.6)", lambda a: model.vocode(a[None], 0.6)[0]),
                        ("Griffin-Lim (60 iterations)", lambda a: griffin_lim(log_mel(a[None], model.config.mel),
                                                                               model.config.mel)[0])):
        lsd, pesq_scores = [], []
        for clip in held_out:
            audio = synth(clip.audio)
            lsd.append(log_spectral_distance(clip.audio, audio))
            pesq_scores.append(_pesq(clip.audio.numpy(), audio.numpy()))
        rows.append({"synthesis": name, "clips": len(held_out), "log_spectral_distance_db": round(float(np.mean(lsd)), 2),
                     "pesq_nb": round(float(np.nanmean(pesq_scores)), 2)})
    return rows, {"steps": metrics.get("step"), "held_out_nll": metrics.get("eval_nll"), "minutes": minutes}


def _mfcc_features(audio: np.ndarray) -> np.ndarray:
    import librosa

    mfcc = librosa.feature.mfcc(y=audio.astype(np.float32), sr=8000, n_mfcc=20, n_fft=512, hop_length=128, n_mels=40)
    return np.concatenate([mfcc.mean(1), mfcc.std(1)])


def recogniser(train_clips):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.stack([_mfcc_features(c.audio.numpy()) for c in train_clips])
    labels = np.array([c.digit for c in train_clips])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features, labels)


def pitch_table(run: Path, train_clips, held_out, steps: int, requests) -> tuple[list[dict], dict]:
    import librosa

    report = train_pitch(str(run.parent / "fsdd4"), run, steps=steps, progress=False)
    editor = load_pitch_model(run)
    digits = recogniser(train_clips)
    labels = np.array([c.digit for c in held_out])
    mel = MelConfig()
    base = [log_mel(c.audio[None], mel)[0] for c in held_out]
    resynthesised = [editor.synthesise(editor.edit(m, 0.0)) for m in base]
    f0_resynth = [f0_hz(a.numpy(), 8000) for a in resynthesised]
    f0_input = [f0_hz(c.audio.numpy(), 8000) for c in held_out]
    rows = []
    for s in requests:
        try:
            alpha = editor.alpha_for(float(s))
        except Exception:
            rows.append({"requested": s, "flowkit": "outside the calibrated range"})
            continue
        edited = [editor.synthesise(editor.edit(m, alpha)).numpy() for m in base]
        shifted = [librosa.effects.pitch_shift(c.audio.numpy(), sr=8000, n_steps=float(s)) for c in held_out]
        ours = [semitones(a, f0_hz(e, 8000)) for a, e in zip(f0_resynth, edited)]
        theirs = [semitones(a, f0_hz(e, 8000)) for a, e in zip(f0_input, shifted)]
        rows.append({
            "requested": s, "alpha": round(alpha, 2),
            "flowkit achieved (median st)": round(float(np.nanmedian(ours)), 2),
            "librosa achieved (median st)": round(float(np.nanmedian(theirs)), 2),
            "flowkit digit accuracy": round(float(np.mean(digits.predict(np.stack([_mfcc_features(e) for e in edited]))
                                                          == labels)), 3),
            "librosa digit accuracy": round(float(np.mean(digits.predict(np.stack([_mfcc_features(e) for e in shifted]))
                                                          == labels)), 3)})
    originals = float(np.mean(digits.predict(np.stack([_mfcc_features(c.audio.numpy()) for c in held_out])) == labels))
    return rows, {"steps": report["steps"], "held_out_nll": report["held_out_nll"],
                  "calibration": report["calibration"], "digit accuracy on the unedited originals": round(originals, 3),
                  "digit accuracy on the unedited resynthesis": round(float(np.mean(
                      digits.predict(np.stack([_mfcc_features(a.numpy()) for a in resynthesised])) == labels)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for the test suite")
    parser.add_argument("--vocoder-minutes", type=float, default=10.0)
    parser.add_argument("--pitch-steps", type=int, default=400)
    parser.add_argument("--speed-seconds", type=float, default=1.0, help="seconds of 22.05 kHz audio synthesised")
    parser.add_argument("--compile", action="store_true", help="also time compiled synthesis")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    requests = [-4, -3, -2, -1, 1, 2, 3, 4]
    all_train = fsdd_clips(FSDD, speakers=TRAIN_SPEAKERS)
    held_all = fsdd_clips(FSDD, speakers={"theo"})
    train_clips, held_out = all_train[::2], held_all[::10]  # 1000 training clips, 50 held-out (5 per digit)
    if args.quick:
        args.vocoder_minutes, args.pitch_steps, args.speed_seconds = 0.05, 5, 0.1
        train_clips, held_out, requests = all_train[::40], held_all[::100], [-2, 2]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "fsdd4"
        folder.mkdir()
        for clip in train_clips:  # the training speakers only: the held-out speaker is never seen
            (folder / f"{clip.name}.wav").write_bytes((FSDD / f"{clip.name}.wav").read_bytes())
        speed_rows = speed(args.speed_seconds, args.compile)
        print(table(speed_rows, list(speed_rows[0])), "\n")
        quality_rows, vocoder_run = quality(Path(scratch) / "vocoder", held_out, args.vocoder_minutes,
                                            5 if args.quick else 1_000_000)  # the minutes are the budget
        print(table(quality_rows, list(quality_rows[0])), "\n")
        pitch_rows, pitch_run = pitch_table(Path(scratch) / "pitch", train_clips, held_out, args.pitch_steps, requests)
        print(table(pitch_rows, list(pitch_rows[0])))
    path = write("audio_quick" if args.quick else "audio",
                 {"config": options(args), "data": {"train": f"FSDD speakers {sorted(TRAIN_SPEAKERS)}, "
                                                             f"{len(train_clips)} clips",
                                                    "held_out": f"FSDD speaker theo, {len(held_out)} clips"},
                  "speed": speed_rows, "vocoder_quality": quality_rows, "vocoder_run": vocoder_run,
                  "pitch": pitch_rows, "pitch_run": pitch_run}, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
