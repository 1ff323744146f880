"""bf16 conditioner networks (``--precision bf16-conditioners``) against float32 flowkit
and normflows: training step, evaluation and sampling speed, held-out bits/dim after the
same steps, and the round trip on real images.

Glow (openai's faithful architecture), width 128, batch 16, on the shared CIFAR-10
``train_10k`` (training) and ``val_1k`` (first 400 images, held out), 2 threads. The three
models start from the same weights (flowkit's two) and see the same batches. Timings are
interleaved across the three (one step of each per round; evaluation and sampling, eager
and compiled, all in the same rounds) and reported as min / median / max over the rounds.

flowkit's two models are also timed compiled, beside their eager figures: evaluation and
sampling with frozen weights (``flowkit.frozen.compile_frozen``), the fastest way flowkit
evaluates and samples a trained model, and the training step with its loss compiled
(``TrainConfig(compile=True)``), on copies of the trained models. Compile time is
excluded. normflows runs eagerly, as its notebooks do.

    python -m benchmarks.precision                       # K = 4 and 8, about 20 minutes
    python -m benchmarks.precision --no-compiled-step    # without the compiled steps, about 12
    python -m benchmarks.precision --quick         # smoke run (the test suite)

Writes benchmarks/results/precision.json (or precision_quick.json) and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

import flowkit as fk
from benchmarks._common import (
    NO_BF16,
    RESULTS,
    cifar,
    dequantise,
    glow_size_options,
    options,
    spread,
    table,
    write,
)
from benchmarks.glow_vs_normflows import Normflows, Ours, bits_per_dim
from flowkit.frozen import compile_frozen


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def compile_inference(nets: dict, names: list[str], eval_x: torch.Tensor) -> dict:
    """Frozen-compiled evaluation and sampling of ``names`` (compiled here, outside the
    timed rounds), with how far the compiled samples are from eager ones drawn with the
    same noise."""
    compiled = {}
    for name in names:
        log_prob = compile_frozen(nets[name].model.log_prob, nets[name].model)
        sample = compile_frozen(nets[name].model.sample, nets[name].model)
        log_prob(eval_x[:64])
        sample(16, 0.7)
        with torch.no_grad():
            eager = nets[name].model.sample(16, 0.7, None, torch.Generator().manual_seed(5))
        diff = float((sample(16, 0.7, None, torch.Generator().manual_seed(5)) - eager).abs().max())
        compiled[name] = {"log_prob": log_prob, "sample": sample, "sample_max_abs_diff_vs_eager": diff}
    return compiled


def inference_times(cases: dict[str, tuple], eval_x: torch.Tensor, repeats: int) -> dict:
    """Evaluation of 64 images and sampling of 16 by every ``(log_prob, sample)`` case, all
    interleaved in the same rounds, so that eager and compiled figures (and the ratios
    between them) share the machine's state."""
    times = {name: {"eval": [], "sample": []} for name in cases}
    for _ in range(repeats):
        for name, (log_prob, sample) in cases.items():
            times[name]["eval"].append(_timed(lambda: log_prob(eval_x[:64])))
            times[name]["sample"].append(_timed(lambda: sample(16, 0.7)))
    return times


def held_out_bpd(net, eval_x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.cat([bits_per_dim(net.log_prob(eval_x[i:i + 100]))
                                for i in range(0, len(eval_x), 100)]).mean())


def train_on(net, batches: list[torch.Tensor]) -> None:
    """Adamax (lr 1e-3) steps of ``net`` on ``batches``, one step per batch."""
    optimiser = torch.optim.Adamax(net.model.parameters(), lr=1e-3, foreach=True)
    for x in batches:
        loss = bits_per_dim(net.log_prob(x)).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()


def float32_noise_reference(levels: int, depth: int, width: int, initial: dict, train, picks, eval_x) -> float:
    """Held-out bits/dim of float32 flowkit trained again from the same weights on the same
    images in the same order, with only the dequantisation noise drawn anew: how far two
    equally valid float32 runs land apart, the yardstick for the bf16 delta."""
    net = Ours(levels, depth, width)
    net.model.load_state_dict(initial)
    g = torch.Generator().manual_seed(7)
    train_on(net, [dequantise(train[i], g) for i in picks])
    net.model.eval()
    return held_out_bpd(net, eval_x)


def compiled_steps(nets: dict, names: list[str], x: torch.Tensor, repeats: int) -> dict:
    """Interleaved step times of ``torch.compile``d training (the loss compiled, as the
    engine's ``TrainConfig(compile=True)`` does) on copies of the trained models, so the
    measured models keep their weights."""
    steps = {}
    for name in names:
        net = copy.deepcopy(nets[name])
        net.model.train()
        optimiser = torch.optim.Adamax(net.model.parameters(), lr=1e-3, foreach=True)
        loss_of = torch.compile(lambda x, net=net: bits_per_dim(net.log_prob(x)).mean())

        def step(loss_of=loss_of, optimiser=optimiser):
            loss = loss_of(x)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        step()  # compile outside the timed rounds
        step()
        steps[name] = step
    times = {name: [] for name in names}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_timed(step))
    return times


def compare(levels: int, depth: int, width: int, batch: int, steps: int, repeats: int, train, held_out,
            compiled_names: list[str] | None = None, compile_step: bool = True, inference_repeats: int = 25) -> dict:
    torch.manual_seed(0)
    f32 = Ours(levels, depth, width)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        f32.log_prob(dequantise(train[:256], g))  # ActNorm data-dependent init
    initial = copy.deepcopy(f32.model.state_dict())
    bf16 = copy.deepcopy(f32)
    has_bf16 = fk.set_conditioner_precision(bf16.model, "bf16-conditioners", warn=False) == "bf16-conditioners"
    torch.manual_seed(0)
    peer = Normflows(levels, depth, width)
    with torch.no_grad():
        peer.log_prob(dequantise(train[:256], torch.Generator().manual_seed(0)))
    f32_name, bf16_name = "flowkit float32", "flowkit bf16-conditioners"
    # without native bfloat16 the bf16 model would only be a second float32 one: skipped, and said so
    nets = {f32_name: f32, **({bf16_name: bf16} if has_bf16 else {}), "normflows": peer}
    optimisers = {name: torch.optim.Adamax(net.model.parameters(), lr=1e-3, foreach=True) for name, net in nets.items()}
    picks = [torch.randint(len(train), (batch,), generator=g) for _ in range(steps)]
    batches = [dequantise(train[i], g) for i in picks]

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
    reference = float32_noise_reference(levels, depth, width, initial, train, picks, eval_x)
    rows = []
    with torch.no_grad():
        for net in nets.values():
            net.model.eval()
        bpd = {name: held_out_bpd(net, eval_x) for name, net in nets.items()}
        flowkit_names = [name for name in (f32_name, bf16_name) if name in nets]
        compiled = compile_inference(nets, [n for n in compiled_names or flowkit_names if n in nets], eval_x)
        cases = {name: (net.log_prob, net.sample) for name, net in nets.items()}
        cases.update({f"{name} compiled": (c["log_prob"], c["sample"]) for name, c in compiled.items()})
        inference = inference_times(cases, eval_x, inference_repeats)
    step_compiled = compiled_steps(nets, flowkit_names, batches[0], repeats) if compile_step else {}
    for name in nets:
        rows.append({"model": name, "K": depth, "train_step_ms": spread(step_ms[name]),
                     "eval_64_ms": spread(inference[name]["eval"]), "sample_16_ms": spread(inference[name]["sample"]),
                     "held_out_bpd": round(bpd[name], 4)})
        if name in compiled:
            frozen = compiled[name]
            rows[-1].update({"compiled_eval_64_ms": spread(inference[f"{name} compiled"]["eval"]),
                             "compiled_sample_16_ms": spread(inference[f"{name} compiled"]["sample"]),
                             "compiled_sample_max_abs_diff_vs_eager": frozen["sample_max_abs_diff_vs_eager"],
                             "compiles": frozen["log_prob"].compiles + frozen["sample"].compiles})
        if name in step_compiled:
            rows[-1]["compiled_train_step_ms"] = spread(step_compiled[name])

    by_name = {row["model"]: row for row in rows}
    f32_row, bf16_row, peer_row = by_name[f32_name], by_name.get(bf16_name, {}), by_name["normflows"]

    def ratio(slow: dict, key_slow: str, fast: dict, key_fast: str) -> float | None:
        if key_slow not in slow or key_fast not in fast:
            return None
        return round(slow[key_slow]["median"] / fast[key_fast]["median"], 3)

    summary = {
        "precision_in_effect": bf16_name.removeprefix("flowkit ") if has_bf16 else "float32",
        "bf16_skipped": None if has_bf16 else BF16_SKIPPED,
        "bf16_step_speedup": ratio(f32_row, "train_step_ms", bf16_row, "train_step_ms"),
        "bf16_eval_speedup": ratio(f32_row, "eval_64_ms", bf16_row, "eval_64_ms"),
        "bf16_sample_speedup": ratio(f32_row, "sample_16_ms", bf16_row, "sample_16_ms"),
        "bf16_compiled_step_speedup": ratio(f32_row, "compiled_train_step_ms", bf16_row, "compiled_train_step_ms"),
        "bf16_compiled_step_vs_float32_eager": ratio(f32_row, "train_step_ms", bf16_row, "compiled_train_step_ms"),
        "bf16_step_vs_normflows": ratio(peer_row, "train_step_ms", bf16_row, "train_step_ms"),
        "bf16_sample_vs_normflows": ratio(peer_row, "sample_16_ms", bf16_row, "sample_16_ms"),
        "bf16_compiled_sample_vs_normflows": ratio(peer_row, "sample_16_ms", bf16_row, "compiled_sample_16_ms"),
        "bf16_compiled_eval_vs_normflows": ratio(peer_row, "eval_64_ms", bf16_row, "compiled_eval_64_ms"),
        "float32_compiled_sample_vs_normflows": ratio(peer_row, "sample_16_ms", f32_row, "compiled_sample_16_ms"),
        "bf16_compiled_sample_speedup": ratio(f32_row, "compiled_sample_16_ms", bf16_row, "compiled_sample_16_ms"),
        "float32_other_noise_bpd": round(reference, 4),
        "float32_noise_seed_delta": round(reference - bpd[f32_name], 4),
        **(bf16_quality(bf16, bpd[bf16_name] - bpd[f32_name], eval_x, held_out) if has_bf16 else
           dict.fromkeys(BF16_QUALITY_KEYS)),
    }
    return {"rows": rows, "summary": summary, "steps": steps, "batch": batch, "width": width}


BF16_SKIPPED = f"{NO_BF16}: the bf16 model is skipped"
BF16_QUALITY_KEYS = ("bf16_bits_per_dim_delta", "bf16_weights_float32_eval_bpd", "round_trip_max_abs_error",
                     "round_trip_mean_abs_error", "round_trip_fraction_above_1e-4", "round_trip_8bit_pixels_changed")


@torch.no_grad()
def bf16_quality(bf16, bpd_delta: float, eval_x: torch.Tensor, held_out: torch.Tensor) -> dict:
    """What bf16 conditioners cost in quality: the bits/dim delta, the same weights
    evaluated in float32, and the round trip on 64 held-out images."""
    fk.set_conditioner_precision(bf16.model, "float32")
    float32_eval = held_out_bpd(bf16, eval_x)
    fk.set_conditioner_precision(bf16.model, "bf16-conditioners")
    images = held_out[:64]
    x = bf16.model.preprocess(images, torch.Generator().manual_seed(3))
    error = (bf16.model.decode(bf16.model.encode(x)) - x).abs()
    changed = (bf16.model.postprocess(bf16.model.decode(bf16.model.encode(x))) != images).float().mean()
    values = (round(bpd_delta, 4), round(float32_eval, 4), float(error.max()), float(error.mean()),
              round(float((error > 1e-4).float().mean()), 5), round(float(changed), 6))
    return dict(zip(BF16_QUALITY_KEYS, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    glow_size_options(parser)
    parser.add_argument("--steps", type=int, default=200, help="training steps of each model (same batches)")
    parser.add_argument("--repeats", type=int, default=7, help="timed training-step rounds (interleaved)")
    parser.add_argument("--inference-repeats", type=int, default=25,
                        help="timed rounds of evaluation and sampling (eager and compiled interleaved)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-compiled-step", action="store_true",
                        help="skip the compiled training steps (each compile takes a minute or more)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.steps, args.repeats, args.inference_repeats = [1], 16, 4, 2, 2
    train = cifar("train", 2000 if args.quick else None)
    held_out = cifar("val", 100 if args.quick else 400)
    # the quick run compiles one model only: compiling is most of its time
    quick_compiled = "flowkit bf16-conditioners" if fk.bf16_supported("cpu") else "flowkit float32"
    compiled_names = [quick_compiled] if args.quick else None
    compile_step = not (args.quick or args.no_compiled_step)
    results = [compare(args.levels, k, args.width, args.batch, args.steps, args.repeats, train, held_out,
                       compiled_names,
                       compile_step, args.inference_repeats) for k in args.depths]
    payload = {"config": options(args), "fp_support": {"cpu_bf16": fk.bf16_supported("cpu")},
               "by_depth": results}
    path = write("precision_quick" if args.quick else "precision", payload, args.results)
    flat = [{"model": r["model"], "K": r["K"], "step ms (median)": r["train_step_ms"]["median"],
             "eval 64 ms": r["eval_64_ms"]["median"], "sample 16 ms": r["sample_16_ms"]["median"],
             "compiled step ms": r.get("compiled_train_step_ms", {}).get("median", "-"),
             "compiled eval 64 ms": r.get("compiled_eval_64_ms", {}).get("median", "-"),
             "compiled sample 16 ms": r.get("compiled_sample_16_ms", {}).get("median", "-"),
             "held-out bpd": r["held_out_bpd"]} for res in results for r in res["rows"]]
    print(table(flat, list(flat[0])))
    if not fk.bf16_supported("cpu"):
        print(f"note: {BF16_SKIPPED}")
    for res in results:
        print(res["rows"][0]["K"], res["summary"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
