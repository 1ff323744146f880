"""Helpers shared by the benchmark scripts: timing, real CIFAR-10 batches, tables, JSON."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "cifar10"
NO_BF16 = "this CPU has no native bfloat16 (or FLOWKIT_BF16=0)"


def _cifar_path(split: str) -> Path:
    return DATA / ("train_10k.npz" if split == "train" else "val_1k.npz")


def cifar_source(split: str = "train", n: int | None = None) -> str:
    """What :func:`cifar` actually loads, for the JSON: never claim the shared set when it fell back."""
    path = _cifar_path(split)
    if path.exists():
        return f"shared CIFAR-10 {path.name} (first {n or 'all'} images)"
    return f"embedded CIFAR-10 demo sample, {'train' if split == 'train' else 'test'} split (shared copy absent)"


def cifar(split: str = "train", n: int | None = None) -> torch.Tensor:
    """Real CIFAR-10 images, uint8 (N, 3, 32, 32): the shared copy, else the embedded sample."""
    path = _cifar_path(split)
    if path.exists():
        with np.load(path) as data:
            images = data["images"]
    else:
        from flowkit_image.data import load_images

        return load_images(None, "train" if split == "train" else "test").images[:n]
    return torch.from_numpy(images[:n]).permute(0, 3, 1, 2).contiguous()


def dequantise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """openai's 8-bit dequantisation: x / 256 - 0.5 + U(0, 1/256)."""
    return images.float() / 256 - 0.5 + torch.rand(images.shape, generator=generator) / 256


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def interleaved_times(cases: dict, repeats: int, warmup: int = 2) -> dict[object, list[float]]:
    """Run every case once per round, ``warmup + repeats`` rounds, so the machine's drift
    hits all of them alike; the ms of each case in the timed rounds."""
    times: dict[object, list[float]] = {name: [] for name in cases}
    for round_ in range(warmup + repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of repeated timings (ms), for the JSON: a figure without its spread
    cannot be checked by a rerun."""
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def dynamo_counters() -> dict[str, object]:
    """What ``torch.compile`` did since the counters were last cleared: graphs compiled,
    graph breaks (with their reasons) and recompilations where torch counts them, and a
    ``flag`` when there was a break or a recompile: a compiled timing is only clean
    without them (callers that time several compiled functions also compare the graph
    count before and after their timed rounds)."""
    from torch._dynamo.utils import counters

    breaks = dict(counters["graph_break"])
    recompiles = sum(dict(counters["recompiles"]).values()) if "recompiles" in counters else None
    out = {"unique_graphs": dict(counters["stats"]).get("unique_graphs", 0), "graph_breaks": sum(breaks.values()),
           "graph_break_reasons": {k[:300]: v for k, v in breaks.items()}, "recompiles": recompiles}
    out["flag"] = bool(out["graph_breaks"] or recompiles)
    return out


def allocator_peak_bytes(step: Callable[[], object]) -> int:
    """Peak of the bytes PyTorch's CPU allocator holds live while ``step`` runs, above what
    it held before (tensors only: no interpreter, no malloc caching). From the profiler's
    allocation records, replayed in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    return peak


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _git(*args: str) -> str | None:
    import subprocess

    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# The tree as the run found it, read when a benchmark imports this module: what the run
# writes later (its JSON, the docs pictures it draws) does not make it "dirty".
COMMIT_AT_START = _git("rev-parse", "HEAD")
CHANGES_AT_START = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")


def this_provenance() -> dict[str, object]:
    """What a result depends on: the git commit (and whether the tree had uncommitted
    changes when the run started, outside ``benchmarks/results/``: in a chain of
    benchmarks run from one clone, the first one's JSON must not make the second dirty,
    nor a run's own pictures itself), the UTC date, the CPU model, the instruction-set
    flags that change speed, whether bfloat16 runs natively (FLOWKIT_BF16=0 says no), the
    thread count, the torch and peer (normflows) versions, and the exact command. A
    benchmark that draws seeds adds ``seeds`` itself."""
    import datetime

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    from flowkit.precision import bf16_supported

    return {"commit": COMMIT_AT_START, "dirty": None if CHANGES_AT_START is None else bool(CHANGES_AT_START),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu,
            "cpu_flags": [f for f in CPU_FLAGS if f in flags], "bf16_native": bf16_supported("cpu"),
            "threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "normflows_version": _version("normflows"), "command": " ".join([script_command(), *sys.argv[1:]])}


def _version(package: str) -> str | None:
    """The installed version of ``package``, ``None`` where it is missing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}


def depth_list(text: str) -> list[int]:
    """``"4,8"`` -> ``[4, 8]``: the Glow depths K a benchmark compares."""
    try:
        depths = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"depths must be comma-separated integers like 4,8, not {text!r}") from None
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"depths must be positive, not {text!r}")
    return depths


def glow_size_options(parser: argparse.ArgumentParser, depths: str | None = "4,8", batch: int = 16) -> None:
    """The Glow size options every speed benchmark shares: ``--levels``, ``--depths``
    (or none, where a script takes its own ``--depth``), ``--width`` and ``--batch``."""
    parser.add_argument("--levels", type=int, default=3, help="levels L")
    if depths is not None:
        parser.add_argument("--depths", type=depth_list, default=depth_list(depths), help="depths K, comma-separated")
    parser.add_argument("--width", type=int, default=128, help="hidden channels of the coupling networks")
    parser.add_argument("--batch", type=int, default=batch)


def options(args) -> dict:
    """Every command-line option as run (paths as strings), for the JSON."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def script_command() -> str:
    """How the running script was started: ``python -m benchmarks.NAME`` for a benchmark."""
    script = Path(sys.argv[0]).resolve()
    if script.parent == ROOT / "benchmarks":
        return f"python -m benchmarks.{script.stem}"
    return sys.argv[0]


def write(name: str, payload: dict, folder: Path = RESULTS, seeds: list[int] | None = None,
          provenance: dict | None = None) -> Path:
    """``folder/name.json`` with the machine, the provenance (this run's, with ``seeds``
    where it drew any, or the one given: a merge of pieces gives theirs) and the exact
    command line beside ``payload``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    command = " ".join([script_command(), *sys.argv[1:]])
    block = provenance or {**this_provenance(), **({} if seeds is None else {"seeds": seeds})}
    path.write_text(json.dumps({"machine": machine(), "provenance": block, "command": command, **payload},
                               indent=2, allow_nan=False))
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)
