"""Checkpoints that load without executing code: safetensors weights plus JSON.

A checkpoint is a folder::

    config.json          format, model config, training config, step, optimizer groups
    model.safetensors    model state_dict
    ema.safetensors      EMA weights (optional)
    optimizer.safetensors  optimizer state tensors (optional)

It is written into ``NAME.tmp`` and then renamed into place, so a crash never leaves
a half-written checkpoint under ``NAME``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError

FORMAT = "flowkit-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    path: Path = field(default_factory=Path)

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, state["param_groups"], scalars


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list, scalars: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *scalars.items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups}


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict[str, Any],
                    ema: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Write a checkpoint folder atomically; refuse weights that are not finite."""
    path = Path(path)
    state = _cpu_state(model)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights: {bad[:5]}")
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, tmp / "model.safetensors")
    meta = {"format": FORMAT, "version": VERSION, **config}
    if ema is not None:
        save_file(_cpu_state(ema), tmp / "ema.safetensors")
    if optimizer is not None:
        tensors, groups, scalars = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, tmp / "optimizer.safetensors")
        meta["optimizer_groups"], meta["optimizer_scalars"] = groups, scalars
    (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"corrupt checkpoint file {file}: {error}") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder (falls back to ``NAME.old`` after an interrupted save)."""
    path = Path(path)
    if not (path / "config.json").exists() and (path.with_name(path.name + ".old") / "config.json").exists():
        path = path.with_name(path.name + ".old")
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"no checkpoint at {path} (config.json missing)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"corrupt checkpoint config {config_file}: {error}") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{config_file} is not a flowkit checkpoint")
    ema = _read_tensors(path / "ema.safetensors") if (path / "ema.safetensors").exists() else None
    optimizer = None
    if (path / "optimizer.safetensors").exists():
        optimizer = _unflatten_optimizer(_read_tensors(path / "optimizer.safetensors"),
                                         config.get("optimizer_groups", []), config.get("optimizer_scalars", {}))
    return Checkpoint(config, _read_tensors(path / "model.safetensors"), ema, optimizer, path)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``module.load_state_dict(state)`` with a readable error for mismatched checkpoints."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]})")
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(parts))
    module.load_state_dict(state)
