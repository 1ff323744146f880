"""Where the eager Glow step loses to normflows: the pieces behind docs/benchmarks.md's
"Eager parity" section, each timed against its alternative in interleaved rounds.

1. Adding a batch-independent ``(1, C, H, W)`` map to a channels-last batch (the border
   channel's response) and its backward's sum over the batch: broadcast in NCHW view
   (what flowkit did) against the same add in the channels-last view ``(B, H, W, C)``.
2. The affine coupling's scale: ``logsigmoid`` then ``exp`` against openai's ``sigmoid``
   then ``log`` (forward and backward).
3. Whole training steps, interleaved: normflows' Glow, flowkit's faithful Glow, and the
   faithful Glow without the border channel (``edge_bias=False``) and with LU 1x1 layers,
   so the cost of each openai feature is visible.

    python -m benchmarks.eager_parts            # about 2 minutes
    python -m benchmarks.eager_parts --quick    # smoke run

Writes benchmarks/results/eager_parts.json (or _quick.json) and prints tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import (
    RESULTS,
    cifar,
    cifar_source,
    dequantise,
    glow_size_options,
    interleaved_times,
    options,
    spread,
    table,
    write,
)
from benchmarks.glow_vs_normflows import Normflows, bits_per_dim
from flowkit_image import Glow, GlowConfig


def rounds(cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, dict]:
    """Each case once per round, ``repeats`` rounds after ``warmup``: min / median / max ms."""
    return {name: spread(values) for name, values in interleaved_times(cases, repeats, warmup).items()}


def border_add_cases(batch: int, channels: int, size: int) -> dict:
    out = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    response = torch.randn(size * size, channels, requires_grad=True)
    grad = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)

    def nchw_broadcast():
        (out + response.t().reshape(1, channels, size, size)).backward(grad)

    def channels_last_view():
        (out.permute(0, 2, 3, 1) + response.view(size, size, channels)).permute(0, 3, 1, 2).backward(grad)

    return {"broadcast in NCHW view": nchw_broadcast, "in channels-last view": channels_last_view}


def coupling_scale_cases(batch: int, channels: int, size: int) -> dict:
    h = torch.randn(batch, 2 * channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    x_b = torch.randn(batch, channels, size, size, requires_grad=True)

    def logsigmoid_exp():
        shift, raw = h[:, 0::2], h[:, 1::2]
        log_scale = F.logsigmoid(raw + 2.0)
        y, ladj = (x_b + shift) * log_scale.exp(), log_scale.sum((1, 2, 3))
        (y.sum() + ladj.sum()).backward()

    def sigmoid_log():
        shift, raw = h[:, 0::2], h[:, 1::2]
        scale = torch.sigmoid(raw + 2.0)
        y, ladj = (x_b + shift) * scale, scale.log().sum((1, 2, 3))
        (y.sum() + ladj.sum()).backward()

    return {"logsigmoid, exp": logsigmoid_exp, "sigmoid, log (openai)": sigmoid_log}


def step_cases(levels: int, depth: int, width: int, batch: int) -> dict:
    x = dequantise(cifar("train", batch), torch.Generator().manual_seed(0))
    variants = {"normflows": None, "flowkit faithful": {}, "flowkit without border channel": {"edge_bias": False},
                "flowkit with LU 1x1": {"permutation": "conv_lu"},
                "flowkit matched (LU, no border)": {"permutation": "conv_lu", "edge_bias": False}}
    cases = {}
    for name, architecture in variants.items():
        torch.manual_seed(0)
        if architecture is None:
            net = Normflows(levels, depth, width)
            log_prob, model = net.log_prob, net.model
        else:
            model = Glow(GlowConfig(levels=levels, depth=depth, width=width, **architecture))
            log_prob = model.log_prob
        with torch.no_grad():
            log_prob(x)
        optimizer = torch.optim.Adamax(model.parameters(), lr=1e-4, foreach=True)

        def step(log_prob=log_prob, optimizer=optimizer):
            loss = bits_per_dim(log_prob(x)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        cases[name] = step
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    glow_size_options(parser)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.repeats = [1], 16, 2
    size, hidden = (4, 16) if args.quick else (16, args.width)
    pieces = {"border response add (fwd+bwd), 16 x 128 x 16 x 16": rounds(border_add_cases(args.batch, hidden, size),
                                                                          4 * args.repeats),
              "coupling scale (fwd+bwd), 16 x 6 x 16 x 16": rounds(coupling_scale_cases(args.batch, 6, size),
                                                                   4 * args.repeats)}
    steps = {}
    for depth in args.depths:
        timed = rounds(step_cases(args.levels, depth, args.width, args.batch), args.repeats)
        normflows = timed["normflows"]["median"]
        steps[f"K={depth}"] = {name: {**t, "normflows_ratio": round(normflows / t["median"], 3)}
                               for name, t in timed.items()}
    for title, timed in [*pieces.items(), *((f"training step, {k}", v) for k, v in steps.items())]:
        print(title)
        print(table([{"case": name, **t} for name, t in timed.items()], ["case", *next(iter(timed.values()))]))
        print()
    path = write("eager_parts_quick" if args.quick else "eager_parts",
                 {"config": options(args), "data": cifar_source("train", args.batch),
                  "pieces_ms": pieces, "training_steps_ms": steps}, args.results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
