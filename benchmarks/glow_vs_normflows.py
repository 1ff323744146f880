"""flowkit's Glow against normflows' Glow, side by side in one run, on real CIFAR-10.

Same L, K, width and batch; the same dequantised CIFAR-10 batches feed both; both train
with the same recipe: Adamax (multi-tensor), lr 1e-3, linear warmup over the first
``--warmup`` steps (openai's recipe; without warmup openai's architecture spikes on its
first full-size Adamax step, see docs/benchmarks.md). Measured: training step time,
evaluation images/s, sampling latency (16 images at T = 0.7) and held-out bits/dim (8-bit)
after the same number of steps. flowkit runs twice: its openai-faithful Glow and the
architecture matched to normflows' (LU 1x1, no border channel). Ratios are normflows'
time / ours (above 1: flowkit is faster), for eager flowkit and for ``torch.compile``d
flowkit (training step compiled as is; evaluation and sampling compiled with inductor's
weight freezing, the inference setting).

    python benchmarks/glow_vs_normflows.py                 # full run (about 10 CPU minutes)
    python benchmarks/glow_vs_normflows.py --compile       # plus torch.compile (compiling adds minutes)
    python benchmarks/glow_vs_normflows.py --quick         # smoke run (seconds)

Writes benchmarks/results/glow_vs_normflows.json (or _quick.json) and prints a table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, cifar, cifar_source, dequantise, median_ms, options, table, write  # noqa: E402
from benchmarks.peers import normflows_glow  # noqa: E402
from flowkit_image import Glow, GlowConfig  # noqa: E402

LOG256 = math.log(256)


class Ours:
    name = "flowkit"
    architecture: dict = {}

    def __init__(self, levels: int, depth: int, width: int):
        self.model = Glow(GlowConfig(levels=levels, depth=depth, width=width, **self.architecture))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob(x)

    def sample(self, n: int, temperature: float) -> torch.Tensor:
        return self.model.sample(n, temperature)


class OursMatched(Ours):
    name = "flowkit (matched)"
    architecture = {"permutation": "conv_lu", "edge_bias": False}


class Normflows:
    name = "normflows"

    def __init__(self, levels: int, depth: int, width: int):
        self.model = normflows_glow(levels, depth, width, num_classes=0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob(x + 0.5, None)  # normflows' examples feed [0, 1]; same bin width 1/256

    def sample(self, n: int, temperature: float) -> torch.Tensor:
        return self.model.sample(n, temperature=temperature)[0]


def bits_per_dim(log_prob: torch.Tensor) -> torch.Tensor:
    dims = 3 * 32 * 32
    return (-log_prob + dims * LOG256) / (dims * math.log(2))


def measure(kind, levels, depth, width, batch, train_steps, repeats, warmup, train, held_out,
            compile_too: bool = False) -> dict:
    torch.manual_seed(0)
    net = kind(levels, depth, width)
    model = net.model
    g = torch.Generator().manual_seed(0)
    batches = [dequantise(train[torch.randint(len(train), (batch,), generator=g)], g) for _ in range(train_steps)]
    with torch.no_grad():
        net.log_prob(dequantise(train[:256], g))  # ActNorm data-dependent init, same images for both
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3, foreach=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))

    def step(x, optimizer):
        loss = bits_per_dim(net.log_prob(x)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    losses = []
    for x in batches:
        losses.append(float(step(x, opt).detach()))
        schedule.step()
    model.eval()
    eval_x = dequantise(held_out, torch.Generator().manual_seed(1))
    with torch.no_grad():
        bpd = float(torch.cat([bits_per_dim(net.log_prob(eval_x[i:i + 100])) for i in range(0, len(eval_x), 100)]).mean())
        eval_ms = median_ms(lambda: net.log_prob(eval_x[:64]), repeats)
        sample_ms = median_ms(lambda: net.sample(16, 0.7), repeats)
    model.train()
    step_ms = median_ms(lambda: step(batches[0], opt), repeats)  # last: it moves the weights
    row = {"library": net.name, "K": depth, "params": sum(p.numel() for p in model.parameters()),
           "train_step_ms": round(step_ms, 1), "eval_images_per_s": round(64 / eval_ms * 1000, 1),
           "sample16_ms": round(sample_ms, 1), "first_train_bpd": [round(v, 3) for v in losses[:3]],
           "final_train_bpd": round(sum(losses[-20:]) / len(losses[-20:]), 3),
           "held_out_bpd": round(bpd, 3)}
    if isinstance(net, Ours):
        row.update(memory_modes(net, batches[0], opt, repeats))
        if compile_too:
            row.update(compiled(net, batches[0], eval_x[:64], opt, repeats))
    return row


def memory_modes(net: Ours, x: torch.Tensor, opt, repeats: int) -> dict:
    """Training step time with checkpointed and reversible backprop."""
    from flowkit.reversible import set_memory_mode

    out = {}
    for mode in ("checkpoint", "reversible"):
        set_memory_mode(net.model, mode)
        out[f"train_step_ms_{mode}"] = round(median_ms(lambda: _step(net, x, opt), repeats), 1)
    set_memory_mode(net.model, "plain")
    return out


def compiled(net: Ours, x: torch.Tensor, eval_x: torch.Tensor, opt, repeats: int) -> dict:
    """torch.compile'd training step; evaluation and sampling compiled with weight freezing
    (inductor folds the fixed weights, the 1x1 inverses and log-dets into constants).
    Compile time excluded."""
    import torch._inductor.config as inductor

    model = net.model
    model.validate = False
    loss_fn = torch.compile(lambda x: bits_per_dim(model.log_prob(x)).mean())

    def step():
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"compiled_train_step_ms": round(median_ms(step, repeats), 1)}
    model.eval()
    with torch.no_grad(), inductor.patch(freezing=True):
        log_prob, sample = torch.compile(model.log_prob), torch.compile(model.sample)
        out["compiled_eval_images_per_s"] = round(64 / median_ms(lambda: log_prob(eval_x), repeats) * 1000, 1)
        out["compiled_sample16_ms"] = round(median_ms(lambda: sample(16, 0.7), repeats), 1)
    model.train()
    model.validate = True
    torch._dynamo.reset()
    return out


def _step(net, x, opt):
    loss = bits_per_dim(net.log_prob(x)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def speedups(ours: dict, theirs: dict, depth: int) -> dict:
    """normflows' time / ours (above 1: flowkit is faster)."""
    row = {"flowkit": ours["library"], "K": depth,
           "train step": round(theirs["train_step_ms"] / ours["train_step_ms"], 2),
           "eval": round(ours["eval_images_per_s"] / theirs["eval_images_per_s"], 2),
           "sample": round(theirs["sample16_ms"] / ours["sample16_ms"], 2),
           "reversible step": round(theirs["train_step_ms"] / ours["train_step_ms_reversible"], 2),
           "reversible / plain": round(ours["train_step_ms_reversible"] / ours["train_step_ms"], 2),
           "held-out bpd (ours-nf)": round(ours["held_out_bpd"] - theirs["held_out_bpd"], 3)}
    if "compiled_train_step_ms" in ours:
        row.update({"compiled train step": round(theirs["train_step_ms"] / ours["compiled_train_step_ms"], 2),
                    "compiled eval": round(ours["compiled_eval_images_per_s"] / theirs["eval_images_per_s"], 2),
                    "compiled sample": round(theirs["sample16_ms"] / ours["compiled_sample16_ms"], 2)})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--depths", default="4,8")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=50, help="linear warmup steps (both libraries)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    parser.add_argument("--compile", action="store_true", help="also time flowkit under torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.train_steps, args.repeats = "1", 16, 3, 1
    n_held_out = 100 if args.quick else 500
    train, held_out = cifar("train", 5000), cifar("val", n_held_out)
    rows, ratios = [], []
    for depth in (int(d) for d in args.depths.split(",")):
        theirs = measure(Normflows, args.levels, depth, args.width, args.batch, args.train_steps, args.repeats,
                         args.warmup, train, held_out)
        rows.append(theirs)
        for kind in (Ours, OursMatched):
            ours = measure(kind, args.levels, depth, args.width, args.batch, args.train_steps, args.repeats,
                           args.warmup, train, held_out, args.compile)
            rows.append(ours)
            ratios.append(speedups(ours, theirs, depth))
    print(table(rows, sorted({k for r in rows for k in r}, key=list(rows[-1]).index)))
    print()
    print(table(ratios, sorted({k for r in ratios for k in r}, key=list(ratios[-1]).index)))
    data = {"train": cifar_source("train", 5000), "held_out": cifar_source("val", n_held_out)}
    path = write("glow_vs_normflows_quick" if args.quick else "glow_vs_normflows",
                 {"config": {**options(args), "n_bits": 8}, "data": data,
                  "results": rows, "speedups (normflows time / flowkit time)": ratios}, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
