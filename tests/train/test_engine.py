import dataclasses
import json
import re

import pytest
import torch
from torch import nn

import flowkit as fk
from flowkit.errors import CheckpointError, NonFiniteError
from flowkit.train import IndexSchedule, TrainConfig, Trainer, load_checkpoint, load_weights, save_checkpoint


def tiny_flow() -> fk.Flow:
    return fk.Flow(fk.Sequential(fk.ActNorm(4), fk.Invertible1x1(4), fk.AffineCoupling(4, hidden=8, spatial_dims=0)),
                   event_shape=(4,))


_g = torch.Generator().manual_seed(0)
# a mixture of two well-separated clusters per axis, linearly mixed: far from Gaussian
DATA = (torch.sign(torch.randn(256, 4, generator=_g)) * 2 + 0.3 * torch.randn(256, 4, generator=_g)) @ torch.randn(
    4, 4, generator=_g)


def batches(schedule: IndexSchedule):
    return lambda step: (DATA[schedule.indices(step)] + 0.01 * torch.randn(schedule.batch_size, 4,
                                                                           generator=schedule.generator(step)),)


def nll(model, batch):
    loss = -model(batch[0]).mean()
    return loss, {"nll": float(loss.detach())}


def make_trainer(out, steps, resume=False, **config):
    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=32, lr=1e-2, warmup_steps=3, ema_decay=0.9, log_every=1, **config)
    return Trainer(tiny_flow(), nll, batches(IndexSchedule(256, 32, seed=1)), cfg, out, {"kind": "test"},
                   resume=resume, progress=False)


def test_training_lowers_the_loss_and_writes_metrics(tmp_path):
    trainer = make_trainer(tmp_path, 40)
    last = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 40 and records[-1]["step"] == 40
    assert last["nll"] < records[0]["nll"] - 0.5
    assert (tmp_path / "metrics.png").stat().st_size > 1000
    assert load_checkpoint(tmp_path / "checkpoint").step == 40


def test_warmup_is_linear():
    cfg = TrainConfig(lr=1.0, warmup_steps=4)
    trainer = Trainer(tiny_flow(), nll, lambda s: (DATA[:32],), cfg, "/tmp/unused", progress=False)
    lrs = []
    for _ in range(6):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.train_step((DATA[:32],))
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight = make_trainer(tmp_path / "a", 12)
    straight.fit()
    first = make_trainer(tmp_path / "b", 5)
    first.fit()
    resumed = make_trainer(tmp_path / "b", 12, resume=True)
    assert resumed.step == 5
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=name)
    for a, b in zip(straight.eval_model.parameters(), resumed.eval_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


class Exploding(nn.Module):
    """log p blows up once the step counter passes 3; the culprit is layer 'boom'."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.boom = nn.Identity()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = x * self.scale
        if self.calls > 4:
            h = self.boom(h * float("nan"))
        return -(h**2).sum(1)


def test_nan_guard_names_step_and_layer_and_saves_nothing(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=8, ema_decay=None, checkpoint_every=1, warmup_steps=1)
    trainer = Trainer(Exploding(), lambda m, b: (-m(b[0]).mean(), {}), lambda s: (torch.randn(8, 2),), cfg, tmp_path,
                      progress=False)
    with pytest.raises(NonFiniteError, match="non-finite loss at step 4; first non-finite output in layer boom"):
        trainer.fit()
    saved = load_checkpoint(tmp_path / "checkpoint")
    assert saved.step == 3 and torch.isfinite(saved.model["scale"]).all()


def test_checkpoints_refuse_nan_weights(tmp_path):
    model = tiny_flow()
    with torch.no_grad():
        model.bijector[0].bias[0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        save_checkpoint(tmp_path / "c", model, {})
    assert not (tmp_path / "c").exists()


def test_checkpoint_round_trip_and_interrupted_save(tmp_path):
    model = tiny_flow()
    model(DATA[:64])
    save_checkpoint(tmp_path / "c", model, {"step": 7})
    (tmp_path / "c").rename(tmp_path / "c.old")  # as if the process died between the two renames
    saved = load_checkpoint(tmp_path / "c")
    fresh = tiny_flow()
    load_weights(fresh, saved.model)
    fresh.eval(), model.eval()
    torch.testing.assert_close(fresh.log_prob(DATA), model.log_prob(DATA))
    assert saved.step == 7


def test_corrupt_and_mismatched_checkpoints_are_named(tmp_path):
    save_checkpoint(tmp_path / "c", tiny_flow(), {})
    other = fk.Flow(fk.Sequential(fk.ActNorm(5)), event_shape=(5,))
    with pytest.raises(CheckpointError, match="does not match the model: .*missing.*unexpected|does not match"):
        load_weights(other, load_checkpoint(tmp_path / "c").model)
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt checkpoint file"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_index_schedule_is_a_function_of_seed_and_step():
    a, b = IndexSchedule(100, 10, seed=3), IndexSchedule(100, 10, seed=3)
    epoch = torch.cat([a.indices(s) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    assert torch.equal(b.indices(13), a.indices(13))
    assert torch.equal(torch.rand(3, generator=a.generator(5)), torch.rand(3, generator=b.generator(5)))


@pytest.mark.parametrize("memory", ["checkpoint", "reversible"])
def test_memory_saving_modes_train_to_the_same_weights(tmp_path, memory):
    plain = make_trainer(tmp_path / "plain", 6)
    plain.fit()
    saving = make_trainer(tmp_path / memory, 6, memory=memory)
    assert saving.model.bijector.memory == memory
    saving.fit()
    for (name, a), b in zip(plain.model.state_dict().items(), saving.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)


def test_compiled_training_reaches_the_eager_weights(tmp_path):
    # SGD: Adamax divides by running maxima of near-zero gradients, which magnifies float noise
    eager = make_trainer(tmp_path / "eager", 4, optimizer="sgd")
    eager.fit()
    compiled = make_trainer(tmp_path / "compiled", 4, optimizer="sgd", compile=True)
    compiled.fit()
    assert compiled.compute_loss is not compiled.loss_fn
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)


def test_loading_refuses_non_finite_weights(tmp_path):
    from safetensors.torch import save_file

    save_checkpoint(tmp_path / "c", tiny_flow(), {"step": 1})
    state = load_checkpoint(tmp_path / "c").model
    state[next(iter(state))] = torch.full_like(state[next(iter(state))], float("inf"))
    save_file(state, tmp_path / "c" / "model.safetensors")
    with pytest.raises(CheckpointError, match="model weights hold non-finite values"):
        load_checkpoint(tmp_path / "c")


@pytest.mark.parametrize("bad, named", [
    ({"lr": -1e-3}, "lr=-0.001"), ({"lr": float("nan")}, "lr=nan"), ({"batch_size": 0}, "batch_size=0"),
    ({"steps": 2.5}, "steps=2.5"), ({"ema_decay": 1.0}, "ema_decay=1.0"), ({"betas": (0.9, 1.2)}, "betas="),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"), ({"log_every": 0}, "log_every=0"),
    ({"grad_clip": 0.0}, "grad_clip=0.0"), ({"memory": "swap"}, "memory='swap'"),
    ({"precision": "fp16"}, "precision='fp16'"), ({"max_minutes": -5}, "max_minutes=-5"),
    ({"warmup_steps": "100"}, "warmup_steps='100'"), ({"seed": True}, "seed=True"),
])
def test_a_training_config_out_of_range_is_named(bad, named):
    """Caught on construction, from code or from a saved run's edited config.json, before
    a model is touched: a negative learning rate would train uphill, an EMA decay of 1 never
    moves, a log interval of 0 divides by zero."""
    with pytest.raises(fk.FlowkitError, match=f"training config out of range: {re.escape(named)}"):
        TrainConfig(**bad)
    with pytest.raises(fk.FlowkitError, match="training config out of range"):
        TrainConfig.from_dict({**dataclasses.asdict(TrainConfig()), **bad})


def test_every_default_and_edge_of_the_training_config_is_accepted():
    TrainConfig()
    TrainConfig(steps=0, warmup_steps=0, ema_decay=None, grad_clip=None, eval_every=0, checkpoint_every=0,
                max_minutes=None, seed=-1, weight_decay=0.0, betas=(0.0, 0.0))
    TrainConfig(ema_decay=0.0, optimizer="sgd", memory="reversible+boundaries", precision="bf16-conditioners")
