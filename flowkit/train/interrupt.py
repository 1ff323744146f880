"""Stop training cleanly on SIGTERM (cluster preemption) and SIGINT (Ctrl-C).

The handlers only raise a flag; the engine checks it between steps, saves a
checkpoint and raises :class:`TrainingInterrupted`, so ``--resume`` continues exactly
where the run stopped. A second SIGINT while the first is being handled stops at
once (the checkpoint on disk is always complete, so nothing is corrupted).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["StopFlag", "TrainingInterrupted", "stop_on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint.

    Attributes:
        signum: the signal number (``128 + signum`` is the conventional exit status).
        step: the last completed step, the one saved.
        checkpoint: the checkpoint folder written.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = f"; checkpoint saved in {checkpoint} (continue with --resume)" if checkpoint else ""
        super().__init__(f"stopped by {name} after step {step}{where}")


class StopFlag:
    """Set by the signal handlers; ``signum`` is the first signal received."""

    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Within the block, SIGINT and SIGTERM set the yielded flag instead of killing the process.

    Outside the main thread (where Python cannot install handlers) the flag never rises.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, _frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        flag.signum = flag.signum or signum

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
