"""What a resumed run reuses: every saved argument the user does not give again.

``--resume`` continues the run as it was started: the seed, the data and the other
arguments saved with its checkpoint are reused unless a flag gives them again. A flag
that gives another value is applied and reported (:class:`Resumed`), never dropped in
silence. The one exception is the wall-time budget (``max_minutes``, ``--minutes``): it
bounds one command, so a resumed run has none unless it is given again.

Example:
    >>> saved = {"step": 40, "train": {"steps": 100, "seed": 3, "max_minutes": 0.5}, "arguments": {"data": "a"}}
    >>> config, arguments, resumed = resume_run(saved, {"data": None}, steps=200, seed=None)
    >>> config.seed, config.steps, config.max_minutes, arguments
    (3, 200, None, {'data': 'a'})
    >>> resumed.note()
    'resumed at step 40 with the saved seed 3 and data a; changed: steps 100 -> 200'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import TrainConfig, train_config

__all__ = ["Resumed", "resume_run"]

#: budgets of one command: never carried over to a resumed run
PER_COMMAND = ("max_minutes",)
#: the reused values a note names (the others are the run's recipe, reused silently)
NOTED = ("seed",)


@dataclass
class Resumed:
    """What :func:`resume_run` decided.

    Attributes:
        step: the step the run resumes at.
        reused: the saved values used because no flag gave them (name -> value).
        changed: the given values that differ from the saved ones (name -> ``[saved, given]``).
    """

    step: int
    reused: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "reused": self.reused, "changed": self.changed}

    def note(self) -> str:
        """One line for the user: where the run resumed, what it reused, what changed."""
        reused = [f"{name} {value}" for name, value in self.reused.items()]
        line = f"resumed at step {self.step}"
        if reused:
            line += " with the saved " + " and ".join([", ".join(reused[:-1]), reused[-1]] if len(reused) > 1
                                                      else reused)
        if self.changed:
            line += "; changed: " + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in self.changed.items())
        return line


def _merge(saved: dict[str, Any], given: dict[str, Any], resumed: Resumed, noted: tuple[str, ...]) -> dict[str, Any]:
    merged = dict(saved)
    for name, value in given.items():
        if value is None:
            if name in noted and saved.get(name) is not None:
                resumed.reused[name] = saved[name]
            continue
        if name in saved and _comparable(saved[name]) != _comparable(value):
            resumed.changed[name] = [saved[name], value]
        merged[name] = value
    return merged


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def resume_run(saved: dict[str, Any], arguments: dict[str, Any],
               **given: Any) -> tuple[TrainConfig, dict[str, Any], Resumed]:
    """The training config and arguments of a resumed run, and what was reused or changed.

    Arguments:
        saved: the run's saved configuration (:func:`flowkit.train.start_run`'s answer:
            ``{"train": ..., "arguments": ..., "step": ...}``).
        arguments: the plug-in's own arguments as given (``None``: not given, reuse the
            saved value); the saved ones the trainer got as ``Trainer(arguments=...)``.
        given: training flags as given (``None``: not given), as for
            :func:`flowkit.train.train_config`.
    """
    resumed = Resumed(int(saved.get("step", 0)))
    train = {k: v for k, v in saved.get("train", {}).items() if k not in PER_COMMAND}
    config = train_config(_merge(train, given, resumed, NOTED))
    saved_arguments = saved.get("arguments") or {}
    values = _merge(saved_arguments, arguments, resumed, tuple(saved_arguments))
    return config, {k: values.get(k) for k in arguments}, resumed
