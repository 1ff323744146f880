"""Time to quality, a fair race: flowkit and normflows train Glows of equal size for the
same wall-clock budget, each at its best learning rate, with the same warmup and the same
weight averaging, over several seeds; held-out bits/dim is measured along the way.

Users buy a model of a given quality in the least time, not steps. The race is run in
pieces, each writing its JSON under ``results/time_to_quality/``, then merged:

1. ``--part sweep``: the learning rate of each library. Every value of ``--lrs`` (the same
   grid for both) trains a fresh model (seed 0) for ``--sweep-s`` seconds with the shared
   recipe below, and its averaged weights are scored on ``--select-images`` training
   images the runs never train on (the last ones of ``train_10k``): the choice sees no
   held-out data. normflows' own notebook recipe (lr 1e-3, no warmup, no averaging) runs
   beside it, to show what the recipe is worth.
2. ``--part race --seeds 0,1,2``: per seed, both libraries at their swept learning rate,
   interleaved in one process in slices of ``--slice-s`` seconds (each clock counts only
   its own steps) for ``--budget-s`` seconds each; at every checkpoint of
   ``--checkpoints-s`` both the averaged and the raw weights are scored, outside the
   clocks, on ``--eval-images`` images of ``val_1k`` (CIFAR-10 test images, never trained
   on) with fixed dequantisation noise. The seed draws the initial weights and the batch
   sequence, shared by both libraries.
3. ``--part merge``: the pieces of every depth and seed into ``time_to_quality.json`` and
   its curves (``time_to_quality.png``, median and range over seeds).

The shared recipe: Adamax in its multi-tensor (``foreach``) form, linear warmup over
``--warmup`` steps, and the evaluated weights are an exponential average (decay ``--ema``
warmed up as ``min(d, (1 + t) / (10 + t))``); normflows gets it through
``torch.optim.swa_utils.AveragedModel`` and ``LambdaLR``, flowkit through its engine
(``flowkit.train.Trainer.train_step``, finite-loss and gradient checks included).
normflows trains as its notebook does otherwise (``forward_kld``, weight decay 1e-5);
flowkit's Glow is the openai-faithful one in ``--flowkit-mode`` (default ``bf16``: eager
with ``precision="bf16-conditioners"``, its float32 form where the CPU lacks native
bfloat16). Both train on the same dequantised ``train_10k`` batches, batch 16.

For each budget of ``--budgets-s`` the race reports the time ratio: normflows' averaged
weights' bits/dim at that budget is the target, and the ratio is the time normflows
first reached it over the time flowkit did. Its parts: steps per second (speed) times
the steps each needs to reach it (learning per step), and the same ratio on raw weights.

    python -m benchmarks.time_to_quality --part sweep --depths 4            # about 15 minutes
    python -m benchmarks.time_to_quality --part race --depths 4 --seeds 0   # about 22 minutes a seed
    python -m benchmarks.time_to_quality --part merge
    python -m benchmarks.time_to_quality --quick                            # all three, tiny (a test)

Writes benchmarks/results/time_to_quality/*.json (the pieces), then
benchmarks/results/time_to_quality.json with a top-level ``summary`` and
time_to_quality.png (``_quick`` names for ``--quick``).
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
from torch.optim.swa_utils import AveragedModel

import flowkit as fk
from benchmarks._common import (
    NO_BF16,
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
from benchmarks.glow_vs_normflows import bits_per_dim
from benchmarks.peers import normflows_glow
from flowkit.errors import FlowkitError
from flowkit.train.engine import TrainConfig, Trainer
from flowkit.train.optim import linear_warmup, warmed_up_ema
from flowkit_image import Glow, GlowConfig

FLOWKIT_MODES = {"eager": {}, "compiled": {"compile": True}, "bf16": {"precision": "bf16-conditioners"},
                 "compiled+bf16": {"compile": True, "precision": "bf16-conditioners"}}
LIBRARIES = ("flowkit", "normflows")
LRS = "1e-3,2e-3,4e-3,8e-3,1.6e-2,3.2e-2"
BUDGETS = "150,300,600"
CHECKPOINTS = "10,20,30,45,60,90,120,150,180,240,300,360,420,480,540,600"
WARMUP, EMA = 200, TrainConfig.ema_decay
NORMFLOWS_WEIGHT_DECAY = 1e-5  # its notebook's
NOTEBOOK = {"lr": 1e-3, "warmup_steps": 0, "ema_decay": None}  # normflows' examples/glow.ipynb
FLOWKIT_LR, FLOWKIT_WARMUP = 4e-3, WARMUP  # docs/glow.md's short-budget recipe (benchmarks/recipe.py uses it)
PIECES = "time_to_quality"  # the folder of the pieces, under --results


def mode_in_effect(mode: str) -> str:
    """``mode``, or its float32 form where the CPU lacks native bfloat16 (said in one line)."""
    if "bf16" not in mode or fk.bf16_supported("cpu"):
        return mode
    print(f"note: {NO_BF16}: the {mode} mode runs as its float32 form", flush=True)
    return {"bf16": "eager", "compiled+bf16": "compiled"}[mode]


def number_list(kind: type):
    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, not {text!r}") from None
        if not values or min(values) < 0:
            raise argparse.ArgumentTypeError(f"expected numbers >= 0, not {text!r}")
        return values
    return parse


class BatchStream:
    """The same sequence of dequantised training batches for every library (one per seed)."""

    def __init__(self, images: torch.Tensor, batch: int, seed: int = 0):
        self.images, self.batch, self.seed = images, batch, seed

    def __call__(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return dequantise(self.images[torch.randint(len(self.images), (self.batch,), generator=g)], g)


class Contender:
    """One library's model, recipe, training loop and clock."""

    name: str

    def __init__(self, stream: BatchStream, held_out: torch.Tensor, recipe: dict):
        self.stream, self.held_out, self.recipe = stream, held_out, recipe
        self.clock, self.steps, self.first_step_s = 0.0, 0, None
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
        """The weights that are evaluated: the average where the recipe keeps one."""
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

    def evaluate(self, module: torch.nn.Module | None = None, images: torch.Tensor | None = None) -> float:
        module = self.eval_module if module is None else module
        images = self.held_out if images is None else images
        module.eval()
        with torch.no_grad():
            bpd = torch.cat([bits_per_dim(self.log_prob(module, images[i:i + 100]))
                             for i in range(0, len(images), 100)]).mean()
        module.train()
        return float(bpd)

    def checkpoint(self, nominal_s: float) -> None:
        """Bits/dim of the evaluated weights and, where they are an average, of the raw ones."""
        point = {"checkpoint_s": nominal_s, "time_s": round(self.clock, 2), "steps": self.steps,
                 "bits_per_dim": round(self.evaluate(), 4)}
        if self.eval_module is not self.module:
            point["raw_bits_per_dim"] = round(self.evaluate(self.module), 4)
        self.curve.append(point)


class NormflowsGlow(Contender):
    """normflows' notebook Glow and loss; the optimiser, warmup and average of ``recipe``
    built from torch's own pieces (``LambdaLR``, ``swa_utils.AveragedModel``)."""

    name = "normflows"

    def __init__(self, levels: int, depth: int, width: int, stream: BatchStream, held_out: torch.Tensor,
                 recipe: dict, seed: int = 0):
        super().__init__(stream, held_out, recipe)
        torch.manual_seed(seed)
        self.model = normflows_glow(levels, depth, width, num_classes=0)
        with torch.no_grad():
            self.model.log_prob(stream(0) + 0.5, None)  # ActNorm's data-dependent init
        self.optimizer = torch.optim.Adamax(self.model.parameters(), lr=recipe["lr"],
                                            weight_decay=NORMFLOWS_WEIGHT_DECAY, foreach=True)
        self.scheduler = linear_warmup(self.optimizer, recipe["warmup_steps"])
        decay = recipe["ema_decay"]
        self.ema = AveragedModel(self.model, multi_avg_fn=warmed_up_ema(decay), use_buffers=False) if decay else None

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    @property
    def eval_module(self) -> torch.nn.Module:
        return self.model if self.ema is None else self.ema.module

    def log_prob(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module.log_prob(x + 0.5, None)  # normflows' examples feed [0, 1]; same bin width 1/256

    def train_step(self, x: torch.Tensor) -> float:
        loss = self.model.forward_kld(x + 0.5, None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return float(loss.detach())


class FlowkitGlow(Contender):
    """flowkit's openai-faithful Glow trained by flowkit's engine in ``mode``."""

    name = "flowkit"

    def __init__(self, levels: int, depth: int, width: int, stream: BatchStream, held_out: torch.Tensor, mode: str,
                 out_dir: Path, lr: float = FLOWKIT_LR, warmup_steps: int = FLOWKIT_WARMUP,
                 ema_decay: float | None = EMA, seed: int = 0):
        super().__init__(stream, held_out, {"lr": lr, "warmup_steps": warmup_steps, "ema_decay": ema_decay or None})
        torch.manual_seed(seed)
        self.model = Glow(GlowConfig(levels=levels, depth=depth, width=width))
        self.mode, self.mode_in_effect = mode, mode_in_effect(mode)
        config = TrainConfig(steps=10**9, batch_size=stream.batch, lr=lr, warmup_steps=warmup_steps, seed=seed,
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

    def train_step(self, x: torch.Tensor) -> float:
        return self.trainer.train_step((x,))["loss"]


def contender(name: str, recipe: dict, levels: int, depth: int, width: int, stream: BatchStream,
              held_out: torch.Tensor, mode: str, out_dir: Path, seed: int) -> Contender:
    if name == "normflows":
        return NormflowsGlow(levels, depth, width, stream, held_out, recipe, seed)
    return FlowkitGlow(levels, depth, width, stream, held_out, mode, out_dir, recipe["lr"], recipe["warmup_steps"],
                       recipe["ema_decay"], seed)


def eager_step_times(levels: int, depth: int, width: int, stream: BatchStream, repeats: int) -> dict:
    """Eager float32 training steps of fresh models, interleaved: min / median / max ms and the ratio."""
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


# ---- reading the curves -------------------------------------------------------------------------------------------

def first_time_at_or_below(curve: list[dict], target: float, key: str = "bits_per_dim") -> float | None:
    """The first time a curve reaches ``target``, interpolated linearly between checkpoints."""
    previous = None
    for point in curve:
        if point[key] <= target:
            if previous is None:
                return point["time_s"]
            (t0, b0), (t1, b1) = (previous["time_s"], previous[key]), (point["time_s"], point[key])
            return t0 + (t1 - t0) * (b0 - target) / (b0 - b1)
        previous = point
    return None


def steps_at(curve: list[dict], t: float) -> float:
    """The steps taken by clock time ``t``, interpolated between checkpoints (from 0 at 0 s)."""
    previous = {"time_s": 0.0, "steps": 0}
    for point in curve:
        if point["time_s"] >= t:
            span = point["time_s"] - previous["time_s"]
            return previous["steps"] + (point["steps"] - previous["steps"]) * ((t - previous["time_s"]) / span
                                                                                if span else 1.0)
        previous = point
    return float(curve[-1]["steps"])


def ratio_at(curves: dict[str, list[dict]], budget: float, key: str = "bits_per_dim") -> dict:
    """How much sooner flowkit reaches normflows' bits/dim at ``budget`` seconds, and its parts.

    The target is normflows' ``key`` at its last checkpoint within the budget; each
    library's time is when its curve first reaches it (normflows may have touched it
    before the budget). ``time_ratio`` = normflows' time / flowkit's, which is exactly
    ``speed_ratio`` (flowkit's steps per second / normflows', up to those times) times
    ``learning_ratio`` (the steps normflows needs / the steps flowkit needs). ``None``
    where flowkit never reaches the target in its whole race.
    """
    normflows = [p for p in curves["normflows"] if p["checkpoint_s"] <= budget]
    target = normflows[-1][key]
    t_n, t_f = first_time_at_or_below(normflows, target, key), first_time_at_or_below(curves["flowkit"], target, key)
    out = {"budget_s": budget, "target_bits_per_dim": target, "normflows_s": round(t_n, 1),
           "flowkit_s": None if t_f is None else round(t_f, 1)}
    if t_f is None:
        return {**out, "time_ratio": None, "speed_ratio": None, "learning_ratio": None}
    s_n, s_f = steps_at(curves["normflows"], t_n), steps_at(curves["flowkit"], t_f)
    return {**out, "normflows_steps": round(s_n), "flowkit_steps": round(s_f), "time_ratio": round(t_n / t_f, 3),
            "speed_ratio": round((s_f / t_f) / (s_n / t_n), 3), "learning_ratio": round(s_n / s_f, 3)}


def median_and_range(values: list[float | None]) -> dict:
    """Median, min and max over seeds. A seed where flowkit never reached the target
    ranks below every other; a median that lands on one is ``None``."""
    ordered = sorted(values, key=lambda v: -math.inf if v is None else v)
    middle = ordered[(len(ordered) - 1) // 2:len(ordered) // 2 + 1]
    median = None if None in middle else round(statistics.fmean(middle), 3)
    known = [v for v in values if v is not None]
    return {"median": median, "min": min(known) if len(known) == len(values) else None,
            "max": max(known) if known else None, "values": values}


# ---- the three parts ----------------------------------------------------------------------------------------------

def piece_name(kind: str, depth: int, args, seed: int | None = None) -> str:
    return f"{kind}_k{depth}" + ("" if seed is None else f"_seed{seed}") + ("_quick" if args.quick else "")


def data(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Training images, the training images kept back to choose learning rates, the
    held-out test images, and where each comes from."""
    images = cifar("train")
    train, select = images[:-args.select_images], images[-args.select_images:]
    held_out = dequantise(cifar("val", args.eval_images), torch.Generator().manual_seed(1))
    source = cifar_source("train")
    return train, dequantise(select, torch.Generator().manual_seed(2)), held_out, {
        "train": f"{source}, all but the last {args.select_images}",
        "learning_rate_choice": f"{source}, the last {args.select_images} (never trained on)",
        "held_out": cifar_source("val", args.eval_images) + " (CIFAR-10 test images, never trained on)"}


def run_sweep(depth: int, args) -> Path:
    """Each library at each learning rate of the grid for ``--sweep-s`` seconds, scored on
    kept-back training images; normflows' notebook recipe beside them."""
    train, select, _, sources = data(args)
    stream = BatchStream(train, args.batch, seed=0)
    plan = [(lr, name) for lr in args.lrs for name in LIBRARIES]
    plan.append((None, "normflows"))
    runs = []
    for lr, name in plan:
        shared = {"lr": lr, "warmup_steps": args.warmup, "ema_decay": args.ema or None}
        recipe = dict(NOTEBOOK) if lr is None else shared
        with tempfile.TemporaryDirectory() as out_dir:
            c = contender(name, recipe, args.levels, depth, args.width, stream, select, args.flowkit_mode,
                          Path(out_dir), seed=0)
            try:
                c.train_for(args.sweep_s, args.sweep_s)
                c.checkpoint(args.sweep_s)
                point = c.curve[-1]
                diverged = not math.isfinite(point["bits_per_dim"])
            except (RuntimeError, FlowkitError):  # a non-finite loss: this learning rate is out
                point, diverged = {"time_s": round(c.clock, 2)}, True
        runs.append({"library": name, "recipe": "notebook" if lr is None else "shared", **recipe,
                     "steps": c.steps, "train_s": point["time_s"], "diverged": diverged,
                     "bits_per_dim": None if diverged else point["bits_per_dim"],
                     "raw_bits_per_dim": None if diverged else point.get("raw_bits_per_dim", point["bits_per_dim"])})
        score = "diverged" if diverged else f"{runs[-1]['bits_per_dim']:.4f} bits/dim"
        print(f"K={depth} sweep {name:9s} {runs[-1]['recipe']:8s} lr {runs[-1]['lr']:g}: {score} after {c.steps} steps",
              flush=True)
    best = {name: min((r for r in runs if r["library"] == name and r["recipe"] == "shared" and not r["diverged"]),
                      key=lambda r: r["bits_per_dim"])["lr"] for name in LIBRARIES}
    print(table(runs, ["library", "recipe", "lr", "warmup_steps", "ema_decay", "steps", "bits_per_dim",
                       "raw_bits_per_dim"]))
    print(f"K={depth} best learning rates: {best}")
    return write(piece_name("sweep", depth, args), {
        "K": depth, "config": options(args), "data": sources, "runs": runs, "best_lr": best,
        "best_at_grid_edge": {n: best[n] in (min(args.lrs), max(args.lrs)) for n in LIBRARIES}},
        args.results / PIECES, seeds=[0])


def recipes_for(depth: int, args) -> dict[str, dict]:
    """Each library's race recipe: the shared one at its swept learning rate (or the one given)."""
    given = {"flowkit": args.flowkit_lr, "normflows": args.normflows_lr}
    path = args.results / PIECES / f"{piece_name('sweep', depth, args)}.json"
    if None in given.values() and not path.exists():
        raise SystemExit(f"no learning-rate sweep for K = {depth} at {path}: run --part sweep first "
                         "(or give --flowkit-lr and --normflows-lr)")
    swept = json.loads(path.read_text())["best_lr"] if path.exists() else {}
    return {name: {"lr": given[name] or swept[name], "lr_from": "given" if given[name] else f"sweep ({path.name})",
                   "warmup_steps": args.warmup, "ema_decay": args.ema or None,
                   "optimizer": "Adamax (foreach)",
                   "weight_decay": NORMFLOWS_WEIGHT_DECAY if name == "normflows" else 0.0}
            for name in LIBRARIES}


def run_race(depth: int, seed: int, args) -> Path:
    """One seed's race at ``depth``: both curves, averaged and raw weights, and the step timing."""
    train, _, held_out, sources = data(args)
    stream = BatchStream(train, args.batch, seed)
    recipes = recipes_for(depth, args)
    steps = eager_step_times(args.levels, depth, args.width, stream, args.step_repeats)
    print(f"K={depth} seed {seed}: eager float32 step ratio (normflows / flowkit) {steps['step_ratio']}", flush=True)
    checkpoints = [t for t in args.checkpoints_s if t <= args.budget_s]
    with tempfile.TemporaryDirectory() as out_dir:
        contenders = [contender(name, recipes[name], args.levels, depth, args.width, stream, held_out,
                                args.flowkit_mode, Path(out_dir), seed) for name in LIBRARIES]
        torch._dynamo.utils.counters.clear()
        for checkpoint in checkpoints:
            while any(c.clock < checkpoint for c in contenders):
                for c in contenders:
                    c.train_for(args.slice_s, checkpoint)
            for c in contenders:
                c.checkpoint(checkpoint)
            print(f"K={depth} seed {seed} t={checkpoint:5g}s  " + "  ".join(
                f"{c.name} {c.curve[-1]['bits_per_dim']:.3f} (raw {c.curve[-1].get('raw_bits_per_dim', '-')}, "
                f"{c.steps} steps)" for c in contenders), flush=True)
    curves = {c.name: c.curve for c in contenders}
    budgets = [b for b in args.budgets_s if b <= args.budget_s]
    return write(piece_name("race", depth, args, seed), {
        "K": depth, "seed": seed, "config": options(args), "data": sources, "recipes": recipes,
        "flowkit_mode": args.flowkit_mode, "flowkit_mode_in_effect": contenders[0].mode_in_effect,
        "parameters": {c.name: sum(p.numel() for p in c.module.parameters()) for c in contenders},
        "eager_steps": steps, "curves": curves,
        "steps_per_s": {c.name: round(c.steps / c.clock, 2) for c in contenders},
        "first_step_s": {c.name: c.first_step_s for c in contenders},
        "ratios": [ratio_at(curves, b) for b in budgets],
        "ratios_raw_weights": [ratio_at(curves, b, "raw_bits_per_dim") for b in budgets]},
        args.results / PIECES, seeds=[seed])


def load_pieces(args, kind: str) -> list[dict]:
    suffix = "_quick" if args.quick else ""
    paths = sorted((args.results / PIECES).glob(f"{kind}_k*{suffix}.json"))
    return [json.loads(p.read_text()) for p in paths if args.quick or not p.stem.endswith("_quick")]


def merged_provenance(pieces: list[dict]) -> dict:
    """The pieces' provenance as one: their commit (all of them, if they differ), dirty if
    any was, the last date, the seeds and every piece's command."""
    provenances = [p["provenance"] for p in pieces]
    commits = sorted({p["commit"] for p in provenances if p["commit"]})
    first = provenances[0]
    return {**first, "commit": commits[0] if len(commits) == 1 else commits,
            "dirty": any(p["dirty"] for p in provenances), "date": max(p["date"] for p in provenances),
            "cpu": sorted({p["cpu"] for p in provenances})[0] if len({p["cpu"] for p in provenances}) == 1
            else sorted({p["cpu"] for p in provenances}),
            "seeds": sorted({s for p in provenances for s in p.get("seeds", [])}),
            "command": "; ".join(dict.fromkeys(p["command"] for p in provenances))}


def summarise_depth(races: list[dict], budgets: list[float]) -> dict:
    """Median and range over seeds of every ratio at every budget."""
    out = {"seeds": [r["seed"] for r in races], "budgets": {}}
    for i, budget in enumerate(budgets):
        rows = {"averaged": [r["ratios"][i] for r in races], "raw": [r["ratios_raw_weights"][i] for r in races]}
        out["budgets"][f"{budget:g}"] = {
            "time_ratio": median_and_range([r["time_ratio"] for r in rows["averaged"]]),
            "speed_ratio": median_and_range([r["speed_ratio"] for r in rows["averaged"]]),
            "learning_ratio": median_and_range([r["learning_ratio"] for r in rows["averaged"]]),
            "time_ratio_raw_weights": median_and_range([r["time_ratio"] for r in rows["raw"]]),
            "normflows_target_bits_per_dim": median_and_range([r["target_bits_per_dim"] for r in rows["averaged"]])}
    out["eager_step_ratio"] = median_and_range([r["eager_steps"]["step_ratio"] for r in races])
    out["steps_per_s"] = {n: median_and_range([r["steps_per_s"][n] for r in races]) for n in LIBRARIES}
    out["final_bits_per_dim"] = {n: median_and_range([r["curves"][n][-1]["bits_per_dim"] for r in races])
                                 for n in LIBRARIES}
    return out


def run_merge(args) -> Path:
    sweeps = {s["K"]: s for s in load_pieces(args, "sweep")}
    races = load_pieces(args, "race")
    if not races:
        raise SystemExit(f"no race pieces under {args.results / PIECES}: run --part race first")
    budgets = sorted({r["budget_s"] for race in races for r in race["ratios"]})
    budgets = [b for b in budgets if all(any(x["budget_s"] == b for x in race["ratios"]) for race in races)]
    for race in races:  # every piece keeps only the shared budgets, in order
        for key in ("ratios", "ratios_raw_weights"):
            race[key] = [next(x for x in race[key] if x["budget_s"] == b) for b in budgets]
    by_depth = {}
    for depth in sorted({r["K"] for r in races}):
        these = sorted((r for r in races if r["K"] == depth), key=lambda r: r["seed"])
        by_depth[f"K={depth}"] = {**summarise_depth(these, budgets), "recipes": these[0]["recipes"],
                                  "parameters": these[0]["parameters"], "sweep": sweeps.get(depth)}
    last = f"{budgets[-1]:g}"

    def headline(depth: int, key: str = "time_ratio"):
        return by_depth[f"K={depth}"]["budgets"][last][key]["median"] if f"K={depth}" in by_depth else None

    first = by_depth[next(iter(by_depth))]
    summary = {"time_ratio_k4": headline(4), "time_ratio_k8": headline(8),
               **bf16_figures(args.results),
               "eager_step_ratio_k4": by_depth["K=4"]["eager_step_ratio"]["median"] if "K=4" in by_depth else None,
               "eager_step_ratio_k8": by_depth["K=8"]["eager_step_ratio"]["median"] if "K=8" in by_depth else None,
               "budget_s": budgets[-1], "budgets_s": budgets,
               "time_ratio_by_budget": {k: {b: v["time_ratio"] for b, v in d["budgets"].items()}
                                        for k, d in by_depth.items()},
               "gain_split": {k: {b: {part: v[part]["median"] for part in
                                      ("time_ratio", "speed_ratio", "learning_ratio", "time_ratio_raw_weights")}
                                  for b, v in d["budgets"].items()} for k, d in by_depth.items()},
               "seeds": {k: d["seeds"] for k, d in by_depth.items()},
               "flowkit_mode": races[0]["flowkit_mode"], "flowkit_mode_in_effect": races[0]["flowkit_mode_in_effect"],
               "flowkit_recipe": first["recipes"]["flowkit"], "normflows_recipe": first["recipes"]["normflows"]}
    name = "time_to_quality_quick" if args.quick else "time_to_quality"
    plot(races, budgets, args.results / f"{name}.png")
    rows = [{"K": k, "budget s": b, "seeds": len(d["seeds"]), "time ratio": fmt(v["time_ratio"]),
             "speed": fmt(v["speed_ratio"]), "learning": fmt(v["learning_ratio"]),
             "raw weights": fmt(v["time_ratio_raw_weights"])}
            for k, d in by_depth.items() for b, v in d["budgets"].items()]
    print(table(rows, list(rows[0])))
    pieces = [*sweeps.values(), *races]
    path = write(name, {"summary": summary, "config": options(args), "data": races[0]["data"], "by_depth": by_depth,
                        "pieces": [f"{PIECES}/{piece_name('sweep', s['K'], args)}.json" for s in sweeps.values()]
                        + [f"{PIECES}/{piece_name('race', r['K'], args, r['seed'])}.json" for r in races],
                        "results": races}, args.results, provenance=merged_provenance(pieces))
    print(json.dumps(summary, indent=2))
    print(f"\nwrote {path} and {name}.png")
    return path


def fmt(stat: dict) -> str:
    """``median (min-max)`` of a ratio over seeds."""
    if stat["median"] is None:
        return "not reached"
    low = "?" if stat["min"] is None else f"{stat['min']:.2f}"
    return f"{stat['median']:.2f} ({low}-{stat['max']:.2f})"


def plot(races: list[dict], budgets: list[float], path: Path) -> None:
    """Per depth: each library's median curve over seeds with its range (averaged weights
    solid, raw dashed), the budgets as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["K"] for r in races})
    fig, axes = plt.subplots(1, len(depths), figsize=(6 * len(depths), 4.2), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        these = [r for r in races if r["K"] == depth]
        for name, colour in zip(LIBRARIES, ("tab:blue", "tab:orange")):
            recipe = these[0]["recipes"][name]
            for key, style in (("bits_per_dim", "-"), ("raw_bits_per_dim", "--")):
                points = list(zip(*[[(p["time_s"], p[key]) for p in r["curves"][name]] for r in these]))
                times = [statistics.median(t for t, _ in point) for point in points]
                values = [[v for _, v in point] for point in points]
                label = (f"{name} (lr {recipe['lr']:g}, EMA {recipe['ema_decay']})" if style == "-"
                         else f"{name}, raw weights")
                ax.plot(times, [statistics.median(v) for v in values], style, color=colour, label=label,
                        linewidth=1.6 if style == "-" else 1)
                if style == "-" and len(these) > 1:
                    ax.fill_between(times, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.2)
        for budget in budgets:  # after the curves: ax.lines[:4] are the curves
            ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"Glow K = {depth}: median and range over {len(these)} seeds")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("held-out bits/dim (val_1k)")
        later = [y for line in ax.lines[:4] for y in list(line.get_ydata())[1:]]  # the first checkpoint off the scale
        ax.set_ylim(min(later) - 0.05, max(later) + 0.05)
        ax.legend(fontsize=8)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="all three parts at tiny sizes and budgets (a test)")
    parser.add_argument("--part", choices=("sweep", "race", "merge", "all"), default="all",
                        help="which piece to run (all: sweep, race and merge in turn)")
    glow_size_options(parser, depths="4")
    parser.add_argument("--seeds", type=number_list(int), default=[0, 1, 2], help="race seeds, comma-separated")
    parser.add_argument("--lrs", type=number_list(float), default=number_list(float)(LRS),
                        help="the learning-rate grid of the sweep, the same for both libraries")
    parser.add_argument("--sweep-s", type=float, default=80.0, help="training seconds of each sweep run")
    parser.add_argument("--select-images", type=int, default=500,
                        help="training images kept back (never trained on) to choose the learning rate")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="linear warmup steps, both libraries")
    parser.add_argument("--ema", type=float, default=EMA, help="EMA decay of the evaluated weights, both (0: none)")
    for name in LIBRARIES:
        parser.add_argument(f"--{name}-lr", type=float, default=None, help=f"race {name} at this lr, not the swept one")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training seconds per library in a race")
    parser.add_argument("--budgets-s", type=number_list(float), default=number_list(float)(BUDGETS),
                        help="budgets at which the time ratio is read (each a checkpoint)")
    parser.add_argument("--checkpoints-s", type=number_list(float), default=number_list(float)(CHECKPOINTS),
                        help="clock times at which both libraries are evaluated")
    parser.add_argument("--slice-s", type=float, default=5.0, help="training seconds before switching library")
    parser.add_argument("--eval-images", type=int, default=500, help="val_1k images scored at each checkpoint")
    parser.add_argument("--step-repeats", type=int, default=25, help="interleaved eager steps for the step ratio")
    parser.add_argument("--flowkit-mode", choices=sorted(FLOWKIT_MODES), default="bf16")
    parser.add_argument("--warm-compile-cache", action="store_true",
                        help="let inductor reuse compiled kernels from earlier runs (default: a cold compile)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON and PNG")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.depths, args.width, args.lrs, args.sweep_s, args.select_images = [1], 16, [1e-3, 4e-3], 1.0, 50
        args.budget_s, args.budgets_s, args.checkpoints_s, args.slice_s = 2.0, [1.0, 2.0], [0.5, 1.0, 1.5, 2.0], 0.5
        args.seeds, args.eval_images, args.step_repeats, args.flowkit_mode, args.warmup = [0, 1], 100, 2, "eager", 5
    missing = [b for b in args.budgets_s if b not in args.checkpoints_s]
    if missing:
        parser.error(f"every budget must be a checkpoint; add {missing} to --checkpoints-s")
    if args.part in ("sweep", "all"):
        for depth in args.depths:
            print(f"wrote {run_sweep(depth, args)}")
    if args.part in ("race", "all"):
        for depth in args.depths:
            for seed in args.seeds:
                print(f"wrote {run_race(depth, seed, args)}")
    if args.part in ("merge", "all"):
        run_merge(args)


if __name__ == "__main__":
    main()
