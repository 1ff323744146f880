"""A small training run for the fault tests, importable and runnable as a child process.

    python fault_worker.py OUT STEPS [--kill-at-save K] [--announce-step N]

``--kill-at-save K`` SIGKILLs the process exactly between the two renames of its K-th
save (only ``checkpoint.old`` and ``checkpoint.tmp`` exist then). ``--announce-step N``
prints ``step N`` once that step has run, so the parent can time a signal.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

import flowkit as fk
from flowkit.train import IndexSchedule, TrainConfig, Trainer, TrainingInterrupted

_g = torch.Generator().manual_seed(0)
DATA = (torch.sign(torch.randn(512, 4, generator=_g)) * 2 + 0.3 * torch.randn(512, 4, generator=_g)) @ torch.randn(
    4, 4, generator=_g)


def tiny_flow() -> fk.Flow:
    return fk.Flow(fk.Sequential(fk.ActNorm(4), fk.Invertible1x1(4), fk.AffineCoupling(4, hidden=16, spatial_dims=0),
                                 fk.Invertible1x1(4), fk.AffineCoupling(4, hidden=16, spatial_dims=0)),
                   event_shape=(4,))


def make_trainer(out, steps: int, resume: bool = False, announce_step: int | None = None, **config) -> Trainer:
    torch.manual_seed(0)
    schedule = IndexSchedule(len(DATA), 32, seed=1)

    def batches(step):
        if step + 1 == announce_step:
            print(f"step {step + 1}", flush=True)
        noise = 0.01 * torch.randn(32, 4, generator=schedule.generator(step))
        return (DATA[schedule.indices(step)] + noise,)

    def nll(model, batch):
        loss = -model(batch[0]).mean()
        return loss, {"nll": float(loss.detach())}

    cfg = TrainConfig(**{"steps": steps, "batch_size": 32, "lr": 5e-3, "warmup_steps": 3, "ema_decay": 0.9,
                         "log_every": 1, **config})
    return Trainer(tiny_flow(), nll, batches, cfg, out, {"kind": "fault-test"}, resume=resume, progress=False)


def kill_between_renames_of_save(k: int) -> None:
    """Patch ``Path.rename`` so that the K-th rename of ``checkpoint.tmp`` never happens."""
    original, seen = Path.rename, [0]

    def rename(self, target):
        if self.name == "checkpoint.tmp":
            seen[0] += 1
            if seen[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, target)

    Path.rename = rename


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = sys.argv[1:]
    out, steps = args[0], int(args[1])
    options = dict(zip(args[2::2], args[3::2]))
    if "--kill-at-save" in options:
        kill_between_renames_of_save(int(options["--kill-at-save"]))
    announce = int(options["--announce-step"]) if "--announce-step" in options else None
    every = int(options.get("--checkpoint-every", 1))
    try:
        make_trainer(out, steps, resume=True, announce_step=announce, checkpoint_every=every).fit()
    except TrainingInterrupted as stop:
        print(stop, flush=True)
        sys.exit(128 + stop.signum)
