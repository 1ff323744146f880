"""Audio plug-in: WaveGlow synthesis speed, vocoder quality against Griffin-Lim, and the
pitch table against librosa's ``pitch_shift``, on real FSDD speech (speaker theo held out).

1. Speed: the paper-size WaveGlow (``waveglow`` preset, 256 channels, 87.9 M parameters,
   random weights as in the reference measurement), 1 s of 22.05 kHz audio, 2 threads, in
   interleaved rounds (median, min and max): NVIDIA's own ``glow.py`` (from the
   ``waveglow-vocoder`` package) beside flowkit as trained and after ``prepare_synthesis``
   (float32; bfloat16 without and with the folded upsampler; compiled with ``--compile``),
   each with its error against the float32 module and the memory its folds add. The
   issue's reference figure for NVIDIA's code here, 12.5 kHz, is reported beside the
   measured one.
2. Quality: the ``cpu`` vocoder trained for ``--vocoder-minutes`` on four speakers, then
   copy synthesis of the fifth: log-spectral distance and narrow-band PESQ (``pesq``)
   against the originals, beside Griffin-Lim from the same mel.
3. Pitch: the mel flow trained for ``--pitch-steps``; requested -4 .. +4 semitones on
   held-out clips, achieved median change (Praat F0), and how often a spoken-digit
   recogniser (scikit-learn logistic regression on MFCC statistics, trained on the four
   training speakers) still names the digit, beside ``librosa.effects.pitch_shift`` and
   the ablations: the same pipeline (direction, calibration on the same clips, Griffin-Lim)
   with the flow replaced by the identity (a Gaussian gives the same edits, see
   ``ablation_editors``), and the trained flow with its direction fitted within speakers.

    python -m benchmarks.audio                 # about 20 minutes
    python -m benchmarks.audio --quick         # smoke run (the test suite)
    python -m benchmarks.audio --parts speed   # about 2 minutes; keeps the other parts' last run

Writes benchmarks/results/audio.json (or _quick.json) and prints the tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import flowkit as fk
from benchmarks._common import NO_BF16, RESULTS, interleaved_times, options, script_command, table, write
from flowkit_audio.data import fsdd_clips
from flowkit_audio.features import MelConfig, f0_hz, griffin_lim, log_mel, semitones
from flowkit_audio.pitch import run as pitch_run
from flowkit_audio.vocoder import run as vocoder_run
from flowkit_audio.vocoder.model import WaveGlow, WaveGlowConfig, WaveNet, preset
from flowkit_audio.vocoder.run import log_spectral_distance

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
TRAIN_SPEAKERS = {"george", "jackson", "lucas", "nicolas"}
REFERENCE_KHZ = 12.5


def _nvidia_waveglow(channels: int = 256) -> torch.nn.Module | None:
    """NVIDIA's own WaveGlow (``glow.py`` as packaged in ``waveglow-vocoder`` 0.2.1, whose
    ``infer`` runs on CPU), paper size, random weights, weight norm removed as NVIDIA's
    ``inference.py`` does; ``None`` where the package is missing."""
    try:
        from waveglow_vocoder import glow
    except ImportError:
        return None
    removed_qr = torch.qr
    torch.qr = lambda matrix: torch.linalg.qr(matrix)  # torch.qr is gone from torch; its constructor still calls it
    try:
        model = glow.WaveGlow(80, 12, 8, 4, 2, {"n_layers": 8, "n_channels": channels, "kernel_size": 3})
    finally:
        torch.qr = removed_qr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # remove_weight_norm's deprecation
        return glow.WaveGlow.remove_weightnorm(model).eval()


def _buffer_mib(model: torch.nn.Module) -> float:
    return sum(b.numel() * b.element_size() for b in model.buffers()) / 2**20


def speed(seconds: float, repeats: int, compile_too: bool, channels: int = 256) -> list[dict]:
    """Interleaved rounds of synthesis of the same mel by NVIDIA's code and flowkit's modes
    (``channels``: the WaveNets' width, 256 in the paper; less only for smoke runs)."""
    torch.manual_seed(0)
    base = WaveGlow(WaveGlowConfig.from_dict({**preset("waveglow").to_dict(), "wn_channels": channels})).eval()
    with torch.no_grad():  # the zero-initialised ends make every coupling the identity; give them work
        for module in base.modules():
            if isinstance(module, WaveNet):
                module.end.weight.normal_(0, 0.01)
    mel = torch.randn(1, 80, max(2, round(seconds * 22050 / 256)))
    models = {"flowkit as trained (weight norm, float32)": base,
              "prepare_synthesis('float32')": copy.deepcopy(base).prepare_synthesis("float32")}
    if fk.bf16_supported("cpu"):
        models["prepare_synthesis('bf16', fold_upsampler=False)"] = copy.deepcopy(base).prepare_synthesis(
            "bf16", fold_upsampler=False)
        models["prepare_synthesis('bf16')"] = copy.deepcopy(base).prepare_synthesis("bf16")
    else:
        print(f"note: {NO_BF16}: the bf16 synthesis rows are skipped", flush=True)
    cases = {name: (lambda m=model: m.infer(mel, sigma=0.6)) for name, model in models.items()}
    if compile_too and "prepare_synthesis('bf16')" in models:
        compiled = torch.compile(models["prepare_synthesis('bf16')"].infer)
        cases["prepare_synthesis('bf16') + torch.compile"] = lambda: compiled(mel, sigma=0.6)
    nvidia = _nvidia_waveglow(channels)
    if nvidia is not None:
        cases = {"NVIDIA glow.py (weight norm removed, float32)": lambda: nvidia.infer(mel, sigma=0.6), **cases}
    with torch.no_grad():
        def same_noise(model: WaveGlow) -> torch.Tensor:
            return model.infer(mel, sigma=0.6, generator=torch.Generator().manual_seed(1))

        reference = same_noise(base)
        errors = {name: float((same_noise(m) - reference).abs().max() / reference.abs().max())
                  for name, m in models.items()}
        times = interleaved_times(cases, repeats, warmup=1)
    samples = mel.shape[-1] * 256
    nvidia_ms = statistics.median(times[next(iter(times))]) if nvidia is not None else None
    rows = []
    for name, values in times.items():
        ms = statistics.median(values)
        row = {"synthesis": name, "wn_channels": channels, "audio_s": round(samples / 22050, 2),
               "kHz": round(samples / ms, 1),
               "kHz_min_max": [round(samples / max(values), 1), round(samples / min(values), 1)],
               "real_time_factor": round(ms / 1000 / (samples / 22050), 2),
               "vs NVIDIA here": round(nvidia_ms / ms, 2) if nvidia_ms else None,
               "vs quoted 12.5 kHz": round(samples / ms / REFERENCE_KHZ, 2)}
        model = models.get(name)
        if model is not None:
            row["max_error_vs_float32"] = round(errors[name], 5)
            row["extra_MiB"] = round(_buffer_mib(model) - _buffer_mib(base), 1)
        rows.append(row)
    return rows


def _pesq(reference: np.ndarray, degraded: np.ndarray) -> float:
    from pesq import pesq

    n = min(len(reference), len(degraded))
    try:
        return float(pesq(8000, reference[:n], degraded[:n], "nb"))
    except Exception:  # pesq refuses clips without speech activity
        return math.nan


def quality(run: Path, held_out, minutes: float, steps: int | None) -> tuple[list[dict], dict]:
    metrics = vocoder_run.train(str(run.parent / "fsdd4"), run, "cpu", steps=steps, minutes=minutes, progress=False)
    model = vocoder_run.load(run)
    rows = []
    for name, synth in (("WaveGlow cpu (sigma 0.6)", lambda a: model.vocode(a[None], 0.6)[0]),
                        ("Griffin-Lim (60 iterations)", lambda a: griffin_lim(log_mel(a[None], model.config.mel),
                                                                               model.config.mel)[0])):
        lsd, pesq_scores = [], []
        for clip in held_out:
            audio = synth(clip.audio)
            lsd.append(log_spectral_distance(clip.audio, audio))
            pesq_scores.append(_pesq(clip.audio.numpy(), audio.numpy()))
        rows.append({"synthesis": name, "clips": len(held_out),
                     "log_spectral_distance_db": round(float(np.mean(lsd)), 2),
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


def relative_rows(run: Path, held_out, requests, minutes: float, rows: list[dict], digits, labels,
                  calibration_clips: int | None = None) -> dict:
    """``--preset speech-relative`` on the same training speakers: its achieved semitones
    and digit accuracy join each request's row; returns the run's report."""
    report = pitch_run.train(str(run.parent / "fsdd4"), run, "speech-relative", minutes=minutes, progress=False,
                             calibration_clips=calibration_clips)
    editor = pitch_run.load(run)
    features = [editor.spectrum.analyse(c.audio)[0] for c in held_out]
    resynthesised = [editor.synthesise(editor.edit(f, 0.0), f).numpy() for f in features]
    f0_resynth = [f0_hz(a, 8000) for a in resynthesised]
    for row in rows:
        alpha = editor.alpha_for(float(row["requested"]))
        edited = [editor.synthesise(editor.edit(f, alpha), f).numpy() for f in features]
        change = [semitones(a, f0_hz(e, 8000)) for a, e in zip(f0_resynth, edited)]
        row["speech-relative achieved (median st)"] = round(float(np.nanmedian(change)), 2)
        row["speech-relative digit accuracy"] = round(float(np.mean(
            digits.predict(np.stack([_mfcc_features(e) for e in edited])) == labels)), 3)
    return {"steps": report["steps"], "minutes": minutes, "held_out_nll": report["held_out_nll"],
            "labels": report["labels"], "calibration": report["calibration"],
            "digit accuracy on the unedited resynthesis": round(float(np.mean(
                digits.predict(np.stack([_mfcc_features(a) for a in resynthesised])) == labels)), 3)}


#: strengths for the direction fitted within speakers (a latent move per semitone of the
#: regression, far smaller than the top-minus-bottom direction's unit)
WITHIN_ALPHAS = (-256.0, -128.0, -64.0, -32.0, -16.0, -8.0, 0.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


def ablation_editors(trained, folder: Path, calibration_clips: int) -> tuple[dict, dict]:
    """The ``speech`` pipeline with the trained flow replaced by the identity (the direction
    taken in the standardised log-mel space itself), with the preset's own direction
    (top-minus-bottom 30 % of F0) and calibration on the same clips as the trained flow;
    and the trained flow with its direction fitted within speakers instead
    (:func:`flowkit.regression_direction` with ``groups``, per semitone). Returns the
    editors and their calibration curves.

    A Gaussian in the flow's place (whitening, or any invertible linear map ``W``) gives
    exactly the identity's edits for a mean-difference direction: ``W^-1 (W x + a W d) =
    x + a d``; so it is not a row of its own."""
    from types import SimpleNamespace

    from flowkit_audio.data import split_clips
    from flowkit_audio.pitch.editor import add_calibration_buffers
    from flowkit_audio.pitch.mel import CALIBRATION_ALPHAS, MelEditor, calibrate, fit_direction
    from flowkit_audio.pitch.melflow import FrameFlow

    mel = trained.mel
    clips = split_clips(str(folder), mel.sample_rate)[0]
    logmels = [log_mel(c.audio[None], mel)[0] for c in clips]
    f0 = np.array([f0_hz(c.audio.numpy(), mel.sample_rate) for c in clips])
    chosen = [i for i in np.argsort(np.nan_to_num(f0, nan=np.inf))[::max(1, len(f0) // calibration_clips)]
              if not math.isnan(f0[i])][:calibration_clips]  # the clips the preset calibrates on (pitch/mel.py)
    identity = FrameFlow(fk.Sequential(), mel.n_mels, 0)
    identity.config = SimpleNamespace(n_mels=mel.n_mels)
    add_calibration_buffers(identity, CALIBRATION_ALPHAS)
    identity.mean.copy_(trained.flow.mean)
    identity.std.copy_(trained.flow.std)
    identity.get_buffer("pitch_direction").copy_(fit_direction(identity, logmels, f0))
    editors, curves = {"identity": MelEditor(identity, mel)}, {}
    within = copy.deepcopy(trained.flow)
    within.register_buffer("calibration_alphas", torch.tensor(WITHIN_ALPHAS, dtype=torch.float64))
    within.register_buffer("calibration_semitones", torch.zeros(len(WITHIN_ALPHAS), dtype=torch.float64))
    voiced = [i for i in range(len(clips)) if not math.isnan(f0[i]) and i not in set(chosen)]
    with torch.no_grad():  # fitted on the clips the calibration does not use
        within.get_buffer("pitch_direction").copy_(fk.regression_direction(
            within, [within.pad(within.standardise(logmels[i]))[0] for i in voiced],
            [12 * math.log2(f0[i] / 100) for i in voiced], average_positions=True,
            groups=[clips[i].speaker for i in voiced]))
    editors["flowkit, within speakers"] = MelEditor(within, mel)
    for name, editor in editors.items():
        alphas = WITHIN_ALPHAS if name.endswith("within speakers") else CALIBRATION_ALPHAS
        curves[name] = calibrate(editor, [clips[i] for i in chosen], [logmels[i] for i in chosen], alphas)
    return editors, curves


def pitch_table(run: Path, train_clips, held_out, steps: int, requests,
                relative_minutes: float, quick: bool = False) -> tuple[list[dict], dict]:
    import librosa

    calibration = {"calibration_clips": 6} if quick else {}  # a smoke run: a coarse curve is enough
    report = pitch_run.train(str(run.parent / "fsdd4"), run, "speech", steps=steps, progress=False, **calibration)
    editor = pitch_run.load(run)
    ablations, curves = ablation_editors(editor, run.parent / "fsdd4", calibration.get("calibration_clips", 32))
    editors = {"flowkit": editor, **ablations}
    digits = recogniser(train_clips)
    labels = np.array([c.digit for c in held_out])
    mel = MelConfig()
    base = [log_mel(c.audio[None], mel)[0] for c in held_out]
    resynthesised = [editor.synthesise(editor.edit(m, 0.0)) for m in base]
    f0_resynth = [f0_hz(a.numpy(), 8000) for a in resynthesised]
    f0_input = [f0_hz(c.audio.numpy(), 8000) for c in held_out]

    def accuracy(audios) -> float:
        return round(float(np.mean(digits.predict(np.stack([_mfcc_features(a) for a in audios])) == labels)), 3)

    rows = []
    for s in requests:
        row = {"requested": s}
        for name, chosen in editors.items():
            try:
                alpha = chosen.alpha_for(float(s))
            except Exception:
                row[f"{name} achieved (median st)"] = "outside the calibrated range"
                continue
            edited = [chosen.synthesise(chosen.edit(m, alpha)).numpy() for m in base]
            change = [semitones(a, f0_hz(e, 8000)) for a, e in zip(f0_resynth, edited)]
            if name == "flowkit":
                row["alpha"] = round(alpha, 2)
            row[f"{name} achieved (median st)"] = round(float(np.nanmedian(change)), 2)
            row[f"{name} digit accuracy"] = accuracy(edited)
        shifted = [librosa.effects.pitch_shift(c.audio.numpy(), sr=8000, n_steps=float(s)) for c in held_out]
        theirs = [semitones(a, f0_hz(e, 8000)) for a, e in zip(f0_input, shifted)]
        row["librosa achieved (median st)"] = round(float(np.nanmedian(theirs)), 2)
        row["librosa digit accuracy"] = accuracy(shifted)
        rows.append(row)
    originals = float(np.mean(digits.predict(np.stack([_mfcc_features(c.audio.numpy()) for c in held_out])) == labels))
    relative = relative_rows(run.parent / "relative", held_out, requests, relative_minutes, rows, digits, labels,
                             **calibration)
    return rows, {"steps": report["steps"], "speech_relative": relative, "held_out_nll": report["held_out_nll"],
                  "ablation_calibration": curves,
                  "calibration": report["calibration"], "digit accuracy on the unedited originals": round(originals, 3),
                  "digit accuracy on the unedited resynthesis": round(float(np.mean(
                      digits.predict(np.stack([_mfcc_features(a.numpy()) for a in resynthesised])) == labels)), 3)}


PARTS = ("speed", "quality", "pitch")
SECTIONS = {"speed": ["speed"], "quality": ["vocoder_quality", "vocoder_run"], "pitch": ["pitch", "pitch_run"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for the test suite")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated parts to run (speed, quality, pitch); the JSON keeps the other "
                             "parts of its last run, each stamped with the command that made it")
    parser.add_argument("--vocoder-minutes", type=float, default=10.0)
    parser.add_argument("--pitch-steps", type=int, default=400)
    parser.add_argument("--relative-minutes", type=float, default=4.0,
                        help="training budget of the speech-relative pitch flow")
    parser.add_argument("--speed-seconds", type=float, default=1.0, help="seconds of 22.05 kHz audio synthesised")
    parser.add_argument("--speed-repeats", type=int, default=5, help="interleaved timed rounds of every synthesis")
    parser.add_argument("--compile", action="store_true", help="also time compiled synthesis")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts takes some of {', '.join(PARTS)}")
    torch.set_num_threads(2)
    requests = [-4, -3, -2, -1, 1, 2, 3, 4]
    all_train = fsdd_clips(FSDD, speakers=TRAIN_SPEAKERS)
    held_all = fsdd_clips(FSDD, speakers={"theo"})
    train_clips, held_out = all_train[::2], held_all[::10]  # 1000 training clips, 50 held-out (5 per digit)
    if args.quick:
        args.vocoder_minutes, args.pitch_steps, args.speed_seconds, args.speed_repeats = 0.05, 5, 0.1, 1
        args.relative_minutes = 0.05
        train_clips, held_out, requests = all_train[::40], held_all[::100], [-2, 2]
    name = "audio_quick" if args.quick else "audio"
    previous = args.results / f"{name}.json"
    payload = json.loads(previous.read_text()) if previous.exists() and len(parts) < len(PARTS) else {}
    if payload and "parts" not in payload:  # a run from before the parts were stamped: one command made them all
        payload["parts"] = {part: {"command": payload.get("command"), "config": payload.get("config")}
                            for part in PARTS if SECTIONS[part][0] in payload}
    payload = {k: v for k, v in payload.items() if k not in ("machine", "command")}
    stamps = payload.setdefault("parts", {})
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "fsdd4"
        folder.mkdir()
        for clip in train_clips:  # the training speakers only: the held-out speaker is never seen
            (folder / f"{clip.name}.wav").write_bytes((FSDD / f"{clip.name}.wav").read_bytes())
        if "speed" in parts:
            payload["speed"] = speed(args.speed_seconds, args.speed_repeats, args.compile, 32 if args.quick else 256)
            print(table(payload["speed"], list(dict.fromkeys(k for row in payload["speed"] for k in row))), "\n")
        if "quality" in parts:
            payload["vocoder_quality"], payload["vocoder_run"] = quality(
                Path(scratch) / "vocoder", held_out, args.vocoder_minutes,
                5 if args.quick else 1_000_000)  # the minutes are the budget
            print(table(payload["vocoder_quality"], list(payload["vocoder_quality"][0])), "\n")
        if "pitch" in parts:
            payload["pitch"], payload["pitch_run"] = pitch_table(Path(scratch) / "pitch", train_clips, held_out,
                                                                 args.pitch_steps, requests, args.relative_minutes,
                                                                 args.quick)
            print(table(payload["pitch"], list(payload["pitch"][0])))
    for part in parts:
        stamps[part] = {"command": " ".join([script_command(), *sys.argv[1:]]),
                        "date": time.strftime("%Y-%m-%d"), "config": options(args)}
    payload.update({"config": options(args),
                    "data": {"train": f"FSDD speakers {sorted(TRAIN_SPEAKERS)}, {len(train_clips)} clips",
                             "held_out": f"FSDD speaker theo, {len(held_out)} clips"}})
    path = write(name, payload, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
