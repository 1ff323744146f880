"""Short-budget recipe: held-out bits/dim of flowkit's faithful Glow after the same
training steps at several Adamax learning rates, each with its linear warmup.

The time-to-quality race (``benchmarks.time_to_quality``) trains for minutes, not
openai's 200k steps, so the learning rate that gets furthest in a few thousand steps is
the one a user with a CPU budget wants. Every recipe trains the same initial weights on
the same sequence of dequantised real CIFAR-10 batches (shared ``train_10k``, batch 16)
through flowkit's engine (``Trainer.train_step``), and its raw weights (no EMA) are
evaluated every ``--eval-every`` steps on ``--eval-images`` images of ``val_1k`` with fixed
dequantisation noise. The mode is eager with bf16 conditioners by default: compiling
changes the speed of a step, not where the steps lead.

    python -m benchmarks.recipe                     # K = 4 and 8, four recipes, about 20 minutes
    python -m benchmarks.recipe --quick             # smoke run (seconds)

Writes benchmarks/results/recipe.json (or recipe_quick.json).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import (
    RESULTS,
    cifar,
    cifar_source,
    dequantise,
    glow_size_options,
    options,
    table,
    write,
)
from benchmarks.time_to_quality import FLOWKIT_MODES, BatchStream, FlowkitGlow, mode_in_effect


def recipe_list(text: str) -> list[tuple[float, int]]:
    """``"1e-3:50,4e-3:200"`` -> ``[(0.001, 50), (0.004, 200)]``: learning rate and warmup steps."""
    try:
        pairs = [part.split(":") for part in text.split(",")]
        recipes = [(float(lr), int(warmup)) for lr, warmup in pairs]
    except ValueError:
        raise argparse.ArgumentTypeError(f"recipes look like 1e-3:50,4e-3:200 (lr:warmup), not {text!r}") from None
    if any(lr <= 0 or warmup < 0 for lr, warmup in recipes):
        raise argparse.ArgumentTypeError(f"learning rates must be positive and warmups not negative: {text!r}")
    return recipes


def train_curve(levels: int, depth: int, width: int, lr: float, warmup: int, stream: BatchStream,
                held_out: torch.Tensor, args) -> dict:
    with tempfile.TemporaryDirectory() as out_dir:
        run = FlowkitGlow(levels, depth, width, stream, held_out, args.mode, Path(out_dir), lr, warmup)
        curve, seconds = [], 0.0
        for step in range(1, args.steps + 1):
            start = time.perf_counter()
            run.train_step(stream(step - 1))
            seconds += time.perf_counter() - start
            if step % args.eval_every == 0 or step == args.steps:
                curve.append({"steps": step, "train_s": round(seconds, 1), "bits_per_dim": round(run.evaluate(), 4)})
                print(f"K={depth} lr={lr:g} warmup={warmup} step {step}: {curve[-1]['bits_per_dim']:.4f}", flush=True)
    return {"K": depth, "lr": lr, "warmup_steps": warmup, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    glow_size_options(parser)
    parser.add_argument("--recipes", type=recipe_list, default=recipe_list("1e-3:50,2e-3:100,4e-3:200,8e-3:200"),
                        help="lr:warmup pairs, comma-separated")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=240)
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--mode", choices=sorted(FLOWKIT_MODES), default="bf16")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.steps, args.eval_every, args.eval_images = [1], 16, 4, 2, 50
        args.recipes = args.recipes[:2]
    stream = BatchStream(cifar("train"), args.batch)
    held_out = dequantise(cifar("val", args.eval_images), torch.Generator().manual_seed(1))
    runs = [train_curve(args.levels, depth, args.width, lr, warmup, stream, held_out, args)
            for depth in args.depths for lr, warmup in args.recipes]
    checkpoints = [point["steps"] for point in runs[0]["curve"]]
    rows = [{"K": r["K"], "lr": r["lr"], "warmup": r["warmup_steps"],
             **{f"bpd @{point['steps']}": point["bits_per_dim"] for point in r["curve"]}} for r in runs]
    print(table(rows, ["K", "lr", "warmup", *(f"bpd @{s}" for s in checkpoints)]))
    name = "recipe_quick" if args.quick else "recipe"
    path = write(name, {"config": options(args), "mode_in_effect": mode_in_effect(args.mode),
                        "data": {"train": cifar_source("train"), "held_out": cifar_source("val", args.eval_images)},
                        "runs": runs}, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
