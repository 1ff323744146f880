"""Run folders, shared by every plug-in: starting or resuming a run, and loading a run
for inference.

A run folder holds ``checkpoint/`` (see :mod:`flowkit.train.checkpoint`) whose
``config.json`` describes the model as ``{"kind": ..., ...}``: the plug-in's own model
config, tagged with its kind so that one plug-in never loads or resumes another's run.

Example:
    >>> import tempfile, torch
    >>> from flowkit.train import load_run, save_checkpoint, start_run
    >>> out = tempfile.mkdtemp()
    >>> start_run(out, resume=False, kind="demo") is None   # a new run: nothing saved yet
    True
    >>> _ = save_checkpoint(f"{out}/checkpoint", torch.nn.Linear(2, 2), {"model": {"kind": "demo", "width": 2}})
    >>> load_run(out, "demo", lambda saved: torch.nn.Linear(saved["width"], 2)).in_features
    2
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from ..config import check_model_size
from ..errors import CheckpointError, FlowkitError
from .checkpoint import (
    checkpoint_config,
    load_checkpoint,
    load_weights,
    newest_checkpoint,
    recover_checkpoint,
    refuse_foreign_folder,
    sibling,
)
from .lock import holding_run_folder

__all__ = ["DEMO_ADVICE", "ensure_writable", "load_run", "prepare_run_folder", "run_kind", "saved_run_config",
           "start_run"]

Built = TypeVar("Built")

#: what a demo (it starts afresh, with no ``--resume``) says when its folder holds a run
DEMO_ADVICE = "pass --overwrite to replace it or choose another --out"


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written in it, before any training time is spent."""
    probe = folder / f".flowkit-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FlowkitError(f"cannot write to the output folder {folder}: {error.strerror or error}") from None


def prepare_run_folder(out_dir: str | Path, resume: bool, recover: bool = True, overwrite: bool = False,
                       advice: str = "pass --resume to continue it or choose another --out") -> bool:
    """Check a run's output folder before any work; return whether a run is there to resume.

    Refuses a folder that already holds a checkpoint unless ``resume`` (no run is
    overwritten), a ``checkpoint/`` folder with someone else's files, a folder that
    cannot be written, and a folder another process is running in (it takes the
    folder's lock, :func:`flowkit.train.lock.hold_run_folder`). With ``recover`` the
    newest complete checkpoint left by an interrupted save is moved back into place (see
    :func:`recover_checkpoint`). With ``overwrite`` (and no ``resume``) an existing run's
    checkpoints are deleted first; only flowkit checkpoints, never a user's own files.
    ``advice`` ends the refusal: what the command the user ran offers instead (a demo has
    ``--overwrite``, not ``--resume``).
    """
    out_dir = Path(out_dir)
    ensure_writable(out_dir)
    with holding_run_folder(out_dir):  # before anything in it is moved: one process per run folder
        return _prepare(out_dir, resume, recover, overwrite, advice)


def _prepare(out_dir: Path, resume: bool, recover: bool, overwrite: bool, advice: str) -> bool:
    checkpoint_dir = out_dir / "checkpoint"
    if overwrite and not resume:
        for folder in (checkpoint_dir, sibling(checkpoint_dir, ".old"), sibling(checkpoint_dir, ".tmp")):
            if newest_checkpoint(folder) is not None:
                shutil.rmtree(folder)
    found = newest_checkpoint(checkpoint_dir) is not None
    if found and not resume:
        raise FlowkitError(f"{out_dir} already holds a checkpoint; {advice}")
    if not found:
        refuse_foreign_folder(checkpoint_dir)
    if found and recover:
        recover_checkpoint(checkpoint_dir)
    return found


def saved_run_config(out_dir: str | Path, kind: str) -> dict[str, Any]:
    """The saved configuration of the run in ``out_dir`` (``{"model": ..., "train": ..., "step": ...}``),
    checking that its model is of ``kind`` (e.g. a vocoder run is not resumed as a pitch run)."""
    saved = load_checkpoint(Path(out_dir) / "checkpoint").config
    if saved.get("model", {}).get("kind") != kind:
        raise CheckpointError(f"{out_dir} holds no {kind} run (it holds {saved.get('model', {}).get('kind')!r})")
    return saved


def start_run(out_dir: str | Path, resume: bool, kind: str) -> dict[str, Any] | None:
    """Check a run folder before any work (:func:`prepare_run_folder`); for a run to
    resume, return its saved configuration (``{"model": ..., "train": ..., ...}``, checked
    to be of ``kind``), for a new run ``None``."""
    return saved_run_config(out_dir, kind) if prepare_run_folder(out_dir, resume) else None


def run_kind(checkpoint: str | Path) -> str | None:
    """The model kind a run or checkpoint folder holds (``"glow"``, ``"waveglow"``, ...)."""
    model = checkpoint_config(checkpoint).get("model")
    return model.get("kind") if isinstance(model, dict) else None


def load_run(checkpoint: str | Path, kind: str, build: Callable[[dict[str, Any]], Built], what: str | None = None,
             ema: bool = False) -> Built:
    """Rebuild a model from a run folder (or its ``checkpoint/``) without executing code.

    ``build`` receives the saved model config (without its ``kind``) and returns the
    module whose weights the checkpoint holds, or a tuple whose first item is that module;
    it may raise ``KeyError``, ``TypeError`` or ``ValueError`` on a config it cannot
    read, which becomes a :class:`~flowkit.errors.CheckpointError` naming ``what``.

    Arguments:
        checkpoint: a run folder or a checkpoint folder.
        kind: the model kind the run must hold; another kind is refused.
        build: saved model config -> the model (or a tuple starting with it).
        what: the model's name in messages (default ``kind``).
        ema: load the EMA weights when the checkpoint has them.
    """
    what = what or kind
    saved = load_checkpoint(checkpoint, ema=ema, optimizer=False, evaluator=False)
    described = saved.config.get("model")
    if not isinstance(described, dict) or described.get("kind") != kind:
        raise CheckpointError(f"{checkpoint} is not a {what} checkpoint")
    saved_config = {k: v for k, v in described.items() if k != "kind"}
    try:
        check_model_size(lambda: build(saved_config), f"the {what} of {checkpoint}")
        built = build(saved_config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{checkpoint}: invalid {what} config ({error})") from None
    module = built[0] if isinstance(built, tuple) else built
    if not isinstance(module, nn.Module):
        raise TypeError(f"build returned a {type(module).__name__}, not the module the checkpoint's weights go into")
    load_weights(module, saved.ema if ema and saved.ema is not None else saved.model, f"checkpoint {checkpoint}")
    return built
