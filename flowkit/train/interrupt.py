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

__all__ = ["StopFlag", "TrainingInterrupted", "interrupt_on_signals", "stop_on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint.

    Attributes:
        signum: the signal number (``128 + signum`` is the conventional exit status).
        step: the last completed step, the one saved.
        checkpoint: the checkpoint folder written.
        during: the work after training that the signal stopped (its result was not
            saved), or ``None`` for a stop between training steps.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path | None, during: str | None = None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        if during is None:
            where = f"; checkpoint saved in {checkpoint} (continue with --resume)" if checkpoint else ""
            super().__init__(f"stopped by {name} after step {step}{where}")
        else:  # in the work after the last step: what was saved is the trained weights without it
            super().__init__(f"stopped by {name} while {during}, after training step {step}; {checkpoint} holds "
                             f"the trained weights without it (--resume does it)")


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


@contextmanager
def interrupt_on_signals(step: int, checkpoint: Path, during: str) -> Iterator[None]:
    """Within the block (work after the last training step, such as a calibration, which
    has no step to stop after), SIGINT and SIGTERM stop at once with a
    :class:`TrainingInterrupted` that says what was saved and what was not."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise TrainingInterrupted(signum, step, checkpoint, during)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
