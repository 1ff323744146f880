"""bf16 conditioner networks (``--precision bf16-conditioners``) against float32 flowkit
and normflows: training step, evaluation and sampling speed, held-out bits/dim after the
same steps, and the round trip on real images.

Glow (openai's faithful architecture), width 128, batch 16, on the shared CIFAR-10
``train_10k`` (training) and ``val_1k`` (first 400 images, held out), 2 threads. The three
models start from the same weights (flowkit's two) and see the same batches. Timings are
interleaved across the three (one step of each per round) and reported as min / median /
max over the rounds.

    python benchmarks/precision.py                 # K = 4 and 8, about 12 minutes
    python benchmarks/precision.py --quick         # smoke run (the test suite)

Writes benchmarks/results/precision.json (or precision_quick.json) and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS, cifar, dequantise, glow_size_options, options, spread, table, write,
)
from benchmarks.glow_vs_normflows import Normflows, Ours, bits_per_dim  # noqa: E402
import flowkit as fk  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def compare(levels: int, depth: int, width: int, batch: int, steps: int, repeats: int, train, held_out) -> dict:
    torch.manual_seed(0)
    f32 = Ours(levels, depth, width)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        f32.log_prob(dequantise(train[:256], g))  # ActNorm data-dependent init
    bf16 = copy.deepcopy(f32)
    effective = fk.set_conditioner_precision(bf16.model, "bf16-conditioners")
    torch.manual_seed(0)
    peer = Normflows(levels, depth, width)
    with torch.no_grad():
        peer.log_prob(dequantise(train[:256], torch.Generator().manual_seed(0)))
    nets = {"flowkit float32": f32, f"flowkit {effective}": bf16, "normflows": peer}
    optimisers = {name: torch.optim.Adamax(net.model.parameters(), lr=1e-3, foreach=True) for name, net in nets.items()}
    batches = [dequantise(train[torch.randint(len(train), (batch,), generator=g)], g) for _ in range(steps)]

    def step(name: str, x: torch.Tensor) -> float:
        loss = bits_per_dim(nets[name].log_prob(x)).mean()
        optimisers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimisers[name].step()
        return float(loss.detach())

    step_ms = {name: [] for name in nets}
    for i, x in enumerate(batches):  # the same batches, interleaved; the last `repeats` steps are timed
        for name in nets:
            if i >= steps - repeats:
                step_ms[name].append(_timed(lambda: step(name, x)))
            else:
                step(name, x)
    eval_x = dequantise(held_out, torch.Generator().manual_seed(1))
    rows, eval_ms, sample_ms = [], {n: [] for n in nets}, {n: [] for n in nets}
    with torch.no_grad():
        for net in nets.values():
            net.model.eval()
        for _ in range(repeats):
            for name, net in nets.items():
                eval_ms[name].append(_timed(lambda: net.log_prob(eval_x[:64])))
                sample_ms[name].append(_timed(lambda: net.sample(16, 0.7)))
        bpd = {name: float(torch.cat([bits_per_dim(net.log_prob(eval_x[i:i + 100]))
                                      for i in range(0, len(eval_x), 100)]).mean()) for name, net in nets.items()}
        fk.set_conditioner_precision(bf16.model, "float32")
        bf16_weights_float32_eval = float(torch.cat([bits_per_dim(bf16.log_prob(eval_x[i:i + 100]))
                                                     for i in range(0, len(eval_x), 100)]).mean())
        fk.set_conditioner_precision(bf16.model, effective)
        images = held_out[:64]
        x = bf16.model.preprocess(images, torch.Generator().manual_seed(3))
        error = (bf16.model.decode(bf16.model.encode(x)) - x).abs()
        changed = (bf16.model.postprocess(bf16.model.decode(bf16.model.encode(x))) != images).float().mean()
    for name in nets:
        rows.append({"model": name, "K": depth, "train_step_ms": spread(step_ms[name]),
                     "eval_64_ms": spread(eval_ms[name]), "sample_16_ms": spread(sample_ms[name]),
                     "held_out_bpd": round(bpd[name], 4)})
    f32_name, bf16_name = "flowkit float32", f"flowkit {effective}"
    summary = {
        "precision_in_effect": effective,
        "bf16_step_speedup": round(rows[0]["train_step_ms"]["median"] / rows[1]["train_step_ms"]["median"], 3),
        "bf16_eval_speedup": round(rows[0]["eval_64_ms"]["median"] / rows[1]["eval_64_ms"]["median"], 3),
        "bf16_sample_speedup": round(rows[0]["sample_16_ms"]["median"] / rows[1]["sample_16_ms"]["median"], 3),
        "bf16_step_vs_normflows": round(rows[2]["train_step_ms"]["median"] / rows[1]["train_step_ms"]["median"], 3),
        "bf16_sample_vs_normflows": round(rows[2]["sample_16_ms"]["median"] / rows[1]["sample_16_ms"]["median"], 3),
        "bf16_bits_per_dim_delta": round(bpd[bf16_name] - bpd[f32_name], 4),
        "bf16_weights_float32_eval_bpd": round(bf16_weights_float32_eval, 4),
        "round_trip_max_abs_error": float(error.max()), "round_trip_mean_abs_error": float(error.mean()),
        "round_trip_fraction_above_1e-4": round(float((error > 1e-4).float().mean()), 5),
        "round_trip_8bit_pixels_changed": round(float(changed), 6),
    }
    return {"rows": rows, "summary": summary, "steps": steps, "batch": batch, "width": width}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    glow_size_options(parser)
    parser.add_argument("--steps", type=int, default=200, help="training steps of each model (same batches)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (interleaved)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.steps, args.repeats = [1], 16, 4, 2
    train = cifar("train", 2000 if args.quick else None)
    held_out = cifar("val", 100 if args.quick else 400)
    results = [compare(args.levels, k, args.width, args.batch, args.steps, args.repeats, train, held_out)
               for k in args.depths]
    payload = {"config": options(args), "fp_support": {"cpu_bf16": fk.bf16_supported("cpu")},
               "by_depth": results}
    path = write("precision_quick" if args.quick else "precision", payload, args.results)
    flat = [{"model": r["model"], "K": r["K"], "step ms (median)": r["train_step_ms"]["median"],
             "eval 64 ms": r["eval_64_ms"]["median"], "sample 16 ms": r["sample_16_ms"]["median"],
             "held-out bpd": r["held_out_bpd"]} for res in results for r in res["rows"]]
    print(table(flat, list(flat[0])))
    for res in results:
        print(res["rows"][0]["K"], res["summary"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
