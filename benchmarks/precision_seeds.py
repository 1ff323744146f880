"""The bf16-conditioner bits/dim delta averaged over seeds, beside the seed-to-seed spread
of float32 itself.

``benchmarks.precision`` compares one float32 and one bf16 run from the same weights:
after 200 steps a float32 rerun that differs only in its dequantisation noise lands up to
0.05 bits/dim away, so one pair cannot resolve a 0.02 target. Here every seed draws its
own initial weights, batches and noise; float32 and bf16 flowkit train from that seed's
weights on that seed's batches, and the JSON gives each pair's held-out delta, their mean
and standard error, and the spread of float32 across seeds.

Glow (faithful), width 128, batch 16, Adamax lr 1e-3, shared CIFAR-10 ``train_10k``,
held out on 400 ``val_1k`` images, 2 threads.

    python -m benchmarks.precision_seeds              # K = 4 and 8, 4 seeds, about 8 minutes
    python -m benchmarks.precision_seeds --quick      # smoke run (the test suite)

Writes benchmarks/results/precision_seeds.json (or _quick.json) and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch

import flowkit as fk
from benchmarks._common import (
    NO_BF16,
    RESULTS,
    cifar,
    cifar_source,
    dequantise,
    glow_size_options,
    options,
    table,
    write,
)
from benchmarks.glow_vs_normflows import Ours
from benchmarks.precision import held_out_bpd, train_on


def one_seed(levels: int, depth: int, width: int, batch: int, steps: int, seed: int, data, eval_x) -> dict:
    """Held-out bits/dim of float32 and bf16-conditioner flowkit from this seed's weights and batches."""
    torch.manual_seed(seed)
    f32 = Ours(levels, depth, width)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f32.log_prob(dequantise(data[torch.randint(len(data), (256,), generator=g)], g))  # ActNorm init
    bf16 = copy.deepcopy(f32)
    precision = fk.set_conditioner_precision(bf16.model, "bf16-conditioners")
    batches = [dequantise(data[torch.randint(len(data), (batch,), generator=g)], g) for _ in range(steps)]
    train_on(f32, batches)
    train_on(bf16, batches)
    f32.model.eval()
    bf16.model.eval()
    return {"seed": seed, "float32_bpd": round(held_out_bpd(f32, eval_x), 4),
            "bf16_bpd": round(held_out_bpd(bf16, eval_x), 4), "precision_in_effect": precision}


def summarise(runs: list[dict]) -> dict:
    deltas = [r["bf16_bpd"] - r["float32_bpd"] for r in runs]
    f32 = [r["float32_bpd"] for r in runs]
    spread = statistics.stdev if len(runs) > 1 else (lambda values: 0.0)
    return {"mean_delta": round(statistics.mean(deltas), 4),
            "standard_error": round(spread(deltas) / len(deltas) ** 0.5, 4),
            "deltas": [round(d, 4) for d in deltas],
            "float32_across_seeds_sd": round(spread(f32), 4),
            "float32_range": [min(f32), max(f32)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    glow_size_options(parser)
    parser.add_argument("--steps", type=int, default=200, help="training steps per model")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.steps, args.seeds = [1], 16, 3, 2
    if not fk.bf16_supported("cpu"):  # float32 against float32 would say nothing about bf16
        print(f"note: {NO_BF16}: nothing to compare, no runs")
        path = write("precision_seeds_quick" if args.quick else "precision_seeds",
                     {"config": options(args), "skipped": NO_BF16, "by_depth": []}, args.results)
        print(f"wrote {path}")
        return
    data = cifar("train", 2000 if args.quick else None)
    eval_x = dequantise(cifar("val", 100 if args.quick else 400), torch.Generator().manual_seed(1))
    by_depth = []
    for depth in args.depths:
        runs = [one_seed(args.levels, depth, args.width, args.batch, args.steps, seed, data, eval_x)
                for seed in range(args.seeds)]
        by_depth.append({"K": depth, "runs": runs, **summarise(runs)})
        print(f"K={depth}", by_depth[-1], flush=True)
    rows = [{"K": d["K"], "seeds": len(d["runs"]), "mean bf16 - float32": d["mean_delta"],
             "standard error": d["standard_error"], "float32 sd across seeds": d["float32_across_seeds_sd"]}
            for d in by_depth]
    print(table(rows, list(rows[0])))
    path = write("precision_seeds_quick" if args.quick else "precision_seeds",
                 {"config": options(args), "data": {"train": cifar_source("train"), "held_out": cifar_source("val")},
                  "by_depth": by_depth}, args.results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
