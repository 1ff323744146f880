"""The loop's hyper-parameters, :class:`TrainConfig`, and the rules they must keep."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ..errors import FlowkitError
from ..memory import MEMORY_MODES
from ..precision import PRECISIONS
from .optim import OPTIMIZERS

__all__ = ["TrainConfig", "train_config"]


@dataclass
class TrainConfig:
    """Hyper-parameters of the loop (the model's own live in the plug-in's config)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamax"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float | None = None
    ema_decay: float | None = 0.999
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    max_minutes: float | None = None
    seed: int = 0
    memory: str = "plain"  # backprop mode, one of flowkit.memory.MEMORY_MODES (see flowkit.reversible)
    compile: bool = False  # torch.compile the loss (forward and backward); costs compile time up front
    precision: str = "float32"  # or "bf16-conditioners": coupling and prior networks in bfloat16 (flowkit.precision)
    optimizer_in_backward: bool = False  # update during backward, a bucket of gradients at a time (in_backward.py)

    def __post_init__(self):
        problems = [f"{name}={getattr(self, name)!r} ({rule})" for name, rule, ok in self._rules()
                    if not _holds(ok, getattr(self, name))]
        if problems:
            raise FlowkitError(f"training config out of range: {', '.join(problems)}")

    @staticmethod
    def _rules() -> list[tuple[str, str, Callable[[Any], bool]]]:
        def count(least: float) -> Callable[[Any], bool]:
            return lambda v: isinstance(v, Integral) and not isinstance(v, bool) and v >= least

        def positive(v: Any) -> bool:
            return _number(v) and v > 0

        return [
            ("steps", "an integer >= 0", count(0)), ("batch_size", "an integer >= 1", count(1)),
            ("lr", "a finite number > 0", positive),
            ("optimizer", ", ".join(OPTIMIZERS), lambda v: v in OPTIMIZERS),
            ("betas", "two numbers in [0, 1)", lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v)),
            ("weight_decay", "a finite number >= 0", lambda v: _number(v) and v >= 0),
            ("warmup_steps", "an integer >= 0", count(0)),
            ("grad_clip", "None or a finite number > 0", lambda v: v is None or positive(v)),
            ("ema_decay", "None or a number in [0, 1)", lambda v: v is None or (_number(v) and 0 <= v < 1)),
            ("log_every", "an integer >= 1", count(1)), ("eval_every", "an integer >= 0", count(0)),
            ("checkpoint_every", "an integer >= 0", count(0)),
            ("max_minutes", "None or a finite number > 0", lambda v: v is None or positive(v)),
            ("seed", "an integer", count(-math.inf)), ("memory", ", ".join(MEMORY_MODES), lambda v: v in MEMORY_MODES),
            ("precision", ", ".join(PRECISIONS), lambda v: v in PRECISIONS),
        ]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if k == "betas" else v) for k, v in values.items() if k in names}
        return cls(**values)


def _number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _holds(rule: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(rule(value))
    except TypeError:  # a value of the wrong kind altogether (a string for a number, ...)
        return False


def train_config(defaults: dict[str, Any], **given: Any) -> TrainConfig:
    """A :class:`TrainConfig` from ``defaults`` (a preset's or a saved run's), overridden by
    every ``given`` value that is not ``None`` (the flags a user passed)."""
    return TrainConfig.from_dict({**defaults, **{k: v for k, v in given.items() if v is not None}})
