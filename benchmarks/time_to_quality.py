"""Time to quality: flowkit and normflows train Glows of equal size for the same wall-clock
budget, interleaved in one process, with held-out bits/dim measured along the way.

Users buy a model of a given quality in the least time, not steps. Both libraries train
on the same dequantised real CIFAR-10 batches (shared ``train_10k``, the same batch
sequence) with batch 16, each in its own recipe:

- normflows: the Glow of its example notebook (``benchmarks.peers``), eager, trained as
  the notebook does (``forward_kld``, Adamax lr 1e-3, weight decay 1e-5);
- flowkit: its openai-faithful Glow trained by flowkit's own engine
  (``flowkit.train.Trainer.train_step``: finite-loss and gradient checks included),
  Adamax with its short-budget CPU recipe (``--flowkit-lr`` 4e-3 after ``--flowkit-warmup``
  200 linear warmup steps; docs/glow.md, "Short budgets"), evaluated on its EMA weights
  (the engine's default ``ema_decay`` 0.999 with its warmed-up decay; ``--flowkit-ema 0``
  evaluates the raw weights), in the mode given by ``--flowkit-mode`` (default ``bf16``:
  eager with ``precision="bf16-conditioners"``; ``compiled+bf16`` adds
  ``TrainConfig.compile``, whose cold compile counts against the budget).

The two alternate in slices of ``--slice-s`` seconds; each library's clock counts only its
own training time. Whenever a clock passes a multiple of ``--eval-every-s`` the library's
current weights are evaluated (outside the clock) on ``--eval-images`` images of the shared
``val_1k`` with fixed dequantisation noise. Reported per depth: both curves, normflows'
final bits/dim, the time each library first reaches it (linear interpolation between
checkpoints) and their ratio, bits/dim at equal times, and whether flowkit is ahead at
every checkpoint. Before training, the eager training steps of both (fresh models,
interleaved repeats) give the eager step ratio with its spread.

    python -m benchmarks.time_to_quality                       # 10-minute budget, K = 4 and 8 (about 50 minutes)
    python -m benchmarks.time_to_quality --budget-s 160 --depths 4
    python -m benchmarks.time_to_quality --quick               # smoke run (seconds)

Writes benchmarks/results/time_to_quality.json (or _quick.json) with a top-level
``summary``, and the curves as time_to_quality.png beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--warm-compile-cache" not in sys.argv:  # measure a user's first compile, not one served from an earlier run's cache
    os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch

import flowkit as fk
from benchmarks._common import (
    NO_BF16,
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
from benchmarks.glow_vs_normflows import bits_per_dim
from benchmarks.peers import normflows_glow
from flowkit.train.engine import TrainConfig, Trainer
from flowkit_image import Glow, GlowConfig

FLOWKIT_MODES = {"eager": {}, "compiled": {"compile": True}, "bf16": {"precision": "bf16-conditioners"},
                 "compiled+bf16": {"compile": True, "precision": "bf16-conditioners"}}
def mode_in_effect(mode: str) -> str:
    """``mode``, or its float32 form where the CPU lacks native bfloat16 (said in one line)."""
    if "bf16" not in mode or fk.bf16_supported("cpu"):
        return mode
    print(f"note: {NO_BF16}: the {mode} mode runs as its float32 form", flush=True)
    return {"bf16": "eager", "compiled+bf16": "compiled"}[mode]


FLOWKIT_LR, FLOWKIT_WARMUP = 4e-3, 200  # the short-budget recipe of docs/glow.md
FLOWKIT_EMA = TrainConfig.ema_decay  # the engine's default
NORMFLOWS_LR = 1e-3  # normflows' notebook


class BatchStream:
    """The same sequence of dequantised training batches for every library."""

    def __init__(self, images: torch.Tensor, batch: int, seed: int = 0):
        self.images, self.batch, self.seed = images, batch, seed

    def __call__(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return dequantise(self.images[torch.randint(len(self.images), (self.batch,), generator=g)], g)


class Contender:
    """One library's model, training loop and clock."""

    name: str

    def __init__(self, stream: BatchStream, held_out: torch.Tensor):
        self.stream, self.held_out = stream, held_out
        self.clock, self.steps = 0.0, 0
        self.curve: list[dict] = []

    def train_step(self, x: torch.Tensor) -> float:
        raise NotImplementedError

    def log_prob(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def module(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def eval_module(self) -> torch.nn.Module:
        """The weights that are evaluated: the trained ones unless a library averages them."""
        return self.module

    def train_for(self, seconds: float, until: float) -> None:
        """Train for about ``seconds`` of this library's clock, never past ``until``."""
        stop = min(self.clock + seconds, until)
        while self.clock < stop:
            x = self.stream(self.steps)
            start = time.perf_counter()
            loss = self.train_step(x)
            self.clock += time.perf_counter() - start
            if self.steps == 0:
                self.first_step_s = round(self.clock, 1)  # includes compiling, in a compiled mode
            self.steps += 1
            if not math.isfinite(loss):
                raise RuntimeError(f"{self.name}: non-finite loss at step {self.steps}")

    def evaluate(self, module: torch.nn.Module | None = None) -> float:
        module = self.eval_module if module is None else module
        module.eval()
        with torch.no_grad():
            bpd = torch.cat([bits_per_dim(self.log_prob(module, self.held_out[i:i + 100]))
                             for i in range(0, len(self.held_out), 100)]).mean()
        module.train()
        return float(bpd)

    def checkpoint(self) -> None:
        self.curve.append({"time_s": round(self.clock, 1), "steps": self.steps,
                           "bits_per_dim": round(self.evaluate(), 4)})


class NormflowsGlow(Contender):
    name = "normflows"

    def __init__(self, levels: int, depth: int, width: int, stream: BatchStream, held_out: torch.Tensor):
        super().__init__(stream, held_out)
        torch.manual_seed(0)
        self.model = normflows_glow(levels, depth, width, num_classes=0)
        with torch.no_grad():
            self.model.log_prob(stream(0) + 0.5, None)  # ActNorm's data-dependent init
        self.optimizer = torch.optim.Adamax(self.model.parameters(), lr=NORMFLOWS_LR, weight_decay=1e-5)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def log_prob(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module.log_prob(x + 0.5, None)  # normflows' examples feed [0, 1]; same bin width 1/256

    def train_step(self, x: torch.Tensor) -> float:
        loss = self.model.forward_kld(x + 0.5, None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


class FlowkitGlow(Contender):
    name = "flowkit"

    def __init__(self, levels: int, depth: int, width: int, stream: BatchStream, held_out: torch.Tensor, mode: str,
                 out_dir: Path, lr: float = FLOWKIT_LR, warmup_steps: int = FLOWKIT_WARMUP,
                 ema_decay: float = FLOWKIT_EMA):
        super().__init__(stream, held_out)
        torch.manual_seed(0)
        self.model = Glow(GlowConfig(levels=levels, depth=depth, width=width))
        self.mode, self.mode_in_effect = mode, mode_in_effect(mode)
        config = TrainConfig(steps=10**9, batch_size=stream.batch, lr=lr, warmup_steps=warmup_steps,
                             ema_decay=ema_decay or None, log_every=10**9, **FLOWKIT_MODES[self.mode_in_effect])
        self.trainer = Trainer(self.model, self._loss, lambda step: (stream(step),), config, out_dir, progress=False)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    @property
    def eval_module(self) -> torch.nn.Module:
        return self.trainer.eval_model

    def _loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
        return self.model.nll_to_bits_per_dim(model(batch[0])).mean(), {}

    def log_prob(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module.log_prob(x)

    def checkpoint(self) -> None:
        """The evaluated (EMA) weights' bits/dim, and beside it the raw weights' for comparison."""
        super().checkpoint()
        if self.trainer.ema is not None:
            self.curve[-1]["raw_bits_per_dim"] = round(self.evaluate(self.model), 4)

    def train_step(self, x: torch.Tensor) -> float:
        return self.trainer.train_step((x,))["loss"]


def eager_step_times(levels: int, depth: int, width: int, stream: BatchStream, repeats: int) -> dict:
    """Eager training steps of fresh models, interleaved: min / median / max ms and the ratio."""
    models = {"normflows": normflows_glow(levels, depth, width, num_classes=0),
              "flowkit": Glow(GlowConfig(levels=levels, depth=depth, width=width))}
    log_probs = {"normflows": lambda m, x: m.log_prob(x + 0.5, None), "flowkit": lambda m, x: m.log_prob(x)}
    optimizers = {k: torch.optim.Adamax(m.parameters(), lr=1e-4, foreach=True) for k, m in models.items()}
    x = stream(0)
    for name, model in models.items():
        with torch.no_grad():
            log_probs[name](model, x)

    def step(name: str) -> None:
        loss = bits_per_dim(log_probs[name](models[name], x)).mean()
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()

    times = interleaved_times({name: (lambda name=name: step(name)) for name in models}, repeats, warmup=3)
    out = {f"{name}_step_ms": spread(values) for name, values in times.items()}
    out["step_ratio"] = round(statistics.median(times["normflows"]) / statistics.median(times["flowkit"]), 3)
    out["step_ratio_of_minima"] = round(min(times["normflows"]) / min(times["flowkit"]), 3)
    return out


def first_time_at_or_below(curve: list[dict], target: float) -> float | None:
    """The first time a curve reaches ``target`` bits/dim, interpolated between checkpoints."""
    previous = None
    for point in curve:
        if point["bits_per_dim"] <= target:
            if previous is None:
                return point["time_s"]
            (t0, b0), (t1, b1) = (previous["time_s"], previous["bits_per_dim"]), (point["time_s"],
                                                                                  point["bits_per_dim"])
            return t0 + (t1 - t0) * (b0 - target) / (b0 - b1)
        previous = point
    return None


def raw_weights_curve(curve: list[dict]) -> list[dict]:
    """flowkit's raw-weight checkpoints, where its EMA weights are the evaluated ones."""
    return [{"time_s": p["time_s"], "bits_per_dim": p["raw_bits_per_dim"]} for p in curve if "raw_bits_per_dim" in p]


def race(levels: int, depth: int, width: int, stream: BatchStream, held_out: torch.Tensor, args) -> dict:
    with tempfile.TemporaryDirectory() as out_dir:
        flowkit = FlowkitGlow(levels, depth, width, stream, held_out, args.flowkit_mode, Path(out_dir),
                              args.flowkit_lr, args.flowkit_warmup, args.flowkit_ema)
        normflows = NormflowsGlow(levels, depth, width, stream, held_out)
        contenders = [flowkit, normflows]
        torch._dynamo.utils.counters.clear()
        for k in range(1, math.ceil(args.budget_s / args.eval_every_s) + 1):
            checkpoint = min(k * args.eval_every_s, args.budget_s)
            while any(c.clock < checkpoint for c in contenders):
                for c in contenders:
                    c.train_for(args.slice_s, checkpoint)
            for c in contenders:
                c.checkpoint()
            last = flowkit.curve[-1]
            raw = f"  flowkit raw {last['raw_bits_per_dim']:.3f}" if "raw_bits_per_dim" in last else ""
            print(f"K={depth} t={checkpoint:5.0f}s  " + "  ".join(
                f"{c.name} {c.curve[-1]['bits_per_dim']:.3f} ({c.steps} steps)" for c in contenders) + raw, flush=True)
        compile_stats = dynamo_counters()
    target = normflows.curve[-1]["bits_per_dim"]
    t_flowkit, t_normflows = first_time_at_or_below(flowkit.curve,
                                                    target), first_time_at_or_below(normflows.curve, target)
    t_raw = first_time_at_or_below(raw_weights_curve(flowkit.curve), target)
    ahead = [f["bits_per_dim"] < n["bits_per_dim"] for f, n in zip(flowkit.curve, normflows.curve)]
    return {
        "K": depth,
        "parameters": {c.name: sum(p.numel() for p in c.module.parameters()) for c in contenders},
        "flowkit_mode": args.flowkit_mode, "flowkit_mode_in_effect": flowkit.mode_in_effect,
        "curves": {c.name: c.curve for c in contenders},
        "normflows_final_bits_per_dim": target,
        "time_to_normflows_final_s": {"flowkit": None if t_flowkit is None else round(t_flowkit, 1),
                                      "normflows": round(t_normflows, 1)},
        "time_ratio": None if t_flowkit is None else round(t_normflows / t_flowkit, 2),
        # the same run's raw (not averaged) flowkit weights, to separate the EMA's share
        "time_ratio_raw_weights": None if t_raw is None else round(t_normflows / t_raw, 2),
        "flowkit_ahead_at_every_checkpoint": all(ahead),
        "checkpoints_flowkit_behind": [f["time_s"] for f, a in zip(flowkit.curve, ahead) if not a],
        "steps_per_s": {c.name: round(c.steps / c.clock, 2) for c in contenders},
        "first_step_s": {c.name: c.first_step_s for c in contenders},
        # the checkpoints from one evaluation interval after flowkit's first (compiling) step on
        "flowkit_ahead_after_compiling": all(a for a, f in zip(ahead, flowkit.curve)
                                             if f["time_s"] >= flowkit.first_step_s + args.eval_every_s),
        "compile": compile_stats,
    }


def plot(results: list[dict], path: Path, recipe: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, result in zip(axes[0], results):
        for name, curve in result["curves"].items():
            ema = f", EMA {recipe['ema_decay']:g}" if recipe.get("ema_decay") else ""
            label = (f"flowkit ({result['flowkit_mode']}, lr {recipe['lr']:g}{ema})" if name == "flowkit"
                     else f"normflows (eager, lr {NORMFLOWS_LR:g})")
            ax.plot([p["time_s"] for p in curve], [p["bits_per_dim"] for p in curve], marker=".", label=label)
            raw = raw_weights_curve(curve)
            if raw:
                ax.plot([p["time_s"] for p in raw], [p["bits_per_dim"] for p in raw], linestyle="--", linewidth=1,
                        color=ax.lines[-1].get_color(), label="flowkit, raw weights")
        ax.axhline(result["normflows_final_bits_per_dim"], color="grey", linestyle=":", linewidth=1)
        t = result["time_to_normflows_final_s"]["flowkit"]
        if t is not None:
            ax.axvline(t, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"Glow K = {result['K']}: {result['time_ratio']}x sooner to normflows' final bits/dim")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("held-out bits/dim (val_1k)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bf16_figures(folder: Path) -> dict:
    """The bf16-conditioner step speed-up and bits/dim change measured by benchmarks/precision.py."""
    path = folder / "precision.json"
    if not path.exists():
        return {"bf16_step_speedup": None, "bf16_bits_per_dim_delta": None, "bf16_source": "precision.json absent"}
    payload = json.loads(path.read_text())
    rows = [{"K": r["rows"][0]["K"], **r["summary"]} for r in payload.get("by_depth", [])]
    if not rows:
        return {"bf16_step_speedup": None, "bf16_bits_per_dim_delta": None, "bf16_source": "precision.json has no rows"}
    first = next((r for r in rows if r["K"] == 4), rows[0])
    per_depth = {"step_speedup": "bf16_step_speedup", "bits_per_dim_delta": "bf16_bits_per_dim_delta",
                 "float32_noise_seed_delta": "float32_noise_seed_delta",
                 "compiled_step_speedup": "bf16_compiled_step_speedup",
                 "compiled_sample_vs_normflows": "bf16_compiled_sample_vs_normflows",
                 "compiled_eval_vs_normflows": "bf16_compiled_eval_vs_normflows"}
    by_depth = {f"K={r['K']}": {key: r.get(field) for key, field in per_depth.items()} for r in rows}
    seeds_path = folder / "precision_seeds.json"
    if seeds_path.exists():  # the delta averaged over seeds (benchmarks/precision_seeds.py)
        for d in json.loads(seeds_path.read_text()).get("by_depth", []):
            by_depth.setdefault(f"K={d['K']}", {}).update({
                "bits_per_dim_delta_seed_mean": d["mean_delta"],
                "bits_per_dim_delta_standard_error": d["standard_error"],
                "seeds": len(d["runs"])})
    return {"bf16_step_speedup": first["bf16_step_speedup"],
            "bf16_bits_per_dim_delta": first["bf16_bits_per_dim_delta"],
            "bf16_by_depth": by_depth,
            "bf16_source": f"benchmarks/results/precision.json ({payload.get('command', '?')}), K = {first['K']}"}


def refresh_bf16(folder: Path) -> Path:
    """Rewrite the bf16 figures of an existing ``time_to_quality.json`` summary from the
    current ``precision.json``, leaving the race itself as it was measured."""
    path = folder / "time_to_quality.json"
    payload = json.loads(path.read_text())
    payload["summary"].update(bf16_figures(folder))
    payload["bf16_refreshed_at"] = time.strftime("%Y-%m-%d")
    path.write_text(json.dumps(payload, indent=2, allow_nan=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budget, for the test suite")
    glow_size_options(parser)
    parser.add_argument("--budget-s", type=float, default=600.0, help="training seconds per library and depth")
    parser.add_argument("--eval-every-s", type=float, default=30.0)
    parser.add_argument("--slice-s", type=float, default=5.0, help="training seconds before switching library")
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--step-repeats", type=int, default=25, help="interleaved eager steps for the step ratio")
    parser.add_argument("--flowkit-mode", choices=sorted(FLOWKIT_MODES), default="bf16")
    parser.add_argument("--flowkit-lr", type=float, default=FLOWKIT_LR, help="flowkit's Adamax learning rate")
    parser.add_argument("--flowkit-warmup", type=int, default=FLOWKIT_WARMUP, help="flowkit's linear warmup steps")
    parser.add_argument("--flowkit-ema", type=float, default=FLOWKIT_EMA,
                        help="EMA decay of the evaluated weights (0: the raw weights)")
    parser.add_argument("--warm-compile-cache", action="store_true",
                        help="let inductor reuse compiled kernels from earlier runs (default: a cold compile)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON and PNG")
    parser.add_argument("--refresh-bf16", action="store_true",
                        help="only copy the figures of a newer precision.json into the existing summary")
    args = parser.parse_args()
    if args.refresh_bf16:
        print(f"updated {refresh_bf16(args.results)}")
        return
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.budget_s, args.eval_every_s, args.slice_s = [1], 16, 2.0, 1.0, 0.5
        args.eval_images, args.step_repeats, args.flowkit_mode = 100, 2, "eager"
    stream = BatchStream(cifar("train"), args.batch)
    held_out = dequantise(cifar("val", args.eval_images), torch.Generator().manual_seed(1))
    results, steps = [], []
    for depth in args.depths:
        steps.append({"K": depth, **eager_step_times(args.levels, depth, args.width, stream, args.step_repeats)})
        print(f"K={depth} eager step ratio (normflows / flowkit): {steps[-1]['step_ratio']}", flush=True)
        results.append(race(args.levels, depth, args.width, stream, held_out, args))
    rows = [{"K": r["K"], "params flowkit": r["parameters"]["flowkit"],
             "params normflows": r["parameters"]["normflows"],
             "normflows final bpd": r["normflows_final_bits_per_dim"],
             "flowkit final bpd": r["curves"]["flowkit"][-1]["bits_per_dim"],
             "flowkit s to it": r["time_to_normflows_final_s"]["flowkit"],
             "normflows s to it": r["time_to_normflows_final_s"]["normflows"], "time ratio": r["time_ratio"],
             "ahead everywhere": r["flowkit_ahead_at_every_checkpoint"],
             "steps/s flowkit": r["steps_per_s"]["flowkit"], "steps/s normflows": r["steps_per_s"]["normflows"]}
            for r in results]
    print(table(rows, list(rows[0])))
    by_k = {r["K"]: r for r in results}
    eager = {s["K"]: s for s in steps}
    summary = {"time_ratio_k4": by_k[4]["time_ratio"] if 4 in by_k else None,
               "time_ratio_k8": by_k[8]["time_ratio"] if 8 in by_k else None,
               **bf16_figures(args.results),
               "eager_step_ratio_k4": eager[4]["step_ratio"] if 4 in eager else None,
               "eager_step_ratio_k8": eager[8]["step_ratio"] if 8 in eager else None,
               "budget_s": args.budget_s, "flowkit_mode": args.flowkit_mode,
               "flowkit_recipe": {"lr": args.flowkit_lr, "warmup_steps": args.flowkit_warmup,
                                  "ema_decay": args.flowkit_ema or None}}
    name = "time_to_quality_quick" if args.quick else "time_to_quality"
    args.results.mkdir(parents=True, exist_ok=True)
    plot(results, args.results / f"{name}.png", summary["flowkit_recipe"])
    path = write(name, {"summary": summary, "config": options(args),
                        "data": {"train": cifar_source("train"), "held_out": cifar_source("val", args.eval_images)},
                        "eager_steps": steps, "results": results}, args.results)
    print(json.dumps(summary, indent=2))
    print(f"\nwrote {path} and {name}.png")


if __name__ == "__main__":
    main()
