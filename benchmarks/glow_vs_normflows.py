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

All three train first; then every timed measure of every contender runs once per round,
round after round (``--repeats`` rounds), and the JSON gives min / median / max of each.
With ``--compile`` the dynamo counters (graphs, graph breaks, recompiles) are recorded and
a ``flag`` set when a graph was compiled during the timed rounds: such figures are suspect.

    python -m benchmarks.glow_vs_normflows                 # full run (about 10 CPU minutes)
    python -m benchmarks.glow_vs_normflows --compile       # plus torch.compile (compiling adds minutes)
    python -m benchmarks.glow_vs_normflows --quick         # smoke run (seconds)

Writes benchmarks/results/glow_vs_normflows.json (or _quick.json) and prints a table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from benchmarks._common import (
    RESULTS,
    cifar,
    cifar_source,
    dequantise,
    dynamo_counters,
    glow_size_options,
    interleaved_times,
    options,
    spread,
    table,
    write,
)
from benchmarks.peers import normflows_glow
from flowkit_image import Glow, GlowConfig

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


def train_and_evaluate(kind, levels, depth, width, batch, train_steps, warmup, train, held_out) -> dict:
    """Train one library's Glow for ``train_steps`` and measure held-out bits/dim; returns
    the row and what the timing rounds need."""
    torch.manual_seed(0)
    net = kind(levels, depth, width)
    model = net.model
    g = torch.Generator().manual_seed(0)
    batches = [dequantise(train[torch.randint(len(train), (batch,), generator=g)], g) for _ in range(train_steps)]
    with torch.no_grad():
        net.log_prob(dequantise(train[:256], g))  # ActNorm data-dependent init, same images for both
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3, foreach=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    losses = []
    for x in batches:
        losses.append(float(_step(net, x, opt).detach()))
        schedule.step()
    model.eval()
    eval_x = dequantise(held_out, torch.Generator().manual_seed(1))
    with torch.no_grad():
        bpd = float(torch.cat([bits_per_dim(net.log_prob(eval_x[i:i + 100]))
                               for i in range(0, len(eval_x), 100)]).mean())
    model.train()
    row = {"library": net.name, "K": depth, "params": sum(p.numel() for p in model.parameters()),
           "first_train_bpd": [round(v, 3) for v in losses[:3]],
           "final_train_bpd": round(sum(losses[-20:]) / len(losses[-20:]), 3), "held_out_bpd": round(bpd, 3)}
    return {"row": row, "net": net, "opt": opt, "x": batches[0], "eval_x": eval_x[:64]}


def timed_cases(trained: dict, compile_too: bool) -> dict:
    """Name -> zero-argument callable for every measure of one contender (each sets the
    model's mode itself, so the rounds can interleave them)."""
    net, opt, x, eval_x = trained["net"], trained["opt"], trained["x"], trained["eval_x"]
    model = net.model

    def in_mode(training: bool, fn, memory: str | None = None):
        def call():
            model.train(training)
            if memory is not None:
                from flowkit.sequential import set_memory_mode

                set_memory_mode(model, memory)
            with torch.set_grad_enabled(training):
                return fn()
        return call

    cases = {"train_step_ms": in_mode(True, lambda: _step(net, x, opt), "plain" if isinstance(net, Ours) else None),
             "eval64_ms": in_mode(False, lambda: net.log_prob(eval_x)),
             "sample16_ms": in_mode(False, lambda: net.sample(16, 0.7))}
    if isinstance(net, Ours):
        for mode in ("checkpoint", "reversible"):
            cases[f"train_step_ms_{mode}"] = in_mode(True, lambda: _step(net, x, opt), mode)
        if compile_too:
            cases.update(compiled_cases(net, x, eval_x, opt, in_mode))
    return cases


def compiled_cases(net: Ours, x: torch.Tensor, eval_x: torch.Tensor, opt, in_mode) -> dict:
    """torch.compile'd training step; evaluation and sampling compiled with weight freezing
    (inductor folds the fixed weights, the 1x1 inverses and log-dets into constants).
    Each is compiled here, before the timing rounds (compile time excluded), and its
    recompiles and graph breaks are counted from here on."""
    import torch._inductor.config as inductor

    model = net.model
    loss_fn = torch.compile(lambda x: bits_per_dim(model.log_prob(x)).mean())

    def step():
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def frozen(fn):
        compiled = torch.compile(fn)

        def call(*args):
            with inductor.patch(freezing=True):
                return compiled(*args)
        return call

    log_prob, sample = frozen(model.log_prob), frozen(model.sample)
    cases = {"compiled_train_step_ms": in_mode(True, step, "plain"),
             "compiled_eval64_ms": in_mode(False, lambda: log_prob(eval_x)),
             "compiled_sample16_ms": in_mode(False, lambda: sample(16, 0.7))}
    for case in cases.values():  # compile now, outside the timed rounds
        case()
    return cases


def interleaved_rounds(cases: dict[str, dict], repeats: int, warmup: int = 2) -> dict[str, dict]:
    """Time every case of every contender once per round, round after round, so that the
    machine's drift hits all of them alike; min / median / max ms per case."""
    flat_cases = {(who, name): fn for who, fns in cases.items() for name, fn in fns.items()}
    times = interleaved_times(flat_cases, repeats, warmup)
    return {who: {name: spread(times[who, name]) for name in fns} for who, fns in cases.items()}


def measure_depth(depth: int, args, train, held_out) -> list[dict]:
    """Train the three contenders at one depth, then time them in interleaved rounds."""
    trained = {kind.name: train_and_evaluate(kind, args.levels, depth, args.width, args.batch, args.train_steps,
                                             args.warmup, train, held_out) for kind in (Normflows, Ours, OursMatched)}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # a quick run compiles the faithful model only: the matched one takes the same code path
    compiled = {Ours.name} if args.quick else {Ours.name, OursMatched.name}
    cases = {who: timed_cases(t, args.compile and who in compiled) for who, t in trained.items()}
    compiled_before = dynamo_counters()
    timings = interleaved_rounds(cases, args.repeats)
    compile_stats = dynamo_counters()
    rows = []
    for who, t in trained.items():
        row = dict(t["row"])
        for name, spread_ in timings[who].items():
            row[name] = spread_
        row["eval_images_per_s"] = round(64 / row["eval64_ms"]["median"] * 1000, 1)
        if "compiled_eval64_ms" in row:
            row["compiled_eval_images_per_s"] = round(64 / row["compiled_eval64_ms"]["median"] * 1000, 1)
        rows.append(row)
    if args.compile:
        # graphs compiled while timing mean recompiles in the timed rounds: those figures are suspect
        compile_stats["recompiled_while_timing"] = compile_stats["unique_graphs"] - compiled_before["unique_graphs"]
        compile_stats["flag"] = bool(compile_stats["flag"] or compile_stats["recompiled_while_timing"])
        for row in rows[1:]:
            if "compiled_train_step_ms" in row:
                row["compile"] = compile_stats
    torch._dynamo.reset()
    return rows


def _step(net, x, opt):
    loss = bits_per_dim(net.log_prob(x)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def speedups(ours: dict, theirs: dict, depth: int) -> dict:
    """normflows' median time / ours (above 1: flowkit is faster), with the ratio of the
    minima beside the training step's (a rerun should land between the two)."""
    def ratio(theirs_key: str, ours_key: str, stat: str = "median") -> float:
        return round(theirs[theirs_key][stat] / ours[ours_key][stat], 2)

    row = {"flowkit": ours["library"], "K": depth,
           "train step": ratio("train_step_ms", "train_step_ms"),
           "train step (minima)": ratio("train_step_ms", "train_step_ms", "min"),
           "eval": ratio("eval64_ms", "eval64_ms"), "sample": ratio("sample16_ms", "sample16_ms"),
           "reversible step": ratio("train_step_ms", "train_step_ms_reversible"),
           "reversible / plain": round(ours["train_step_ms_reversible"]["median"] / ours["train_step_ms"]["median"], 2),
           "held-out bpd (ours-nf)": round(ours["held_out_bpd"] - theirs["held_out_bpd"], 3)}
    if "compiled_train_step_ms" in ours:
        row.update({"compiled train step": ratio("train_step_ms", "compiled_train_step_ms"),
                    "compiled eval": ratio("eval64_ms", "compiled_eval64_ms"),
                    "compiled sample": ratio("sample16_ms", "compiled_sample16_ms"),
                    "compile flag": ours["compile"]["flag"]})
    return row


def flat(row: dict) -> dict:
    """A results row for the printed table: medians only."""
    return {k: (v["median"] if isinstance(v, dict) and "median" in v else v) for k, v in row.items() if k != "compile"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    glow_size_options(parser)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=50, help="linear warmup steps (both libraries)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    parser.add_argument("--compile", action="store_true", help="also time flowkit under torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.train_steps, args.repeats = [1], 16, 3, 1
    n_held_out = 100 if args.quick else 500
    train, held_out = cifar("train", 5000), cifar("val", n_held_out)
    rows, ratios = [], []
    for depth in args.depths:
        theirs, *ours_rows = measure_depth(depth, args, train, held_out)
        rows += [theirs, *ours_rows]
        ratios += [speedups(ours, theirs, depth) for ours in ours_rows]
    printed = [flat(r) for r in rows]
    print(table(printed, list(dict.fromkeys(k for r in printed for k in r))))
    print()
    print(table(ratios, list(dict.fromkeys(k for r in ratios for k in r))))
    data = {"train": cifar_source("train", 5000), "held_out": cifar_source("val", n_held_out)}
    path = write("glow_vs_normflows_quick" if args.quick else "glow_vs_normflows",
                 {"config": {**options(args), "n_bits": 8}, "data": data,
                  "results": rows, "speedups (normflows time / flowkit time)": ratios}, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
