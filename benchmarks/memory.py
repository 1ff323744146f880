"""Activation memory of one Glow training step against depth: flowkit plain, checkpointed
and reversible, and normflows, side by side on the same real CIFAR-10 batch.

Activation memory is the peak of what autograd saves for backward
(:func:`flowkit.testing.peak_saved_bytes`; parameters excluded), not whole-process RSS.
Step time of each mode is reported too, so the cost of recomputation is visible.

    python benchmarks/memory.py            # K = 4, 8, 16, 32 at batch 32 (about 10 CPU minutes)
    python benchmarks/memory.py --quick    # smoke run

Writes benchmarks/results/memory.json (or memory_quick.json) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, cifar, cifar_source, dequantise, median_ms, options, table, write  # noqa: E402
from benchmarks.glow_vs_normflows import Normflows, Ours, bits_per_dim  # noqa: E402
from flowkit.bijector import MEMORY_MODES  # noqa: E402
from flowkit.reversible import set_memory_mode  # noqa: E402
from flowkit.testing import peak_saved_bytes  # noqa: E402

MIB = 2**20


def measure(net, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    def step():
        net.model.zero_grad(set_to_none=True)
        bits_per_dim(net.log_prob(x)).mean().backward()

    return peak_saved_bytes(step) / MIB, median_ms(step, repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--depths", default="4,8,16,32")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.batch, args.repeats = "1,2", 16, 4, 1
    x = dequantise(cifar("train", args.batch), torch.Generator().manual_seed(0))
    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        torch.manual_seed(0)
        ours = Ours(args.levels, depth, args.width)
        with torch.no_grad():
            ours.log_prob(x)  # ActNorm init before switching modes
        row = {"K": depth}
        for mode in MEMORY_MODES:
            set_memory_mode(ours.model, mode)
            mib, ms = measure(ours, x, args.repeats)
            row[f"flowkit {mode} MiB"], row[f"flowkit {mode} ms"] = round(mib, 1), round(ms)
        theirs = Normflows(args.levels, depth, args.width)
        with torch.no_grad():
            theirs.log_prob(x)
        mib, ms = measure(theirs, x, args.repeats)
        row["normflows MiB"], row["normflows ms"] = round(mib, 1), round(ms)
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
        "reversible / plain step time (shallowest)": round(first["flowkit reversible ms"] / first["flowkit plain ms"], 2),
        "reversible / plain step time (deepest)": round(last["flowkit reversible ms"] / last["flowkit plain ms"], 2),
        "reversible / normflows memory (deepest)": round(last["flowkit reversible MiB"] / last["normflows MiB"], 3),
    }
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
