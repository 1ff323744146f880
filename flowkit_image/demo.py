"""``flowkit image demo``: the ``cpu`` Glow on the embedded CIFAR-10 sample in a few CPU
minutes, with every artefact (bits/dim, sample grids, an interpolation, a reconstruction,
an attribute manipulation) written to one folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from flowkit.train import DEMO_ADVICE, prepare_run_folder

from .data import load_images
from .run import (
    bits_per_dim,
    build_model,
    evaluate,
    interpolate,
    load,
    manipulate,
    reconstruct,
    sample,
    sample_temperatures,
    train,
)

__all__ = ["run"]


def run(out: str | Path = "out/demo", steps: int = 600, seed: int = 0, progress: bool = True,
         overwrite: bool = False) -> dict[str, Any]:
    """Train the ``cpu`` preset on the embedded CIFAR-10 sample and write every artefact to ``out``.

    A folder that already holds a run is refused unless ``overwrite`` (then its
    checkpoint is replaced: the demo always starts afresh).
    """
    out = Path(out)
    ckpt = out / "checkpoint"
    prepare_run_folder(out, resume=False, overwrite=overwrite, advice=DEMO_ADVICE)
    torch.manual_seed(seed)
    untrained, _ = build_model("cpu", (3, 32, 32))
    test_set = load_images(None, "test")
    with torch.no_grad():
        untrained(untrained.preprocess(load_images(None, "train").images[:256], torch.Generator().manual_seed(0)))
    initial = bits_per_dim(untrained, test_set)
    metrics = train(preset="cpu", out=out, steps=steps, seed=seed, progress=progress)
    model = load(ckpt)
    result = evaluate(ckpt)
    result.update({"initial_bits_per_dim": initial, "steps": int(metrics.get("step", steps)), "preset": "cpu",
                   "train_images": 2000, "train_bits_per_dim": metrics.get("bits_per_dim")})
    sample_temperatures(model, out / "samples.png")
    sample(model, out / "samples_t0.7.png", temperature=0.7, n=64)
    interpolate(model, out / "interpolation.png")
    result["reconstruction"] = reconstruct(model, n=16, out=out / "reconstruction.png")
    result["manipulation"] = manipulate(model, out / "manipulation.png", positive="ship", negative="horse")
    (out / "bits_per_dim.json").write_text(json.dumps(result, indent=2))
    return result

