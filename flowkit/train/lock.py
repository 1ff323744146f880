"""One process per run folder: an OS file lock taken before a run folder is touched.

Two trainings writing one folder replace each other's checkpoints and mix their metrics;
a second process recovering checkpoints while the first one saves can move its files away.
:func:`hold_run_folder` takes ``OUT/.flowkit-run.lock`` (an OS lock through ``filelock``:
it is released when the process ends, however it ends, SIGKILL included) and writes who
holds it to ``OUT/.flowkit-run.holder``, so a refused process names the holder. Under
``torchrun`` only rank 0 takes it (all ranks of one job share the folder). Within one
process the lock is re-entrant: a run started and then trained, or resumed, by the same
process holds it once. :func:`flowkit.train.prepare_run_folder` holds it while it checks
and recovers the folder; a :class:`~flowkit.train.Trainer` holds it from its start until
its ``fit`` returns (or it is garbage-collected), and any later ``save`` while it writes.

Example:
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> hold_run_folder(out); hold_run_folder(out)   # re-entrant in one process
    >>> release_run_folder(out)
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import FlowkitError
from . import distributed as dist

__all__ = ["HOLDER_NAME", "LOCK_NAME", "hold_run_folder", "holding_run_folder", "release_run_folder"]

LOCK_NAME = ".flowkit-run.lock"
HOLDER_NAME = ".flowkit-run.holder"
_held: dict[Path, list] = {}  # folder -> [lock, trainers using it]


def _main_process() -> bool:
    if dist.is_distributed():
        return dist.is_main()
    return int(os.environ.get("RANK", "0")) == 0  # torchrun's rank, before the process group starts


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER_NAME).read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that left no details"


def hold_run_folder(out_dir: str | Path, trainer: bool = False) -> None:
    """Take the run folder's lock for this process (the folder must exist), or raise a
    :class:`~flowkit.errors.FlowkitError` naming the process that holds it; ``trainer``
    counts one more user, who gives it back with ``release_run_folder(out_dir, trainer=True)``."""
    if not _main_process():
        return
    folder = Path(out_dir).resolve()
    if folder in _held:
        _held[folder][1] += trainer
        return
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FlowkitError(f"{out_dir} is in use by another run ({_holder(folder)}); one process per run folder: "
                           f"wait for it to end, stop it, or choose another --out") from None
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": " ".join(sys.argv)}
    try:
        (folder / HOLDER_NAME).write_text(json.dumps(holder))
    except OSError:
        pass  # the lock holds without the details (a full disk is reported by the first save)
    _held[folder] = [lock, int(trainer)]


def release_run_folder(out_dir: str | Path, trainer: bool = False) -> None:
    """Give the run folder's lock back (a no-op if this process does not hold it); with
    ``trainer``, only once no trainer uses it any more."""
    folder = Path(out_dir).resolve()
    if folder not in _held:
        return
    if trainer:
        _held[folder][1] -= 1
        if _held[folder][1] > 0:
            return
    _held.pop(folder)[0].release()


@contextmanager
def holding_run_folder(out_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock for the ``with`` block; it stays held after the block
    only if a trainer of this process uses it."""
    hold_run_folder(out_dir)
    try:
        yield
    finally:
        entry = _held.get(Path(out_dir).resolve())
        if entry is not None and entry[1] == 0:
            release_run_folder(out_dir)
