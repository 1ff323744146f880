"""Runs are never lost: crashes during saves, signals, a full disk, foreign folders.

Faults are real: child processes are SIGKILLed at random moments and exactly between
the two renames of a save, and stopped with SIGTERM and SIGINT; each interrupted run
is resumed and must end with the weights of the uninterrupted run.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowkit.errors import CheckpointError, FlowkitError
from flowkit.train import checkpoint as checkpoint_module
from flowkit.train import load_checkpoint, newest_checkpoint, save_checkpoint
from tests.train.fault_worker import make_trainer, tiny_flow

WORKER = Path(__file__).with_name("fault_worker.py")
STEPS = 40
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights of the uninterrupted run."""
    trainer = make_trainer(tmp_path_factory.mktemp("straight"), STEPS)
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def finish_and_compare(out: Path, straight: dict[str, torch.Tensor]) -> int:
    """Resume ``out`` to the end; its weights must equal the uninterrupted run's. Returns the step resumed from."""
    trainer = make_trainer(out, STEPS, resume=True)
    resumed_from = trainer.step
    trainer.fit()
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, straight[name], atol=1e-6, rtol=1e-5, msg=name)
    assert not (out / "checkpoint.old").exists() and not (out / "checkpoint.tmp").exists()
    return resumed_from


def start_worker(out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(STEPS), *options], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_exactly_between_the_renames_then_resume(tmp_path, straight):
    out = tmp_path / "run"
    child = start_worker(out, "--kill-at-save", "7")
    child.wait(timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    assert not (out / "checkpoint").exists()  # killed between "checkpoint -> .old" and ".tmp -> checkpoint"
    assert load_checkpoint(out / "checkpoint").step == 7  # the loaders find the newest complete copy (.tmp)
    assert finish_and_compare(out, straight) == 7


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_at_random_moments_during_saves_then_resume(tmp_path, straight, seed):
    out = tmp_path / "run"
    child = start_worker(out, "--announce-step", "2")  # a checkpoint every step: most time is spent saving
    assert child.stdout.readline().strip() == "step 2"
    time.sleep(random.Random(seed).uniform(0.0, 0.15))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert newest_checkpoint(out / "checkpoint") is not None
    assert finish_and_compare(out, straight) >= 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_and_resume_exactly(tmp_path, straight, sig):
    out = tmp_path / "run"
    child = start_worker(out, "--announce-step", "5", "--checkpoint-every", "1000")
    assert child.stdout.readline().strip() == "step 5"
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + sig, stderr
    saved = load_checkpoint(out / "checkpoint").step
    assert 5 <= saved < STEPS and f"stopped by {signal.Signals(sig).name} after step {saved}" in stdout
    assert finish_and_compare(out, straight) == saved


def test_resume_uses_the_old_copy_left_between_the_renames(tmp_path, straight):
    out = tmp_path / "run"
    make_trainer(out, 9).fit()
    (out / "checkpoint").rename(out / "checkpoint.old")
    (out / "checkpoint.tmp").mkdir()
    (out / "checkpoint.tmp" / "model.safetensors").write_bytes(b"half written")  # no config.json: incomplete
    assert finish_and_compare(out, straight) == 9


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_flow()
    save_checkpoint(tmp_path / "c", model, {"step": 1})
    before = load_checkpoint(tmp_path / "c").model
    calls = []

    def disk_full(tensors, file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(tensors, file, *args, **kwargs)

    original = checkpoint_module.save_file
    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    with torch.no_grad():
        model.bijector[0].bias.add_(1.0)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint is kept"):
        save_checkpoint(tmp_path / "c", model, {"step": 2}, ema=model)
    kept = load_checkpoint(tmp_path / "c")
    assert kept.step == 1 and all(torch.equal(kept.model[k], before[k]) for k in before)
    assert not (tmp_path / "c.tmp").exists()


def test_saves_are_durable(tmp_path, monkeypatch):
    synced = []
    original = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), original(fd)))
    save_checkpoint(tmp_path / "c", tiny_flow(), {"step": 1}, ema=tiny_flow())
    names = [Path(p).name for p in synced]
    assert {"model.safetensors", "ema.safetensors", "config.json", "c.tmp"} <= set(names)
    assert names[-1] == tmp_path.name  # the parent folder, after the rename


def test_a_foreign_checkpoint_folder_is_never_overwritten(tmp_path):
    mine = tmp_path / "run" / "checkpoint"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own files")
    for resume in (True, False):
        with pytest.raises(CheckpointError, match="holds no flowkit checkpoint"):
            make_trainer(tmp_path / "run", 3, resume=resume)
    with pytest.raises(CheckpointError, match="holds no flowkit checkpoint"):
        save_checkpoint(mine, tiny_flow(), {"step": 1})
    assert (mine / "notes.txt").read_text() == "my own files"


def test_a_new_run_never_replaces_an_existing_one(tmp_path):
    make_trainer(tmp_path, 2).fit()
    with pytest.raises(FlowkitError, match="already holds a checkpoint"):
        make_trainer(tmp_path, 2)
    assert load_checkpoint(tmp_path).step == 2  # a run folder works wherever a checkpoint is expected


def test_a_failed_evaluation_keeps_the_trained_weights(tmp_path):
    trainer = make_trainer(tmp_path, 5)

    def broken(model):
        raise FlowkitError("held-out data is broken")

    trainer.evaluate = broken
    with pytest.raises(FlowkitError, match="held-out data is broken"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint").step == 5


def test_an_unwritable_output_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FlowkitError, match="cannot write to the output folder"):
        make_trainer(blocker / "run", 3)


def test_overwrite_replaces_a_run_but_never_a_users_own_files(tmp_path):
    from flowkit.train import prepare_run_folder

    make_trainer(tmp_path / "run", 2).fit()
    assert prepare_run_folder(tmp_path / "run", resume=False, overwrite=True) is False
    assert newest_checkpoint(tmp_path / "run" / "checkpoint") is None
    mine = tmp_path / "mine" / "checkpoint"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own files")
    with pytest.raises(CheckpointError, match="holds no flowkit checkpoint"):
        prepare_run_folder(tmp_path / "mine", resume=False, overwrite=True)
    assert (mine / "notes.txt").exists()
