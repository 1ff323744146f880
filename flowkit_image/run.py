"""The Glow run: train, load, evaluate, and what a trained model makes (sample,
reconstruct, interpolate, manipulate).

Each is a plain function (the CLI in :mod:`flowkit_image.cli` only parses flags):

    >>> from flowkit_image import run
    >>> run.train(preset="cpu", out="out/glow", steps=600)   # doctest: +SKIP
    >>> run.evaluate("out/glow", data="demo")["bits_per_dim"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

import flowkit
from flowkit.errors import DataError, FlowkitError, NonFiniteError
from flowkit.files import write_atomically
from flowkit.precision import set_conditioner_precision
from flowkit.train import IndexSchedule, Trainer, load_run, resume_run, start_run, train_config

from .data import ImageSet, load_images, random_hflip
from .glow import Glow, GlowConfig
from .images import save_grid
from .presets import preset as get_preset

__all__ = ["bits_per_dim", "build_model", "evaluate", "interpolate", "load", "manipulate", "reconstruct", "sample",
           "sample_temperatures", "train", "transfer_classes"]

EVAL_SEED = 1234
SAMPLE_TEMPERATURES = (0.0, 0.25, 0.5, 0.7, 0.85, 1.0)


def _split_holdout(images: ImageSet, fraction: float = 0.05, cap: int = 1000) -> tuple[ImageSet, ImageSet]:
    n_eval = min(cap, max(1, int(len(images) * fraction)))
    return images.subset(slice(0, len(images) - n_eval)), images.subset(slice(len(images) - n_eval, None))


def _datasets(data: str | None, eval_data: str | None) -> tuple[ImageSet, ImageSet]:
    if data is None or data == "demo":
        return load_images(None, "train"), load_images(None, "test") if eval_data is None else load_images(eval_data)
    train_set = load_images(data)
    if eval_data is not None:
        return train_set, load_images(eval_data)
    return _split_holdout(train_set)


def _images_and_context(model: Glow, images: ImageSet, index: Tensor | slice) -> tuple[Tensor, Tensor | None]:
    labels = images.labels[index] if (images.labels is not None and model.config.n_classes) else None
    return images.images[index], model.context(labels) if model.config.n_classes else None


@torch.no_grad()
def bits_per_dim(model: Glow, images: ImageSet, batch_size: int = 200, seed: int = EVAL_SEED) -> float:
    """Mean bits/dim over ``images`` with a fixed dequantisation seed."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(images), batch_size):
        pixels, context = _images_and_context(model, images, slice(start, start + batch_size))
        x = model.preprocess(pixels, generator).to(device)
        context = None if context is None else context.to(device)
        total += float(model.bits_per_dim(x, context).double().sum())
    if not math.isfinite(total):
        raise NonFiniteError(f"the model's bits/dim on these {len(images)} images is {total}: its weights give "
                             f"non-finite log-likelihoods (absurd or corrupt weights?)")
    return total / len(images)


def _loss_fn(glow: Glow):
    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, float]]:
        context = F.one_hot(batch[1], glow.config.n_classes).to(batch[0].dtype) if len(batch) > 1 else None
        bpd = glow.nll_to_bits_per_dim(model(batch[0], context)).mean()
        metrics = {"bits_per_dim": float(bpd.detach())}
        if glow.classifier is None:
            return bpd, metrics
        logits = glow.class_logits()
        bits_y = F.cross_entropy(logits, batch[1]) / math.log(2)
        metrics.update(bits_y=float(bits_y.detach()), accuracy=float((logits.argmax(1) == batch[1]).float().mean()))
        return bpd + glow.config.weight_y * bits_y, metrics
    return loss_fn


def _batches(glow: Glow, images: ImageSet, schedule: IndexSchedule, hflip: bool):
    def batch(step: int) -> tuple[Tensor, ...]:
        index, generator = schedule.indices(step), schedule.generator(step)
        pixels = images.images[index]
        if hflip:
            pixels = random_hflip(pixels, generator)
        x = glow.preprocess(pixels, generator)
        return (x, images.labels[index]) if glow.config.n_classes else (x,)
    return batch


def build_model(preset: str, image_shape: tuple[int, ...], class_conditional: int = 0,
                **overrides: Any) -> tuple[Glow, dict[str, Any]]:
    """A Glow from a preset (architecture overrides allowed) and the preset's training defaults."""
    chosen = get_preset(preset)
    glow_config = GlowConfig(**{**chosen["glow"], **overrides}, image_shape=tuple(image_shape),
                             n_classes=class_conditional)
    return Glow(glow_config), chosen["train"]


def train(preset: str | None = None, data: str | None = None, out: str | Path = "out/glow", steps: int | None = None,
          resume: bool = False, seed: int | None = None, eval_data: str | None = None, batch_size: int | None = None,
          lr: float | None = None, warmup_steps: int | None = None, minutes: float | None = None,
          hflip: bool | None = None, class_conditional: bool = False, device: str | None = None,
          progress: bool = True, optimizer: str | None = None, weight_y: float = 0.0, memory: str | None = None,
          compile_step: bool | None = None, checkpoint_every: int | None = None, precision: str | None = None,
          optimizer_in_backward: bool | None = None, **overrides: Any) -> dict[str, Any]:
    """Train a Glow; returns the last logged metrics (with ``eval_bits_per_dim`` on held-out images).

    ``preset`` defaults to ``"cpu"`` for a new run; a resumed run keeps its own, and naming
    another one is refused. A resumed run reuses its saved seed, data, held-out data and
    flips unless given again (a value given again that differs is applied and listed in
    the result's ``resumed``). Every input (data, held-out data, output folder) is checked
    before the first step.
    """
    out = Path(out)
    saved = start_run(out, resume, "glow")
    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps, "max_minutes": minutes,
             "seed": seed, "optimizer": optimizer, "memory": memory, "compile": compile_step,
             "checkpoint_every": checkpoint_every, "precision": precision,
             "optimizer_in_backward": optimizer_in_backward}
    arguments = {"data": None if data is None else str(data),
                 "eval_data": None if eval_data is None else str(eval_data), "hflip": hflip}
    resumed = None
    if saved is not None:
        if overrides:
            raise FlowkitError(f"a resumed run keeps its architecture; drop {', '.join(sorted(overrides))}")
        if preset is not None and preset != saved["model"].get("preset"):
            raise FlowkitError(f"{out} was trained with preset {saved['model'].get('preset')!r}; a resumed run keeps "
                               f"it: drop --preset {preset}")
        preset = saved["model"].get("preset")
        config, arguments, resumed = resume_run(saved, arguments, **given)
    else:
        preset = preset or "cpu"
        config = train_config(get_preset(preset)["train"], **given)
    train_set, eval_set = _datasets(arguments["data"], arguments["eval_data"])
    if class_conditional and (train_set.labels is None or len(train_set.labels.unique()) < 2):
        raise DataError("class-conditional training needs labels of at least 2 classes; this dataset has "
                        f"{'none' if train_set.labels is None else 'one'}")
    n_classes = int(train_set.labels.max()) + 1 if class_conditional else 0
    torch.manual_seed(config.seed)
    if saved is not None:
        glow = Glow(GlowConfig.from_dict(saved["model"]["glow"]))
    else:
        if weight_y:
            overrides["weight_y"] = weight_y
        glow, _ = build_model(preset, tuple(train_set.images.shape[1:]), n_classes, **overrides)
    for name, images in (("training", train_set), ("held-out", eval_set)):
        _check_shape(glow, images, name)
    glow.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    schedule = IndexSchedule(len(train_set), config.batch_size, config.seed)
    trainer = Trainer(glow, _loss_fn(glow), _batches(glow, train_set, schedule, bool(arguments["hflip"])), config, out,
                      model_config={"kind": "glow", "preset": preset, "glow": glow.config.to_dict()},
                      evaluate=lambda m: {"bits_per_dim": bits_per_dim(m, eval_set)}, resume=resume,
                      progress=progress, arguments={**arguments, "hflip": bool(arguments["hflip"])})
    metrics = trainer.fit()
    return {**metrics, "resumed": resumed.to_dict()} if resumed is not None else metrics


def load(checkpoint: str | Path, ema: bool = True, device: str = "cpu") -> Glow:
    """Rebuild a Glow from a checkpoint folder (EMA weights by default); no code is executed."""
    model = load_run(checkpoint, "glow", lambda saved: Glow(GlowConfig.from_dict(saved["glow"])), "Glow", ema)
    return model.to(device).eval()


def evaluate(checkpoint: str | Path, data: str | None = "demo", ema: bool = True, batch_size: int = 200,
             precision: str = "float32") -> dict:
    """Held-out bits/dim of a checkpoint (``data="demo"`` is the embedded test split);
    ``precision="bf16-conditioners"`` runs the coupling and prior networks in bfloat16."""
    model = load(checkpoint, ema)
    precision = set_conditioner_precision(model, precision)
    images = load_images(None, "test") if data in (None, "demo") else load_images(data)
    _check_shape(model, images)
    value = bits_per_dim(model, images, batch_size)
    return {"bits_per_dim": value, "n_bits": model.config.n_bits, "images": len(images), "precision": precision,
            "ema": ema, "dequantization_seed": EVAL_SEED}


def _check_shape(model: Glow, images: ImageSet, name: str = "") -> None:
    """The images fit the model: shape, and labels within the classes of a class-conditional model."""
    what = f"{name} images" if name else "images"
    if tuple(images.images.shape[1:]) != tuple(model.config.image_shape):
        raise DataError(f"{what} are {tuple(images.images.shape[1:])}, the model expects {model.config.image_shape}")
    if model.config.n_classes:
        if images.labels is None:
            raise DataError(f"the model is class-conditional but the {what} have no labels")
        labels = images.labels
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < model.config.n_classes:
            raise DataError(f"{what} have labels outside 0..{model.config.n_classes - 1}")


@torch.no_grad()
def sample(checkpoint: str | Path | Glow, out: str | Path, temperature: float = 0.7, n: int = 64,
           seed: int = 0, label: int | None = None, precision: str | None = None, batch_size: int = 256) -> Path:
    """``n`` samples at ``temperature`` (``precision``: see :mod:`flowkit.precision`): a grid
    picture (at most :data:`MAX_GRID` images) or, for an ``out`` ending in ``.npy``, a uint8
    ``(n, H, W, C)`` array drawn ``batch_size`` at a time into the file (memory stays flat
    in ``n``; the disk it needs is checked first)."""
    out = Path(out)
    model = checkpoint if isinstance(checkpoint, Glow) else load(checkpoint)
    if precision is not None:
        set_conditioner_precision(model, precision)
    generator = torch.Generator().manual_seed(seed)
    if out.suffix.lower() == ".npy":
        return _sample_to_array(model, out, temperature, n, label, generator, batch_size)
    if n > MAX_GRID:
        raise FlowkitError(f"a grid of {n} samples would be a picture of about "
                           f"{_grid_pixels(model, n) / 1e6:,.0f} megapixels (limit {MAX_GRID} images); "
                           f"write many samples to an array instead: --out samples.npy")
    context = _class_context(model, n, label)
    images = model.postprocess(model.sample(n, temperature, context, generator))
    return save_grid(images, out, ncol=int(math.ceil(math.sqrt(n))))


#: the most samples one grid picture shows (a 64 x 64 grid)
MAX_GRID = 4096


def _grid_pixels(model: Glow, n: int) -> int:
    _, height, width = model.config.image_shape
    return n * height * width * 4  # the grid is enlarged twice in each direction


def _sample_to_array(model: Glow, out: Path, temperature: float, n: int, label: int | None,
                     generator: torch.Generator, batch_size: int) -> Path:
    channels, height, width = model.config.image_shape
    needed = n * channels * height * width + 128
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise FlowkitError(f"{n} samples need {needed / 2**30:.2f} GiB in {out} and the disk has "
                           f"{free / 2**30:.2f} GiB free")
    def draw_into(tmp: Path) -> None:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, height, width, channels))
        for start in tqdm(range(0, n, batch_size), desc="sample", unit="batch", dynamic_ncols=True,
                          disable=n <= batch_size):
            count = min(batch_size, n - start)
            context = _class_context(model, count, label)
            images = model.postprocess(model.sample(count, temperature, context, generator))
            array[start:start + count] = images.permute(0, 2, 3, 1).numpy()
        array.flush()

    return write_atomically(out, draw_into)


def _class_context(model: Glow, n: int, label: int | None) -> Tensor | None:
    if not model.config.n_classes:
        if label is not None:
            raise FlowkitError("--label needs a class-conditional model; this one is unconditional")
        return None
    if label is None:
        labels = torch.arange(n) % model.config.n_classes
    else:
        labels = torch.full((n,), label, dtype=torch.long)
    return model.context(labels)


@torch.no_grad()
def sample_temperatures(model: Glow, out: str | Path, per_row: int = 10,
                        temperatures: tuple[float, ...] = SAMPLE_TEMPERATURES, seed: int = 0) -> Path:
    """One row of samples per temperature (same noise in every row, scaled)."""
    context = _class_context(model, per_row, None)
    z = model.base.sample(per_row, 1.0, generator=torch.Generator().manual_seed(seed))
    rows = [model.postprocess(model.decode(z * t, context)) for t in temperatures]
    return save_grid(torch.cat(rows), out, ncol=per_row)


@torch.no_grad()
def reconstruct(checkpoint: str | Path | Glow, data: str | None = "demo", n: int = 16,
                out: str | Path | None = None) -> dict[str, float]:
    """Encode and decode ``n`` images (at their bins' centres); report the float32 error and the
    pixels that changed, and write originals over reconstructions."""
    model = checkpoint if isinstance(checkpoint, Glow) else load(checkpoint)
    images = load_images(None, "test") if data in (None, "demo") else load_images(data)
    _check_shape(model, images)
    n = min(n, len(images))
    pixels, context = _images_and_context(model, images, slice(0, n))
    x = model.preprocess(pixels, noise=False) + 0.5 / model.n_bins  # bin centres: rounding back is unambiguous
    x_back = model.decode(model.encode(x, context), context)
    result = {"max_abs_error": float((x_back - x).abs().max()),
              "pixels_changed": int((model.postprocess(x_back) != model.postprocess(x)).sum()), "images": n}
    if out is not None:
        save_grid(torch.cat([model.postprocess(x), model.postprocess(x_back)]), out, ncol=n)
    return result


@torch.no_grad()
def interpolate(checkpoint: str | Path | Glow, out: str | Path, data: str | None = "demo",
                pairs: list[tuple[int, int]] | None = None, steps: int = 8) -> Path:
    """A strip PNG per pair of images (by index): ``decode(z_a + t (z_b - z_a))``."""
    model = checkpoint if isinstance(checkpoint, Glow) else load(checkpoint)
    images = load_images(None, "test") if data in (None, "demo") else load_images(data)
    _check_shape(model, images)
    pairs = pairs or [(0, 1), (2, 3), (4, 5), (6, 7)]
    if not all(0 <= i < len(images) for pair in pairs for i in pair):
        raise DataError(f"image index out of range: the data has {len(images)} images (indices 0 to "
                        f"{len(images) - 1})")
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    generator = torch.Generator().manual_seed(EVAL_SEED)
    xa, xb = model.preprocess(images.images[a], generator, noise=False), model.preprocess(images.images[b], noise=False)
    context = None
    if model.config.n_classes:
        context = model.context(images.labels[a])
    strip = flowkit.interpolate(model, xa + 0.5 / model.n_bins, xb + 0.5 / model.n_bins, steps, context)
    rows = model.postprocess(strip).transpose(0, 1).reshape(-1, *model.config.image_shape)
    return save_grid(rows, out, ncol=steps)


@torch.no_grad()
def manipulate(checkpoint: str | Path | Glow, out: str | Path, positive: str, negative: str,
               data: str | None = "demo", edit_data: str | None = None, n: int = 6,
               alphas: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0), scale: float = 1.0) -> dict[str, Any]:
    """Attribute editing (the Glow blog's recipe) with a direction from two labelled groups.

    ``direction = scale * (mean z(positive) - mean z(negative))`` from ``data``; the first ``n``
    images of the negative class in ``edit_data`` (default: the embedded test split) are decoded
    at ``z + alpha * direction``. Returns the strip path and the mean pixel change per alpha.
    """
    model = checkpoint if isinstance(checkpoint, Glow) else load(checkpoint)
    if model.config.n_classes:
        raise FlowkitError("a direction edit works on unconditional models (the direction is class information); "
                           "a class-conditional Glow moves images between classes: give --from and --to")
    source = load_images(None, "train") if data in (None, "demo") else load_images(data)
    targets = load_images(None, "test") if edit_data in (None, "demo") else load_images(edit_data)
    _check_shape(model, source)
    _check_shape(model, targets)
    generator = torch.Generator().manual_seed(EVAL_SEED)
    pos = model.preprocess(source.of_class(positive).images, generator)
    neg = model.preprocess(source.of_class(negative).images, generator)
    direction = scale * flowkit.attribute_direction(model, pos, neg)
    edit = model.preprocess(targets.of_class(negative).images[:n], noise=False) + 0.5 / model.n_bins
    strip = model.postprocess(flowkit.apply_direction(model, edit, direction, list(alphas)))
    save_grid(strip.transpose(0, 1).reshape(-1, *model.config.image_shape), out, ncol=len(alphas))
    original = model.postprocess(edit).float()
    change = {f"{a:+.2f}": float((strip[i].float() - original).abs().mean()) for i, a in enumerate(alphas)}
    return {"path": str(out), "positive": positive, "negative": negative, "mean_abs_pixel_change": change}


def _class_index(images: ImageSet, name: str | int, n_classes: int) -> int:
    index = images.classes.index(name) if images.classes and name in images.classes else None
    if index is None:
        if not str(name).isdigit():
            raise DataError(f"unknown class {name!r}; classes are {images.classes or list(range(n_classes))}")
        index = int(name)
    if not 0 <= index < n_classes:
        raise DataError(f"class {name!r} is outside this model's {n_classes} classes")
    return index


@torch.no_grad()
def transfer_classes(checkpoint: str | Path | Glow, out: str | Path, source: str, targets: list[str] | None = None,
                     data: str | None = "demo", n: int = 6) -> dict[str, Any]:
    """Class transfer with a class-conditional Glow (:func:`flowkit.transfer`): the first
    ``n`` images of class ``source`` in ``data`` (default: the embedded test split) are
    encoded under their class and decoded under each of ``targets`` (default: every class),
    one row per image: the original, then one column per target.

    Returns the grid's path, how many images each target decodes (a latent moved to another
    class can leave the range the flow inverts; such a cell is grey), the mean pixel change
    per target, the round trip's largest error (target = source: exact up to float32), and
    how often the model's own class-conditional likelihood ranks each target first for the
    edited images, beside the same rate for the unedited ones (the flow's own judgement, not
    an independent classifier).
    """
    model = checkpoint if isinstance(checkpoint, Glow) else load(checkpoint)
    classes = model.config.n_classes
    if not classes:
        raise FlowkitError("class transfer needs a class-conditional Glow (train it with --class-conditional); "
                           "an unconditional one edits along a direction: give --positive and --negative")
    images = load_images(None, "test") if data in (None, "demo") else load_images(data)
    _check_shape(model, images)
    source_index = _class_index(images, source, classes)
    chosen = images.of_class(source_index).subset(slice(0, n))
    target_indices = [_class_index(images, t, classes) for t in targets] if targets else list(range(classes))
    names = [images.classes[i] if images.classes else str(i) for i in target_indices]
    x = model.preprocess(chosen.images, noise=False) + 0.5 / model.n_bins  # bin centres
    source_context = model.context(torch.full((len(x),), source_index))
    columns = [model.postprocess(x)]
    change, first, decoded = {}, {}, {}
    for index, name in zip(target_indices, names):
        edited, ok = _transfer_each(model, x, source_context, model.context(torch.tensor([index])))
        columns.append(torch.where(ok.view(-1, 1, 1, 1), model.postprocess(edited), torch.full_like(columns[0], 128)))
        decoded[name] = int(ok.sum())
        change[name] = float((columns[-1][ok].float() - columns[0][ok].float()).abs().mean()) if ok.any() else None
        first[name] = _ranked_first(model, edited[ok], index) if ok.any() else None
    round_trip = flowkit.transfer(model, x, source_context, source_context)
    grid = torch.stack(columns, 1).reshape(-1, *model.config.image_shape)
    save_grid(grid, out, ncol=len(columns))
    return {"path": str(out), "source": images.classes[source_index] if images.classes else source_index,
            "images": len(x), "targets": names, "decoded": decoded, "mean_abs_pixel_change": change,
            "target_ranked_first_by_the_model": first,
            "unedited_ranked_first_as_each_target": {name: _ranked_first(model, x, index)
                                                     for index, name in zip(target_indices, names)},
            "round_trip_max_abs_error": float((round_trip - x).abs().max())}


def _transfer_each(model: Glow, x: Tensor, source: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`flowkit.transfer` image by image: the edits, and which of them decoded to
    finite pixels (the others are zeros)."""
    edited, ok = torch.zeros_like(x), torch.zeros(len(x), dtype=torch.bool)
    for i in range(len(x)):
        try:
            edited[i] = flowkit.transfer(model, x[i:i + 1], source[i:i + 1], target)[0]
            ok[i] = True
        except NonFiniteError:
            pass
    return edited, ok


def _ranked_first(model: Glow, x: Tensor, index: int) -> float:
    """The share of ``x`` whose log-likelihood is highest under class ``index``."""
    scores = torch.stack([model.log_prob(x.clamp(-0.5, 0.5), model.context(torch.full((len(x),), c)))
                          for c in range(model.config.n_classes)], 1)
    return float((scores.argmax(1) == index).float().mean())
