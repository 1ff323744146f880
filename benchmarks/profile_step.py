"""Where a Glow training step and sampling spend their time: convolutions against the rest.

Profiles (``torch.profiler``) one training step of normflows' Glow and of flowkit's
(eager in float32, eager with bf16 conditioner networks where the CPU has bfloat16, and
compiled with ``--compile``) and one call sampling 16 images, on real
CIFAR-10, and reports the time inside convolution kernels (forward and backward) beside
the total. This is the evidence for the "convolution floor" in docs/benchmarks.md: both
libraries run the same convolutions, so a speed-up beyond the non-convolution time is
impossible at equal work.

    python -m benchmarks.profile_step              # eager (about a minute)
    python -m benchmarks.profile_step --compile    # plus compiled flowkit (compiling adds minutes)

Writes benchmarks/results/profile_step.json (or _quick.json) and prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks._common import (
    RESULTS,
    cifar,
    cifar_source,
    dequantise,
    dynamo_counters,
    glow_size_options,
    options,
    table,
    write,
)
from benchmarks.glow_vs_normflows import Normflows, Ours, bits_per_dim
from flowkit.precision import bf16_supported, set_conditioner_precision


def convolution_ms(fn, repeats: int) -> tuple[float, float]:
    """(total ms, ms inside convolution kernels) per call, self times of the profiled ops."""
    for _ in range(2):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower())
    return total / 1000 / repeats, conv / 1000 / repeats


def rows_for(net, name: str, x: torch.Tensor, repeats: int, compiled: bool, precision: str = "float32") -> list[dict]:
    model = net.model
    with torch.no_grad():
        net.log_prob(x)  # ActNorm init
    if precision != "float32":
        set_conditioner_precision(model, precision, x.device)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-4, foreach=True)
    loss_of = torch.compile(lambda x: bits_per_dim(net.log_prob(x)).mean()) if compiled else (
        lambda x: bits_per_dim(net.log_prob(x)).mean())

    def step():
        loss = loss_of(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sample = torch.compile(net.sample) if compiled else net.sample
    out = []
    for what, fn in (("train step", step), ("16 samples", lambda: sample(16, 0.7))):
        torch._dynamo.utils.counters.clear()
        with torch.set_grad_enabled(what == "train step"):
            total, conv = convolution_ms(fn, repeats)
        out.append({"library": name, "measure": what, "total_ms": round(total, 1), "convolution_ms": round(conv, 1),
                    "other_ms": round(total - conv, 1), "convolution_share": round(conv / total, 2)})
        if compiled:  # graphs compiled while profiling (beyond the first) would be in the figures
            out[-1]["compile"] = dynamo_counters()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    glow_size_options(parser, depths=None)
    parser.add_argument("--depth", type=int, default=4, help="depth K")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also profile compiled flowkit")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depth, args.width, args.repeats = 1, 16, 1
    x = dequantise(cifar("train", args.batch), torch.Generator().manual_seed(0))
    runs = [(Normflows, "normflows (eager)", False, "float32"), (Ours, "flowkit (eager)", False, "float32")]
    if bf16_supported("cpu"):
        runs.append((Ours, "flowkit (eager, bf16 conditioners)", False, "bf16-conditioners"))
    if args.compile:
        runs.append((Ours, "flowkit (compiled)", True, "float32"))
    rows = []
    for kind, name, compiled, precision in runs:
        torch.manual_seed(0)
        rows += rows_for(kind(args.levels, args.depth, args.width), name, x, args.repeats, compiled, precision)
    print(table(rows, list(rows[0])))
    path = write("profile_step_quick" if args.quick else "profile_step",
                 {"config": options(args), "data": cifar_source("train", args.batch),
                  "measure": "self CPU time of profiled ops; convolution = ops whose name contains 'conv'",
                  "results": rows}, args.results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
