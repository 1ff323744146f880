"""Run folders shared by every plug-in: the train-config merge, starting or resuming a run,
loading a run for inference (flowkit.train.config and flowkit.train.runs)."""

import pytest
import torch
from torch import nn

from flowkit.errors import CheckpointError, FlowkitError
from flowkit.train import TrainConfig, load_run, run_kind, save_checkpoint, start_run, train_config


def test_train_config_takes_given_values_over_defaults_and_skips_none():
    defaults = {"steps": 100, "lr": 1e-3, "batch_size": 8, "not_a_loop_setting": 1}
    config = train_config(defaults, steps=7, lr=None, seed=3)
    assert (config.steps, config.lr, config.batch_size, config.seed) == (7, 1e-3, 8, 3)
    assert train_config({}) == TrainConfig()


def test_train_config_checks_the_merged_values():
    with pytest.raises(FlowkitError, match="batch_size=0"):
        train_config({"batch_size": 8}, batch_size=0)


def save_run(out, kind="demo", width=3, ema_bias=None, **model):
    layer = nn.Linear(width, 2)
    ema = None
    if ema_bias is not None:
        ema = nn.Linear(width, 2)
        with torch.no_grad():
            ema.weight.copy_(layer.weight)
            ema.bias.fill_(ema_bias)
    save_checkpoint(out / "checkpoint", layer, {"model": {"kind": kind, "width": width, **model}, "train": {},
                                                "step": 4}, ema=ema)
    return layer


def build(saved):
    return nn.Linear(saved["width"], 2)


def test_start_run_gives_nothing_for_a_new_run_and_the_saved_config_to_resume(tmp_path):
    assert start_run(tmp_path / "run", resume=False, kind="demo") is None
    save_run(tmp_path / "run")
    with pytest.raises(FlowkitError, match="already holds a checkpoint"):
        start_run(tmp_path / "run", resume=False, kind="demo")
    saved = start_run(tmp_path / "run", resume=True, kind="demo")
    assert saved["model"] == {"kind": "demo", "width": 3} and saved["step"] == 4


def test_start_run_refuses_to_resume_another_kind_of_run(tmp_path):
    save_run(tmp_path / "run", kind="waveglow")
    with pytest.raises(CheckpointError, match="holds no glow run .*'waveglow'"):
        start_run(tmp_path / "run", resume=True, kind="glow")


def test_load_run_rebuilds_the_model_with_its_weights(tmp_path):
    layer = save_run(tmp_path / "run", width=5)
    assert run_kind(tmp_path / "run") == "demo"
    loaded = load_run(tmp_path / "run", "demo", build)
    torch.testing.assert_close(loaded.weight, layer.weight, rtol=0, atol=0)
    assert loaded.in_features == 5


def test_load_run_picks_ema_weights_only_when_asked_and_present(tmp_path):
    save_run(tmp_path / "run", ema_bias=7.0)
    assert float(load_run(tmp_path / "run", "demo", build, ema=True).bias.detach()[0]) == 7.0
    assert float(load_run(tmp_path / "run", "demo", build).bias.detach()[0]) != 7.0
    save_run(tmp_path / "plain")
    assert load_run(tmp_path / "plain", "demo", build, ema=True).in_features == 3  # no EMA saved: the model


def test_load_run_returns_the_extras_built_beside_the_module(tmp_path):
    save_run(tmp_path / "run", names=["cello", "violin"])
    module, names = load_run(tmp_path / "run", "demo", lambda saved: (build(saved), saved["names"]))
    assert isinstance(module, nn.Linear) and names == ["cello", "violin"]


@pytest.mark.parametrize("kind, model, message", [
    ("text", {}, "is not a demo model checkpoint"),
    ("demo", {"width": "three"}, "invalid demo model config"),
    ("demo", {"width": None}, "invalid demo model config"),
])
def test_load_run_names_the_problem(tmp_path, kind, model, message):
    save_checkpoint(tmp_path / "checkpoint", nn.Linear(3, 2), {"model": {"kind": kind, "width": 3, **model}})
    with pytest.raises(CheckpointError, match=message):
        load_run(tmp_path, "demo", build, "demo model")


def test_load_run_refuses_weights_of_another_shape(tmp_path):
    save_run(tmp_path / "run", width=3)
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_run(tmp_path / "run", "demo", lambda saved: nn.Linear(4, 2))


HOLD = ("import sys; from flowkit.train.lock import hold_run_folder; from pathlib import Path; "
        "Path(sys.argv[1]).mkdir(exist_ok=True); hold_run_folder(sys.argv[1]); print('held', flush=True); "
        "sys.stdin.read()")


def holding_process(out):
    """A child process that takes the run folder ``out`` and keeps it until killed."""
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if child.stdout.readline().strip() != "held":
        child.wait()
        raise FlowkitError(child.stderr.read().strip().splitlines()[-1])
    return child


def stop(child):
    child.kill()
    child.wait()


def test_a_run_folder_in_use_by_another_process_is_refused_naming_it(tmp_path, capsys):
    from flowkit.cli import main

    out = tmp_path / "run"
    child = holding_process(out)
    try:
        with pytest.raises(FlowkitError, match=rf"in use by another run \(pid {child.pid} on "):
            start_run(out, resume=False, kind="demo")
        code = main(["image", "train", "--preset", "tiny", "--out", str(out), "--steps", "1"])  # the real CLI
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"pid {child.pid}" in err[0], err
    finally:
        stop(child)
    assert start_run(out, resume=False, kind="demo") is None  # a killed holder frees the folder


def test_a_trainer_holds_the_folder_while_it_trains_and_a_bare_check_never_keeps_it(tmp_path):
    from flowkit.train import Trainer

    out = tmp_path / "run"
    assert start_run(out, resume=False, kind="demo") is None
    stop(holding_process(out))  # the check alone kept nothing: another process took the folder
    layer = nn.Linear(2, 2)
    data = torch.randn(8, 2)
    trainer = Trainer(layer, lambda m, b: ((m(b[0]) ** 2).mean(), {}), lambda step: (data,),
                      TrainConfig(steps=1, batch_size=8, warmup_steps=0, ema_decay=None), out, {"kind": "demo"},
                      progress=False)
    with pytest.raises(FlowkitError, match="in use by another run"):
        holding_process(out)  # from its start
    trainer.fit()
    child = holding_process(out)  # free once training is done, although the trainer still exists
    try:
        with pytest.raises(FlowkitError, match="in use by another run"):
            trainer.save()  # a later save takes the folder again, and is refused while another process has it
    finally:
        stop(child)
    assert trainer.save() is not None


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_a_config_that_is_not_a_small_regular_file_is_refused_without_hanging(tmp_path, kind):
    """A FIFO for config.json used to block forever, a link to /dev/zero to read until memory ran out."""
    import os
    import subprocess
    import sys

    save_run(tmp_path / "run")
    config = tmp_path / "run" / "checkpoint" / "config.json"
    config.unlink()
    if kind == "fifo":
        os.mkfifo(config)
    elif kind == "dev-zero":
        config.symlink_to("/dev/zero")
    else:
        config.write_bytes(b" " * (17 * 2**20))
    command = [sys.executable, "-m", "flowkit.cli", "image", "evaluate", "--checkpoint", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert ("not a regular file" if kind != "huge" else "more than the") in err[0]
