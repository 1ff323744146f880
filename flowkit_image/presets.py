"""Named Glow configurations: the paper's and small ones that train on a CPU.

Each preset is an architecture (:class:`GlowConfig` fields) and training defaults
(:class:`flowkit.train.TrainConfig` fields). The image size comes from the data.

| preset          | L | K  | width | coupling | bits | paper bits/dim |
|-----------------|---|----|-------|----------|------|----------------|
| cifar10         | 3 | 32 | 512   | affine   | 8    | 3.35           |
| imagenet32      | 3 | 48 | 512   | affine   | 8    | 4.09           |
| imagenet64      | 4 | 48 | 512   | affine   | 8    | 3.81           |
| celeba-hq-256   | 6 | 32 | 512   | additive | 5    | (samples only) |
| cpu             | 3 | 8  | 48    | affine   | 8    | demo, minutes  |
| tiny            | 2 | 2  | 16    | affine   | 8    | tests, seconds |
"""

from __future__ import annotations

from typing import Any

PAPER_TRAIN = {"optimizer": "adamax", "lr": 1e-3, "batch_size": 64, "warmup_steps": 1000, "ema_decay": 0.999,
               "steps": 200_000, "log_every": 50, "eval_every": 5000, "checkpoint_every": 5000}

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10": {"glow": {"levels": 3, "depth": 32, "width": 512, "coupling": "affine", "n_bits": 8},
                "train": PAPER_TRAIN},
    "imagenet32": {"glow": {"levels": 3, "depth": 48, "width": 512, "coupling": "affine", "n_bits": 8},
                   "train": PAPER_TRAIN},
    "imagenet64": {"glow": {"levels": 4, "depth": 48, "width": 512, "coupling": "affine", "n_bits": 8},
                   "train": PAPER_TRAIN},
    "celeba-hq-256": {"glow": {"levels": 6, "depth": 32, "width": 512, "coupling": "additive", "n_bits": 5},
                      "train": {**PAPER_TRAIN, "batch_size": 4}},
    "cpu": {"glow": {"levels": 3, "depth": 8, "width": 48, "coupling": "affine", "n_bits": 8},
            "train": {"optimizer": "adamax", "lr": 2e-3, "batch_size": 32, "warmup_steps": 50, "ema_decay": 0.99,
                      "steps": 600, "log_every": 10, "eval_every": 0, "checkpoint_every": 200}},
    "tiny": {"glow": {"levels": 2, "depth": 2, "width": 16, "coupling": "affine", "n_bits": 8},
             "train": {"optimizer": "adamax", "lr": 1e-3, "batch_size": 16, "warmup_steps": 5, "ema_decay": 0.9,
                       "steps": 20, "log_every": 5, "eval_every": 0, "checkpoint_every": 0}},
}


def preset(name: str) -> dict[str, Any]:
    """The preset ``name``: ``{"glow": {...}, "train": {...}}`` (copies)."""
    if name not in PRESETS:
        from flowkit.errors import FlowkitError

        raise FlowkitError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return {"glow": dict(PRESETS[name]["glow"]), "train": dict(PRESETS[name]["train"])}
