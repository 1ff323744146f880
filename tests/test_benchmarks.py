"""The benchmark scripts run (tiny sizes) so they cannot rot; their numbers are not asserted."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_glow_vs_normflows_quick_run(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "glow_vs_normflows.py"), "--quick",
                           "--results", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "glow_vs_normflows_quick.json").read_text())
    assert [r["library"] for r in result["results"]] == ["normflows", "flowkit", "flowkit (matched)"]
    assert all(r["held_out_bpd"] > 0 for r in result["results"])


def test_memory_benchmark_quick_run(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--quick",
                           "--results", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "memory_quick.json").read_text())
    assert len(result["results"]) == 2 and result["results"][0]["flowkit plain MiB"] > 0


def test_gpu_script_runs_tiny_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu",
                           "--results", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_tiny.json").read_text())["results"]
    assert [r["precision"] for r in rows] == ["fp32", "bf16 autocast"]
    assert all(r["images_per_s"] > 0 and r["sample_ms"] > 0 for r in rows)
