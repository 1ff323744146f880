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
