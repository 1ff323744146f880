"""Activation memory of one Glow training step against depth: flowkit plain, checkpointed
and reversible, and normflows, side by side on the same real CIFAR-10 batch.

Activation memory is the peak of what autograd saves for backward
(:func:`flowkit.testing.peak_saved_bytes`; parameters excluded). Beside it, the memory a
user sees, in a fresh process per case, over one whole training step (forward, backward,
Adamax update) after a first step has created the optimiser state:

* the growth of the process's peak resident memory (RSS). Linux: freed heap pages are
  returned first (``malloc_trim``) and the peak is reset through ``/proc/self/clear_refs``
  just before the step. It includes malloc's own caching, so it is noisy; measured
  again with glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``), which
  hands large freed blocks straight back, so RSS follows the tensors more closely;
* the allocator's peak: the most bytes of tensors live at once during the step, above
  what lived before it (:func:`benchmarks._common.allocator_peak_bytes`), exact.

Cases: flowkit plain, reversible, reversible with the optimiser stepping inside backward
(:class:`flowkit.train.InBackwardOptimizer`, gradients freed as they are applied), and
normflows; the parameter gradients' size is given beside them.
Step time of each mode is reported too, so the cost of recomputation is visible.

    python -m benchmarks.memory            # K = 4, 8, 16, 32 at batch 32 (about 10 CPU minutes)
    python -m benchmarks.memory --quick    # smoke run

Writes benchmarks/results/memory.json (or memory_quick.json) and prints a table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks._common import (
    RESULTS,
    ROOT,
    allocator_peak_bytes,
    cifar,
    cifar_source,
    dequantise,
    glow_size_options,
    median_ms,
    options,
    table,
    write,
)
from benchmarks.glow_vs_normflows import Normflows, Ours, bits_per_dim
from flowkit.memory import MEMORY_MODES
from flowkit.sequential import set_memory_mode
from flowkit.testing import peak_saved_bytes
from flowkit.train import InBackwardOptimizer

MIB = 2**20


def measure(net, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    def step():
        net.model.zero_grad(set_to_none=True)
        bits_per_dim(net.log_prob(x)).mean().backward()

    return peak_saved_bytes(step) / MIB, median_ms(step, repeats, warmup=1)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _return_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc), so the next step's peak RSS
    counts what that step touches, not what earlier steps left cached."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def training_step(net, x: torch.Tensor, in_backward: bool, bucket_mib: float = 4.0):
    """A whole training step (forward, backward, Adamax update), the update inside
    backward or after it; returns the optimiser and the step."""
    params = [p for p in net.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adamax(params, lr=1e-4, foreach=True)
    stepper = InBackwardOptimizer(optimizer, net.model.named_parameters(), bucket_mib) if in_backward else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = bits_per_dim(net.log_prob(x)).mean()
        if stepper is not None:
            stepper.begin()
            loss.backward()
            stepper.finish()
        else:
            loss.backward()
            optimizer.step()

    return optimizer, step


def rss_case(library: str, depth: int, mode: str, in_backward: bool, args) -> dict:
    """In this (fresh) process: memory of one whole training step (forward, backward,
    Adamax update) after a first step has created the optimiser state: the growth of peak
    RSS and the allocator's peak, with the parameter gradients' size beside them."""
    x = dequantise(cifar("train", args.batch), torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = (Ours if library == "flowkit" else Normflows)(args.levels, depth, args.width)
    with torch.no_grad():
        net.log_prob(x)  # ActNorm init
    if library == "flowkit":
        set_memory_mode(net.model, mode, accumulate_grads=in_backward)
    optimizer, step = training_step(net, x, in_backward, args.bucket_mib)
    step()  # optimiser state exists from here on, as in any step but the first
    gradients = sum(p.numel() * p.element_size() for p in optimizer.param_groups[0]["params"])
    optimizer.zero_grad(set_to_none=True)
    _return_freed_memory()
    before = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        peak = lambda: _status_kib("VmHWM")  # noqa: E731
    except OSError:
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731  (peak over the process life)
    step()
    rss = peak() - before
    optimizer.zero_grad(set_to_none=True)
    allocator = allocator_peak_bytes(step)
    return {"rss_growth_mib": round(rss / 1024, 1), "allocator_peak_mib": round(allocator / MIB, 1),
            "gradients_mib": round(gradients / MIB, 1)}


RSS_CASES = (("flowkit", "plain", False), ("flowkit", "reversible", False), ("flowkit", "reversible", True),
             ("normflows", "plain", False))


def rss_name(library: str, mode: str, in_backward: bool) -> str:
    if library == "normflows":
        return "normflows"
    return f"flowkit {mode}" + (" in-backward" if in_backward else "")


FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # glibc: blocks above 128 KiB mmap'd and unmapped when freed


def rss_growth(library: str, depth: int, mode: str, in_backward: bool, args, malloc_env: dict | None = None) -> dict:
    """:func:`rss_case` in a fresh process with 2 threads (and ``malloc_env`` set)."""
    case = f"{library},{depth},{mode},{int(in_backward)}"
    command = [sys.executable, "-m", "benchmarks.memory", "--rss-case", case, "--levels", str(args.levels),
               "--width", str(args.width), "--batch", str(args.batch), "--bucket-mib", str(args.bucket_mib)]
    env = {**os.environ, "OMP_NUM_THREADS": "2", **(malloc_env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"RSS case {case} failed: {done.stderr[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    glow_size_options(parser, depths="4,8,16,32", batch=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bucket-mib", type=float, default=4.0,
                        help="gradient bucket of the in-backward optimiser (flowkit.train.InBackwardOptimizer)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--rss-case", help=argparse.SUPPRESS)  # library,K,mode: one RSS measurement (child process)
    parser.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS measurements")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.rss_case:
        library, depth, mode, in_backward = args.rss_case.split(",")
        print(json.dumps(rss_case(library, int(depth), mode, bool(int(in_backward)), args)))
        return
    if args.quick:
        args.depths, args.width, args.batch, args.repeats = [1, 2], 16, 4, 1
        args.bucket_mib = 0.0  # the tiny model's gradients would fit in one bucket
    x = dequantise(cifar("train", args.batch), torch.Generator().manual_seed(0))
    rss_cases = RSS_CASES[1:3] if args.quick else RSS_CASES  # a smoke run: reversible with and without in-backward
    rows = []
    for depth in args.depths:
        torch.manual_seed(0)
        ours = Ours(args.levels, depth, args.width)
        with torch.no_grad():
            ours.log_prob(x)  # ActNorm init before switching modes
        row = {"K": depth}
        for mode in MEMORY_MODES:
            set_memory_mode(ours.model, mode)
            mib, ms = measure(ours, x, args.repeats)
            row[f"flowkit {mode} MiB"], row[f"flowkit {mode} ms"] = round(mib, 1), round(ms)
        for in_backward in (False, True):  # the cost of updating inside backward, reversible mode
            set_memory_mode(ours.model, "reversible", accumulate_grads=in_backward)
            _, step = training_step(ours, x, in_backward, args.bucket_mib)
            name = rss_name("flowkit", "reversible", in_backward)
            row[f"{name} step with update ms"] = round(median_ms(step, args.repeats, warmup=1))
        set_memory_mode(ours.model, "plain")
        theirs = Normflows(args.levels, depth, args.width)
        with torch.no_grad():
            theirs.log_prob(x)
        mib, ms = measure(theirs, x, args.repeats)
        row["normflows MiB"], row["normflows ms"] = round(mib, 1), round(ms)
        if not args.no_rss:
            for library, mode, in_backward in rss_cases:
                rss = rss_growth(library, depth, mode, in_backward, args)
                name = rss_name(library, mode, in_backward)
                row[f"{name} RSS growth MiB"] = rss["rss_growth_mib"]
                row[f"{name} allocator peak MiB"] = rss["allocator_peak_mib"]
                if not args.quick:
                    fixed = rss_growth(library, depth, mode, in_backward, args, FIXED_MMAP)
                    row[f"{name} RSS growth MiB, fixed mmap threshold"] = fixed["rss_growth_mib"]
            row["gradients MiB"] = rss["gradients_mib"]
        rows.append(row)
        print(table([row], list(row)), flush=True)
    first, last = rows[0], rows[-1]
    summary = {
        "depths": [first["K"], last["K"]],
        "growth plain": round(last["flowkit plain MiB"] / first["flowkit plain MiB"], 2),
        "growth reversible": round(last["flowkit reversible MiB"] / first["flowkit reversible MiB"], 2),
        "growth normflows": round(last["normflows MiB"] / first["normflows MiB"], 2),
        "growth reversible+boundaries": round(last["flowkit reversible+boundaries MiB"]
                                              / first["flowkit reversible+boundaries MiB"], 2),
        "reversible / plain step time (shallowest)": round(
            first["flowkit reversible ms"] / first["flowkit plain ms"], 2),
        "reversible / plain step time (deepest)": round(last["flowkit reversible ms"] / last["flowkit plain ms"], 2),
        "reversible / normflows memory (deepest)": round(last["flowkit reversible MiB"] / last["normflows MiB"], 3),
        "in-backward / ordinary update step time (shallowest)": round(
            first["flowkit reversible in-backward step with update ms"]
            / first["flowkit reversible step with update ms"], 2),
        "in-backward / ordinary update step time (deepest)": round(
            last["flowkit reversible in-backward step with update ms"]
            / last["flowkit reversible step with update ms"], 2),
    }
    if not args.no_rss:
        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 2) if b > 0 else None

        for name in (rss_name(*case) for case in rss_cases):
            summary[f"RSS growth {name}"] = ratio(last[f"{name} RSS growth MiB"], first[f"{name} RSS growth MiB"])
            summary[f"allocator peak growth {name}"] = ratio(last[f"{name} allocator peak MiB"],
                                                             first[f"{name} allocator peak MiB"])
            if not args.quick:
                column = f"{name} RSS growth MiB, fixed mmap threshold"
                summary[f"RSS growth {name}, fixed mmap threshold"] = ratio(last[column], first[column])
    print()
    print(table(rows, list(rows[0])))
    print()
    print(table([summary], list(summary)))
    path = write("memory_quick" if args.quick else "memory",
                 {"config": options(args), "data": cifar_source("train", args.batch),
                  "measure": "peak bytes saved for backward (parameters excluded)", "results": rows,
                  "summary": summary}, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
