"""The benchmark scripts run (tiny sizes) so they cannot rot; their numbers are not asserted."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowkit.precision import bf16_supported

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *options: str, tmp_path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *options, "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    suffix = "_tiny" if "--tiny" in options else "_quick"
    return json.loads((tmp_path / f"{name}{suffix}.json").read_text())


def expected_source() -> str:
    shared = (ROOT.parent / "shared" / "data" / "cifar10" / "train_10k.npz").exists()
    return "shared CIFAR-10 train_10k.npz" if shared else "embedded CIFAR-10 demo sample"


def test_glow_vs_normflows_quick_run_with_compiled_paths(tmp_path):
    result = run_script("glow_vs_normflows", "--quick", "--compile", tmp_path=tmp_path)
    assert [r["library"] for r in result["results"]] == ["normflows", "flowkit", "flowkit (matched)"]
    assert all(r["held_out_bpd"] > 0 for r in result["results"])
    compiled = [r for r in result["results"] if "compiled_train_step_ms" in r]
    assert [r["library"] for r in compiled] == ["flowkit"]  # a quick run compiles the faithful model only
    for r in compiled:  # every timing with its spread over the interleaved rounds, and the compile counters
        step_ms = r["compiled_train_step_ms"]
        assert 0 < step_ms["min"] <= step_ms["median"] <= step_ms["max"]
        assert r["compiled_sample16_ms"]["median"] > 0 and r["train_step_ms_reversible"]["median"] > 0
        assert r["compile"]["graph_breaks"] == 0 and isinstance(r["compile"]["flag"], bool)
    assert result["config"]["compile"] is True and result["config"]["depths"] == [1]  # every option, as run
    assert result["data"]["train"].startswith(expected_source())  # the data actually used
    assert result["command"].startswith("python -m benchmarks.glow_vs_normflows") and "--compile" in result["command"]


@pytest.mark.bf16
def test_profile_script_quick_run(tmp_path):
    result = run_script("profile_step", "--quick", tmp_path=tmp_path)
    rows = result["results"]
    bf16 = [("flowkit (eager, bf16 conditioners)", "train step"), ("flowkit (eager, bf16 conditioners)", "16 samples")]
    assert [(r["library"], r["measure"]) for r in rows] == [
        ("normflows (eager)", "train step"), ("normflows (eager)", "16 samples"),
        ("flowkit (eager)", "train step"), ("flowkit (eager)", "16 samples")] + (bf16 if bf16_supported() else [])
    assert all(0 < r["convolution_ms"] < r["total_ms"] for r in rows)


def test_memory_benchmark_quick_run(tmp_path):
    result = run_script("memory", "--quick", tmp_path=tmp_path)
    assert result["data"].startswith(expected_source())
    assert len(result["results"]) == 2 and result["results"][0]["flowkit plain MiB"] > 0
    for row in result["results"]:  # fresh-process RSS and allocator peak beside the saved-tensor count
        assert row["flowkit reversible RSS growth MiB"] >= 0 and row["gradients MiB"] > 0
        # stepping inside backward frees each gradient as it is applied: less live at once
        in_backward = row["flowkit reversible in-backward allocator peak MiB"]
        assert 0 < in_backward < row["flowkit reversible allocator peak MiB"]


@pytest.mark.bf16
def test_gpu_script_runs_tiny_on_cpu(tmp_path):
    result = run_script("gpu", "--tiny", "--device", "cpu", tmp_path=tmp_path)
    bf16_modes = ["bf16-conditioners", "bf16 autocast"]
    assert [r["precision"] for r in result["results"]] == ["fp32"] + (bf16_modes if bf16_supported() else [])
    assert result["skipped_no_bf16"] == ([] if bf16_supported() else bf16_modes)
    assert all(r["images_per_s"] > 0 and r["sample_ms"] > 0 for r in result["results"])


def test_audio_benchmark_quick_run(tmp_path, fsdd_folder):
    result = run_script("audio", "--quick", tmp_path=tmp_path)
    bf16_rows = ["prepare_synthesis('bf16', fold_upsampler=False)", "prepare_synthesis('bf16')"]
    assert [r["synthesis"] for r in result["speed"]] == [
        "NVIDIA glow.py (weight norm removed, float32)", "flowkit as trained (weight norm, float32)",
        "prepare_synthesis('float32')"] + (bf16_rows if bf16_supported() else [])
    assert all(r["kHz"] > 0 for r in result["speed"])
    assert all(r["max_error_vs_float32"] < 0.05 for r in result["speed"][1:])
    assert set(result["parts"]) == {"speed", "quality", "pitch"}
    assert [r["synthesis"] for r in result["vocoder_quality"]] == ["WaveGlow cpu (sigma 0.6)",
                                                                   "Griffin-Lim (60 iterations)"]
    assert [r["requested"] for r in result["pitch"]] == [-2, 2]
    assert all("speech-relative achieved (median st)" in r for r in result["pitch"])
    assert result["pitch_run"]["speech_relative"]["labels"] == "tracked pitch within speakers (FSDD names)"
    assert "theo" in result["data"]["held_out"] and result["config"]["quick"] is True


def test_text_benchmark_quick_run(tmp_path, text_data):
    result = run_script("text", "--quick", tmp_path=tmp_path)
    assert [r["preset"] for r in result["fit"]] == ["bert-flow", "affine"]
    assert all(r["flow_nll"] == r["flow_nll"] and r["fit_s"] > 0 for r in result["fit"])
    assert {r["data"] for r in result["sts"]} == {"STS-B dev", "SICK-R trial"}
    assert [r["alpha"] for r in result["steering"][:4]] == [0.25, 0.5, 1.0, 2.0]
    assert all(r["left_out_seen"] >= 0 for r in result["sts"])  # STS only on pairs the flow never saw
    methods = [r["method"] for r in result["sentiment_transfer"]["rows"] if r["direction"] == "negative -> positive"]
    ways = ("flow", "conditional Gaussian", "raw")  # every table with its ablations
    assert methods == ["unedited", *(f"{w}{m}" for w in ways for m in (" (calibrated)", ", strength 1",
                                                                         " (oracle: best on these pairs)")),
                       "raw at the flow's mean cosine"]
    assert {r["edit"] for r in result["emotion_transfer"]["rows"]} == {"neutral -> joy", "neutral -> anger",
                                                                       "neutral -> sadness"}
    assert all(0 <= r["judge_target_rate"] <= 1 for r in result["emotion_transfer"]["rows"])


def test_notes_benchmark_quick_run(tmp_path):
    from tests.conftest import require_data

    require_data("notes")
    result = run_script("notes", "--quick", tmp_path=tmp_path)
    truth = result["ground_truth"]  # every edit against the same instrument's real note D semitones away
    assert [r["method"] for r in truth["rows"]] == [
        "unedited (the input)", "librosa pitch_shift", "front-end alone (identity flow)",
        "Gaussian (whitening) transfer", "flow: transfer to the new pitch", "flow: calibrated direction"]
    assert truth["pairs"] > 0 and all(r["pairs"] == truth["pairs"] for r in truth["rows"])
    distance = {r["method"]: r["distance_db_median"] for r in truth["rows"]}
    assert distance["librosa pitch_shift"] < distance["unedited (the input)"]  # a real shift nears the real note
    assert set(truth["headroom"]["distance_db_median"]) >= {"librosa pitch_shift"}
    assert result["timbre"][0]["direction"] == "cello -> violin"
    assert result["mel_baseline"]["steps"] > 0 and result["config"]["quick"] is True


@pytest.mark.bf16
def test_precision_benchmark_quick_run(tmp_path):
    result = run_script("precision", "--quick", tmp_path=tmp_path)
    rows = result["by_depth"][0]["rows"]
    bf16 = ["flowkit bf16-conditioners"] if bf16_supported() else []  # never a second float32 model under its name
    assert [r["model"] for r in rows] == ["flowkit float32", *bf16, "normflows"]
    assert all(r["train_step_ms"]["min"] <= r["train_step_ms"]["median"] <= r["train_step_ms"]["max"] for r in rows)
    summary = result["by_depth"][0]["summary"]
    assert {"bf16_step_speedup", "bf16_bits_per_dim_delta", "round_trip_max_abs_error"} <= set(summary)
    assert (summary["bf16_skipped"] is None) == bool(bf16) and (summary["bf16_step_speedup"] is None) != bool(bf16)
    assert summary["precision_in_effect"] == ("bf16-conditioners" if bf16 else "float32")
    provenance = result["provenance"]  # every JSON says what it measured: commit, date, CPU and its flags
    assert len(provenance["commit"]) == 40 and isinstance(provenance["dirty"], bool)
    assert provenance["date"].startswith("20") and provenance["bf16_native"] == bool(bf16)
    assert provenance["threads"] >= 1 and provenance["torch_version"] == torch.__version__  # issue 28's fields
    assert provenance["normflows_version"] and provenance["command"].startswith("python -m benchmarks.precision")


def test_time_to_quality_quick_run(tmp_path):
    result = run_script("time_to_quality", "--quick", tmp_path=tmp_path)
    pieces = sorted(p.name for p in (tmp_path / "time_to_quality").iterdir())
    assert pieces == ["race_k1_seed0_quick.json", "race_k1_seed1_quick.json", "sweep_k1_quick.json"]
    sweep = json.loads((tmp_path / "time_to_quality" / "sweep_k1_quick.json").read_text())
    for library in ("flowkit", "normflows"):  # the same grid for both, the best of it chosen on training images
        runs = [r for r in sweep["runs"] if r["library"] == library and r["recipe"] == "shared"]
        assert [r["lr"] for r in runs] == [1e-3, 4e-3] and all(r["ema_decay"] == 0.999 for r in runs)
        assert sweep["best_lr"][library] == min(runs, key=lambda r: r["bits_per_dim"])["lr"]
        assert result["summary"][f"{library}_recipe"]["lr"] == sweep["best_lr"][library]
    assert "never trained on" in sweep["data"]["learning_rate_choice"]
    assert [r["recipe"] for r in sweep["runs"]].count("notebook") == 1  # normflows as its notebook trains it
    race = result["results"][0]
    assert set(race["curves"]) == {"flowkit", "normflows"}
    for curve in race["curves"].values():  # every checkpoint scores the averaged and the raw weights
        assert [p["checkpoint_s"] for p in curve] == [0.5, 1.0, 1.5, 2.0]
        assert all(a["time_s"] < b["time_s"] and a["steps"] < b["steps"] for a, b in zip(curve, curve[1:]))
        assert all(p["bits_per_dim"] > 0 and p["raw_bits_per_dim"] > 0 for p in curve)
    for ratio in race["ratios"]:  # time ratio = speed x learning per step, at every budget
        assert ratio["time_ratio"] == pytest.approx(ratio["speed_ratio"] * ratio["learning_ratio"], rel=0.01)
    summary = result["summary"]
    assert summary["budgets_s"] == [1.0, 2.0] and summary["seeds"] == {"K=1": [0, 1]}
    assert {"time_ratio_k4", "time_ratio_k8", "bf16_step_speedup", "bf16_bits_per_dim_delta", "eager_step_ratio_k4",
            "eager_step_ratio_k8", "gain_split", "time_ratio_by_budget"} <= set(summary)
    spread = summary["time_ratio_by_budget"]["K=1"]["2"]
    assert spread["min"] <= spread["median"] <= spread["max"] and len(spread["values"]) == 2
    provenance = result["provenance"]  # the pieces' provenance, merged: both seeds, every command
    assert provenance["seeds"] == [0, 1] and len(provenance["commit"]) == 40
    assert provenance["command"].count("python -m benchmarks.time_to_quality --quick") == 1
    assert (tmp_path / "time_to_quality_quick.png").stat().st_size > 0


def test_ratio_at_reads_the_curves():
    from benchmarks.time_to_quality import median_and_range, ratio_at

    def curve(points):  # (seconds, steps, bits/dim) checkpoints, raw weights 0.1 above
        return [{"checkpoint_s": t, "time_s": t, "steps": s, "bits_per_dim": b, "raw_bits_per_dim": b + 0.1}
                for t, s, b in points]

    curves = {"normflows": curve([(10, 100, 5.0), (20, 200, 4.0), (30, 300, 3.5)]),
              "flowkit": curve([(10, 50, 4.5), (20, 100, 3.0), (30, 150, 2.9)])}
    at_20 = ratio_at(curves, 20)  # flowkit reaches 4.0 at 10 + 10 * 0.5 / 1.5 s, after 66.7 steps
    assert at_20["target_bits_per_dim"] == 4.0 and at_20["flowkit_s"] == 13.3
    assert at_20["time_ratio"] == pytest.approx(20 / (40 / 3), abs=1e-3)
    assert at_20["learning_ratio"] == pytest.approx(200 / (200 / 3), abs=1e-3)
    assert at_20["speed_ratio"] == pytest.approx(0.5, abs=1e-3)  # 5 steps/s against 10
    assert ratio_at(curves, 30, "raw_bits_per_dim")["target_bits_per_dim"] == 3.6
    assert ratio_at({**curves, "flowkit": curve([(10, 50, 4.5), (30, 150, 4.2)])}, 20)["time_ratio"] is None
    assert median_and_range([2.0, None, 3.0]) == {"median": 2.0, "min": None, "max": 3.0, "values": [2.0, None, 3.0]}
    assert median_and_range([None, None, 3.0])["median"] is None


def test_eager_parts_quick_run(tmp_path):
    result = run_script("eager_parts", "--quick", tmp_path=tmp_path)
    assert len(result["pieces_ms"]) == 2 and all(len(cases) == 2 for cases in result["pieces_ms"].values())
    steps = result["training_steps_ms"]["K=1"]
    assert steps["normflows"]["normflows_ratio"] == 1.0 and "flowkit without border channel" in steps


def test_glow_size_options_parse_depth_lists_and_name_a_bad_one():
    sys.path.insert(0, str(ROOT))
    from benchmarks._common import glow_size_options

    parser = argparse.ArgumentParser()
    glow_size_options(parser, batch=32)
    args = parser.parse_args(["--depths", "4,16", "--levels", "2"])
    assert (args.depths, args.levels, args.width, args.batch) == ([4, 16], 2, 128, 32)
    assert parser.parse_args([]).depths == [4, 8]
    for bad in ("4;8", "0,4"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--depths", bad])


@pytest.mark.bf16
def test_recipe_benchmark_quick_run(tmp_path):
    result = run_script("recipe", "--quick", tmp_path=tmp_path)
    runs = result["runs"]
    assert [(r["lr"], r["warmup_steps"]) for r in runs] == [(1e-3, 50), (2e-3, 100)]
    assert all([p["steps"] for p in r["curve"]] == [2, 4] and r["curve"][-1]["bits_per_dim"] > 0 for r in runs)
    assert result["config"]["mode"] == "bf16" and "CIFAR-10" in result["data"]["train"]
    assert result["mode_in_effect"] == ("bf16" if bf16_supported() else "eager")


@pytest.mark.bf16
def test_precision_seeds_quick_run(tmp_path):
    result = run_script("precision_seeds", "--quick", tmp_path=tmp_path)
    if not bf16_supported():  # float32 against float32 would be a delta of nothing: skipped, said so
        assert result["by_depth"] == [] and "no native bfloat16" in result["skipped"]
        return
    (depth,) = result["by_depth"]
    runs = depth["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["float32_bpd"] > 0 and r["bf16_bpd"] > 0 for r in runs)
    assert runs[0]["float32_bpd"] != runs[1]["float32_bpd"]  # each seed its own weights and batches
    deltas = [r["bf16_bpd"] - r["float32_bpd"] for r in runs]
    assert depth["mean_delta"] == pytest.approx(sum(deltas) / 2, abs=1e-4)
    assert depth["standard_error"] >= 0 and depth["float32_across_seeds_sd"] > 0
