"""Optimiser steps inside backward: the same updates as ordinary training, gradients freed
as they are applied, checkpoints interchangeable, non-finite gradients refused."""

import pytest
import torch
from torch import nn

from flowkit.errors import FlowkitError, NonFiniteError
from flowkit.train import InBackwardOptimizer, TrainConfig, load_checkpoint
from tests.train.test_engine import DATA, make_trainer


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(y, x, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("memory", ["plain", "reversible"])
def test_training_in_backward_reaches_the_ordinary_weights(tmp_path, memory):
    ordinary = make_trainer(tmp_path / "ordinary", 8, memory=memory)
    ordinary.fit()
    fused = make_trainer(tmp_path / "fused", 8, memory=memory, optimizer_in_backward=True)
    last = fused.fit()
    assert all(p.grad is None for p in fused.model.parameters())  # applied and freed during backward
    assert_same_weights(ordinary.model, fused.model)
    assert_same_weights(ordinary.eval_model, fused.eval_model)
    assert last["grad_norm"] > 0


def test_a_fused_run_resumes_into_the_ordinary_run(tmp_path):
    straight = make_trainer(tmp_path / "straight", 10)
    straight.fit()
    make_trainer(tmp_path / "mixed", 4, optimizer_in_backward=True).fit()
    assert load_checkpoint(tmp_path / "mixed" / "checkpoint").optimizer["state"]
    resumed = make_trainer(tmp_path / "mixed", 10, resume=True, optimizer_in_backward=True)
    resumed.fit()
    assert_same_weights(straight.model, resumed.model)


def test_the_learning_rate_schedule_reaches_the_per_parameter_steps():
    layer = nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    stepper = InBackwardOptimizer(optimizer, layer.named_parameters())
    for lr in (0.5, 0.25):
        optimizer.param_groups[0]["lr"] = lr
        before = layer.weight.detach().clone()
        stepper.begin()
        layer(torch.ones(1, 2)).sum().backward()  # gradient of the weight: ones
        stepper.finish()
        torch.testing.assert_close(before - layer.weight.detach(), torch.full((1, 2), lr))
        assert float(stepper.grad_norm()) == pytest.approx(2**0.5)


def test_buckets_step_as_gradients_arrive_and_finish_applies_the_rest():
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    model = nn.Sequential(first, nn.Tanh(), second)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []  # when the first layer's weight arrives: is the second layer's gradient still held?
    first.weight.register_post_accumulate_grad_hook(lambda p: seen.append(second.weight.grad is None))
    for bucket_mib, held in ((0, False), (1, True)):
        stepper = InBackwardOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model.named_parameters(),
                                      bucket_mib=bucket_mib)
        stepper.begin()
        model(torch.ones(1, 2)).sum().backward()
        assert all((p.grad is not None) == held for p in model.parameters())  # a 1 MiB bucket is still filling
        stepper.finish()
        assert all(p.grad is None for p in model.parameters())
        assert all(not torch.equal(p, params[n]) for n, p in model.named_parameters())
        stepper.remove()
    assert seen == [True, False]


def test_a_parameter_the_loss_does_not_use_keeps_its_value():
    used, unused = nn.Linear(2, 2), nn.Linear(2, 2)
    model = nn.ModuleDict({"used": used, "unused": unused})
    before = unused.bias.detach().clone()
    stepper = InBackwardOptimizer(torch.optim.Adamax(model.parameters(), lr=0.1), model.named_parameters())
    stepper.begin()
    (used(torch.ones(1, 2)).sum() + unused.weight.sum()).backward()
    stepper.finish()
    assert torch.equal(unused.bias, before) and unused.bias not in stepper.optimizer.state


def test_a_non_finite_gradient_is_not_applied_and_is_named(tmp_path):
    trainer = make_trainer(tmp_path, 3, optimizer_in_backward=True)
    name, target = next((n, p) for n, p in trainer.model.named_parameters() if n.startswith("bijector.layers.2"))
    before = target.detach().clone()
    target.register_hook(lambda g: torch.full_like(g, float("nan")))
    with pytest.raises(NonFiniteError, match=f"non-finite gradient at step 1 in parameter {name}"):
        trainer.train_step((DATA[:32],))
    assert torch.equal(target.detach(), before)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_global_norm_clipping_is_refused(tmp_path):
    with pytest.raises(FlowkitError, match="cannot clip gradients by their global norm"):
        make_trainer(tmp_path, 3, optimizer_in_backward=True, grad_clip=1.0)


def test_removed_hooks_leave_gradients_in_place():
    layer = nn.Linear(2, 1)
    stepper = InBackwardOptimizer(torch.optim.SGD(layer.parameters(), lr=0.1), layer.named_parameters())
    stepper.remove()
    before = layer.weight.detach().clone()
    stepper.begin()
    layer(torch.ones(1, 2)).sum().backward()
    stepper.finish()
    assert layer.weight.grad is not None and torch.equal(layer.weight.detach(), before)


def test_parameter_groups_keep_their_own_learning_rates():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}])
    stepper = InBackwardOptimizer(optimizer, [("a", a), ("b", b)], bucket_mib=0)
    stepper.begin()
    (a + b).sum().backward()
    stepper.finish()
    assert float(a.detach()) == pytest.approx(-0.1) and float(b.detach()) == pytest.approx(-1.0)


def test_config_field_round_trips():
    assert TrainConfig.from_dict({"optimizer_in_backward": True}).optimizer_in_backward


def test_compiled_training_in_backward_reaches_the_eager_weights(tmp_path):
    eager = make_trainer(tmp_path / "eager", 4, optimizer="sgd")
    eager.fit()
    compiled = make_trainer(tmp_path / "compiled", 4, optimizer="sgd", compile=True, optimizer_in_backward=True)
    compiled.fit()
    assert all(p.grad is None for p in compiled.model.parameters())
    assert_same_weights(eager.model, compiled.model)
