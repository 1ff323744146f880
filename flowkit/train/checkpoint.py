"""Checkpoints that load without executing code: safetensors weights plus JSON.

A checkpoint is a folder::

    config.json          format, model config, training config, step, optimizer groups
    model.safetensors    model state_dict
    ema.safetensors      EMA weights (optional)
    optimizer.safetensors  optimizer state tensors (optional)
    evaluator.safetensors  the tensors of the evaluation hook's state (optional; e.g. the
                         best weights so far of early stopping), its other values in config.json

It is written into ``NAME.tmp`` (every file fsynced, ``config.json`` last) and then
renamed into place, so a crash never leaves a half-written checkpoint under ``NAME``;
:func:`newest_checkpoint` finds the newest complete copy whichever name it has, and
:func:`recover_checkpoint` puts it back under ``NAME`` before training resumes.

Every save of one run carries the same ``run_id`` (kept from the checkpoint it replaces),
so a ``NAME.old`` or ``NAME.tmp`` that belongs to another run (a user's ``model.old``
beside ``model``) is never taken for a copy of ``NAME``, nor deleted as a leftover.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError

FORMAT = "flowkit-checkpoint"
VERSION = 1
#: the safetensors metadata key holding the model config the weights were saved with
MODEL_METADATA = "flowkit_model"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    path: Path = field(default_factory=Path)
    evaluator: dict[str, Any] | None = None

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


def _fsync(path: Path) -> None:
    """Flush a file or a folder's entries to disk (folders: where the OS allows it)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # some platforms cannot open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. folders on Windows or some network file systems
    finally:
        os.close(fd)


def sibling(path: str | os.PathLike, suffix: str) -> Path:
    """``NAME.tmp`` / ``NAME.old`` beside the checkpoint folder ``NAME``."""
    path = Path(path)
    return path.with_name(path.name + suffix)


MAX_CONFIG_BYTES = 16 * 2**20  # a checkpoint's config.json is a few kB


def read_regular_file(file: Path, limit: int) -> bytes:
    """The bytes of ``file`` if it is a regular file of at most ``limit`` bytes; a FIFO, a
    device (a link to ``/dev/zero``), a folder or a huge file is refused before it is opened
    (reading one would hang or exhaust memory)."""
    if not file.is_file():
        raise CheckpointError(f"{file} is not a regular file")
    size = file.stat().st_size
    if size > limit:
        raise CheckpointError(f"{file} is {size} bytes, more than the {limit} a flowkit checkpoint file can be")
    return file.read_bytes()


def _complete_config(folder: Path) -> dict[str, Any] | None:
    """The config of a complete checkpoint in ``folder`` (its config.json, written last,
    parses and its step is a whole number), else None."""
    try:
        config = json.loads(read_regular_file(folder / "config.json", MAX_CONFIG_BYTES))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not (folder / "model.safetensors").is_file():
        return None
    return config if _valid_step(config.get("step", 0)) else None


def _valid_step(step: Any) -> bool:
    return isinstance(step, int) and not isinstance(step, bool) and step >= 0


def _step_if_complete(folder: Path) -> int | None:
    config = _complete_config(folder)
    return None if config is None else int(config.get("step", 0))


def _copies(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``NAME`` and those of ``NAME.old`` / ``NAME.tmp`` that are complete copies of the
    same run: with ``NAME`` complete, only siblings carrying its ``run_id``."""
    own = _complete_config(path)
    found = [(path, own)] if own is not None else []
    for folder in (sibling(path, ".old"), sibling(path, ".tmp")):
        config = _complete_config(folder)
        if config is not None and (own is None or config.get("run_id") == own.get("run_id")):
            found.append((folder, config))
    return found


def newest_checkpoint(path: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint among ``NAME``, ``NAME.old`` and ``NAME.tmp``.

    A crash during a save can leave the newest weights under any of the three names
    (``.tmp`` complete but not yet renamed, or only ``.old`` between the two renames).
    When ``NAME`` is complete, a sibling counts only if it belongs to the same run (its
    ``run_id``): a folder of another run that happens to be named ``NAME.old`` is never
    read in its place. Ties go to ``NAME``. Nothing is moved: see :func:`recover_checkpoint`.
    """
    found = [(int(config.get("step", 0)), -rank, folder) for rank, (folder, config) in enumerate(_copies(Path(path)))]
    return max(found)[2] if found else None


def _leftover(folder: Path, run_id: str | None) -> bool:
    """Whether ``folder`` (a ``.old`` / ``.tmp`` sibling) is this run's to delete: a copy of
    the run, or a partial write holding nothing but checkpoint files."""
    config = _complete_config(folder)
    if config is not None:
        return config.get("run_id") == run_id
    return folder.is_dir() and all(f.name in CHECKPOINT_FILES for f in folder.iterdir())


CHECKPOINT_FILES = frozenset({"config.json", "model.safetensors", "ema.safetensors", "optimizer.safetensors",
                              "evaluator.safetensors"})


def recover_checkpoint(path: str | os.PathLike) -> Path | None:
    """Put the newest complete checkpoint under ``NAME`` and delete the leftovers.

    Every intermediate state keeps the newest checkpoint complete under some name, so a
    crash during recovery is recovered by the next call. Returns ``NAME``, or ``None``
    when there is no complete checkpoint (then nothing is touched). A sibling of another
    run is neither used nor deleted.
    """
    path = Path(path)
    newest = newest_checkpoint(path)
    if newest is None:
        return None
    if newest != path:
        if path.exists():
            shutil.rmtree(path)  # older or incomplete: the newest is safe under its other name
        newest.rename(path)
        _fsync(path.parent)
    run_id = _complete_config(path).get("run_id")
    for leftover in (sibling(path, ".old"), sibling(path, ".tmp")):
        if leftover.exists() and _leftover(leftover, run_id):
            shutil.rmtree(leftover, ignore_errors=True)
    return path


def refuse_foreign_folder(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` if ``path`` holds files but no flowkit checkpoint."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and _step_if_complete(path) is None:
        if (path / "config.json").is_file():
            _read_config(path)  # a flowkit config with a bad field: named as such
        raise CheckpointError(f"{path} exists but holds no flowkit checkpoint (no valid config.json); "
                              f"refusing to overwrite it: move it away or choose another output folder")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict[str, Any],
                    ema: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    evaluator: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically and durably; refuse weights that are not finite.

    The files go to ``NAME.tmp`` (each fsynced, ``config.json`` last), then ``NAME``
    becomes ``NAME.old``, ``NAME.tmp`` becomes ``NAME`` and ``NAME.old`` is deleted. A
    crash at any point leaves a complete checkpoint that :func:`newest_checkpoint` finds;
    a failed write (disk full) keeps the previous one untouched. A folder ``NAME`` that is
    not a flowkit checkpoint (a user's own files) is never overwritten. ``evaluator``: the
    state of the evaluation hook (tensors and JSON values), restored on resume.
    """
    path = Path(path)
    state = _cpu_state(model)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights: {bad[:5]}")
    refuse_foreign_folder(path)
    tmp, old = sibling(path, ".tmp"), sibling(path, ".old")
    existing = _complete_config(path)
    config = {**config, "run_id": config.get("run_id") or (existing or {}).get("run_id") or uuid.uuid4().hex}
    for folder in (tmp, old):
        if folder.exists() and not _leftover(folder, config["run_id"]):
            raise CheckpointError(f"{folder} belongs to another run or holds other files; a save of {path.name} "
                                  f"uses that name: move it away")
    try:
        _write_folder(tmp, state, config, ema, optimizer, evaluator)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, (OSError, SafetensorError)):  # safetensors reports a full disk as its own error
            kept = "the previous checkpoint is kept" if existing is not None else "no checkpoint was written"
            reason = getattr(error, "strerror", None) or " ".join(str(error).split())
            raise CheckpointError(f"could not write the checkpoint {path} ({reason}); {kept}") from error
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _write_folder(tmp: Path, state: dict[str, torch.Tensor], config: dict[str, Any], ema: nn.Module | None,
                  optimizer: torch.optim.Optimizer | None, evaluator: dict[str, Any] | None) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {"model.safetensors": state}
    meta = {"format": FORMAT, "version": VERSION, **config}
    if ema is not None:
        files["ema.safetensors"] = _cpu_state(ema)
    if optimizer is not None:
        tensors, groups, scalars = _flatten_optimizer(optimizer.state_dict())
        files["optimizer.safetensors"] = tensors
        meta["optimizer_groups"], meta["optimizer_scalars"] = groups, scalars
    if evaluator is not None:
        files["evaluator.safetensors"] = {k: v.detach().cpu().contiguous() for k, v in evaluator.items()
                                          if torch.is_tensor(v)}
        meta["evaluator"] = {k: v for k, v in evaluator.items() if not torch.is_tensor(v)}
    described = {MODEL_METADATA: json.dumps(config.get("model"), sort_keys=True, default=str)}
    for name, tensors in files.items():
        save_file(tensors, tmp / name, metadata=described if name in ("model.safetensors", "ema.safetensors") else None)
        _fsync(tmp / name)
    with (tmp / "config.json").open("w") as f:  # last: its presence marks the folder complete
        f.write(json.dumps(meta, indent=2, default=str, allow_nan=False))
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file} is not a regular file")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"corrupt checkpoint file {file}: {error}") from None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder to read for ``path``: a checkpoint folder or a run folder holding
    ``checkpoint/``, the newest complete copy after an interrupted save."""
    path = Path(path)
    for candidate in (path, path / "checkpoint"):
        newest = newest_checkpoint(candidate)
        if newest is not None:
            return newest
    for candidate in (path, path / "checkpoint"):
        if (candidate / "config.json").exists():
            return candidate  # present but invalid: load_checkpoint names the problem
    raise CheckpointError(f"no checkpoint at {path} (config.json missing)")


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    try:
        config = json.loads(read_regular_file(config_file, MAX_CONFIG_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"corrupt checkpoint config {config_file}: {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_file} is not a flowkit checkpoint")
    if not _valid_step(config.get("step", 0)):
        raise CheckpointError(f"{config_file}: step {config.get('step')!r} is not a whole number >= 0")
    return config


def checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of the checkpoint :func:`load_checkpoint` would read, without its weights."""
    return _read_config(find_checkpoint(path))


def load_checkpoint(path: str | os.PathLike, ema: bool = True, optimizer: bool = True,
                    evaluator: bool = True) -> Checkpoint:
    """Read a checkpoint folder, or the ``checkpoint/`` of a run folder (the newest complete
    copy, see :func:`newest_checkpoint`). Weights that are not finite are refused. ``ema`` and
    ``optimizer`` (and ``evaluator``) ``False`` leave those files unread (inference with the
    raw weights needs none of them, and a damaged one then does not matter)."""
    path = find_checkpoint(path)
    config = _read_config(path)
    wants_ema = ema
    ema = _read_tensors(path / "ema.safetensors") if wants_ema and (path / "ema.safetensors").exists() else None
    wants_optimizer, optimizer = optimizer, None
    if wants_optimizer and (path / "optimizer.safetensors").exists():
        optimizer = _unflatten_optimizer(_read_tensors(path / "optimizer.safetensors"),
                                         config.get("optimizer_groups", []), config.get("optimizer_scalars", {}))
    state = None
    if evaluator and "evaluator" in config:
        state = {**config["evaluator"], **_read_tensors(path / "evaluator.safetensors")}
    model = _read_tensors(path / "model.safetensors")
    _check_described(path, config)
    for what, tensors in (("model", model), ("EMA", ema or {})):
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"{path}: the {what} weights hold non-finite values (e.g. {bad[0]})")
    return Checkpoint(config, model, ema, optimizer, path, state)


def _check_described(path: Path, config: dict[str, Any]) -> None:
    """Refuse a config.json whose model section differs from the one the weights were saved
    with (kept in the weights file's header): an edited ``n_bits``, coupling scale or sample
    rate would give plausible, wrong numbers."""
    with safe_open(path / "model.safetensors", "pt") as weights:
        saved = (weights.metadata() or {}).get(MODEL_METADATA)
    if saved is None:
        return  # saved before flowkit kept it
    difference = _first_difference(json.loads(saved), json.loads(json.dumps(config.get("model"), default=str)))
    if difference is not None:
        where, in_weights, in_config = difference
        raise CheckpointError(f"{path}/config.json does not describe its weights: {where} is {in_config!r} there and "
                              f"was {in_weights!r} when the weights were saved (an edited config); restore it")


def _first_difference(saved: Any, given: Any, where: str = "model") -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(given, dict):
        for key in sorted(set(saved) | set(given)):
            found = _first_difference(saved.get(key), given.get(key), f"{where}.{key}")
            if found is not None:
                return found
        return None
    return None if saved == given else (where, saved, given)


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
