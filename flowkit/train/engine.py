"""The training engine every plug-in shares.

It owns the loop: data-dependent initialisation on a first batch, the optimiser with
linear warmup, gradient clipping, Polyak (EMA) weights, a NaN/inf guard that names
the step and layer, atomic checkpoints with exact resume, distributed data parallel
under ``torchrun``, a tqdm bar and a JSONL metrics log with a PNG plot.

Runs are never lost: a new run refuses an output folder that already holds a
checkpoint (or someone else's ``checkpoint/`` folder); ``resume`` continues from the
newest complete checkpoint whatever a crash left behind; SIGTERM and SIGINT save a
checkpoint between steps and raise :class:`~flowkit.train.interrupt.TrainingInterrupted`;
an evaluation that fails saves the trained weights before the error propagates.

A plug-in gives three things:

* ``model``: an ``nn.Module`` whose ``forward`` is what the loss calls (a
  :class:`flowkit.Flow`'s forward is ``log_prob``), so DDP can wrap it;
* ``batches(step) -> tuple of tensors``: the *global* batch of a step, a
  deterministic function of the step (resume and DDP rely on it);
* ``loss_fn(model, batch) -> (loss, metrics)``: the mean loss of a (shard of a) batch.

Each rank trains on its contiguous slice of the global batch, so ``N`` processes give
the same weights as one process with the same global batch.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..errors import FlowkitError, NonFiniteError
from ..precision import set_conditioner_precision
from ..sequential import set_memory_mode
from . import distributed as dist
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .config import TrainConfig
from .in_backward import InBackwardOptimizer
from .interrupt import TrainingInterrupted, stop_on_signals
from .lock import hold_run_folder, holding_run_folder, release_run_folder
from .metrics import MetricsLog
from .optim import linear_warmup, make_ema, make_optimizer
from .runs import ensure_writable, prepare_run_folder

Batch = tuple[Tensor, ...]
LossFn = Callable[[nn.Module, Batch], tuple[Tensor, dict[str, float]]]


def first_nonfinite_layer(model: nn.Module, run: Callable[[], Any]) -> str:
    """Re-run ``run`` with hooks and name the first module whose output is not finite."""
    found: list[str] = []

    def hook(name):
        def check(_module, _inputs, output):
            tensors = output if isinstance(output, tuple) else (output,)
            if not found and any(torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()
                                 for t in tensors):
                found.append(name)
        return check

    handles = [m.register_forward_hook(hook(n or type(m).__name__)) for n, m in model.named_modules()]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else "(no layer output was non-finite; the loss itself is)"


class Trainer:
    """Run the loop for ``config.steps`` steps, writing to ``out_dir``.

    Args:
        model: the module to train (moved to ``device`` by the caller).
        loss_fn: ``(model, batch) -> (mean loss, metrics)``.
        batches: ``step -> global batch`` (deterministic).
        config: loop hyper-parameters.
        out_dir: folder for ``checkpoint/``, ``metrics.jsonl`` and ``metrics.png``.
        model_config: JSON-able description to rebuild the model from a checkpoint.
        evaluate: optional ``(eval_model) -> metrics``, run every ``eval_every`` steps
            and at the end on the EMA weights. When it has ``state_dict()`` and
            ``load_state_dict(state)`` (a dict of tensors and JSON values: e.g. early
            stopping's best weights and score), its state goes into every checkpoint and
            comes back on resume, so a resumed run decides as the uninterrupted one would.
        resume: continue from ``out_dir/checkpoint`` if it holds a checkpoint (the newest
            complete one after an interrupted save); start afresh if there is none.
        arguments: the command's JSON-able arguments that are not hyper-parameters (the
            data it trains on, ...), saved so that a resumed run can reuse them
            (:func:`flowkit.train.resume_run`).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Callable[[int], Batch], config: TrainConfig,
                 out_dir: str | Path, model_config: dict[str, Any] | None = None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None, resume: bool = False,
                 progress: bool = True, arguments: dict[str, Any] | None = None):
        self.model = model
        self.loss_fn = loss_fn
        self.batches = batches
        self.config = config
        self.out_dir = Path(out_dir)
        self.model_config = model_config or {}
        self.arguments = arguments or {}
        self.evaluate = evaluate
        self.progress = progress
        self.step = 0
        self.device = next(model.parameters()).device
        dist.init_from_env(self.device)
        self._check_in_backward(config)
        resuming = self._prepare_output(resume)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        self.optimizer = make_optimizer(model.parameters(), config.optimizer, config.lr, config.betas,
                                        config.weight_decay)
        self.scheduler = linear_warmup(self.optimizer, config.warmup_steps)
        self.ema = None
        if resuming:
            self._resume()
        else:
            self._initialise()
        # after the data-dependent initialisation
        set_memory_mode(model, config.memory, accumulate_grads=config.optimizer_in_backward)
        self.in_backward = None
        if config.optimizer_in_backward:
            self.in_backward = InBackwardOptimizer(self.optimizer, model.named_parameters())
        # the EMA copy is evaluated and sampled: it runs in the same precision
        self.precision = set_conditioner_precision(model, config.precision, self.device)
        if self.ema is not None:
            set_conditioner_precision(self.ema.module, self.precision, self.device, warn=False)
        self.wrapped = model
        if dist.is_distributed():
            self.wrapped = DistributedDataParallel(model,
                                                   device_ids=None if self.device.type == "cpu" else [self.device])
        self.compute_loss = torch.compile(loss_fn) if config.compile else loss_fn

    @staticmethod
    def _check_in_backward(config: TrainConfig) -> None:
        if not config.optimizer_in_backward:
            return
        if config.grad_clip:
            raise FlowkitError("optimizer_in_backward cannot clip gradients by their global norm "
                               "(part of the model is updated before the other gradients exist); drop grad_clip")
        if dist.is_distributed():
            raise FlowkitError("optimizer_in_backward does not work with distributed training "
                               "(parameters would be updated before the gradients are averaged)")

    @property
    def eval_model(self) -> nn.Module:
        """The weights to evaluate and sample with: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def _prepare_output(self, resume: bool) -> bool:
        ensure_writable(self.out_dir)
        self._hold_folder()
        found = prepare_run_folder(self.out_dir, resume, recover=dist.is_main())
        dist.barrier()
        return found

    def _initialise(self) -> None:
        torch.manual_seed(self.config.seed)
        with torch.no_grad():
            self.model.train()
            self.loss_fn(self.model, self._to_device(self.batches(0)))  # data-dependent init, same on all ranks
        if self.config.ema_decay:
            self.ema = make_ema(self.model, self.config.ema_decay)
        if dist.is_main():
            self.metrics.path.unlink(missing_ok=True)

    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.out_dir / "checkpoint")
        load_weights(self.model, checkpoint.model, "the checkpoint to resume")
        if self.config.ema_decay:
            self.ema = make_ema(self.model, self.config.ema_decay)
            if checkpoint.ema is not None:
                load_weights(self.ema.module, checkpoint.ema, "the checkpoint's EMA weights")
            self.ema.n_averaged.fill_(max(1, checkpoint.step))
        if checkpoint.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer)
        if checkpoint.evaluator is not None and hasattr(self.evaluate, "load_state_dict"):
            self.evaluate.load_state_dict(checkpoint.evaluator)
        self.step = checkpoint.step
        self.scheduler.last_epoch = self.step
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.step)
        if dist.is_main():
            self.metrics.truncate_after(self.step)

    def _to_device(self, batch: Batch) -> Batch:
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    def _shard(self, batch: Batch) -> Batch:
        world, rank = dist.world_size(), dist.rank()
        if batch[0].shape[0] % world:
            raise ValueError(f"global batch {batch[0].shape[0]} is not divisible by {world} processes")
        size = batch[0].shape[0] // world
        return tuple(t[rank * size:(rank + 1) * size] for t in batch)

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on the global ``batch``; raises :class:`NonFiniteError` on NaN/inf."""
        shard = self._to_device(self._shard(batch))
        self.model.train()
        loss, metrics = self.compute_loss(self.wrapped, shard)
        if not dist.all_finite(loss.detach()):
            layer = first_nonfinite_layer(self.model, lambda: self.loss_fn(self.model, shard))
            raise NonFiniteError(f"non-finite loss at step {self.step + 1}; first non-finite output in layer {layer}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.in_backward is not None:
            grad_norm = self._backward_and_step_in_it(loss)
        else:
            grad_norm = self._backward_and_step(loss)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), **metrics}

    def _backward_and_step(self, loss: Tensor) -> Tensor:
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip or math.inf)
        if not torch.isfinite(grad_norm):
            bad = [n for n, p in self.model.named_parameters()
                   if p.grad is not None and not torch.isfinite(p.grad).all()]
            self._raise_nonfinite_gradient(bad)
        self.optimizer.step()
        return grad_norm

    def _backward_and_step_in_it(self, loss: Tensor) -> Tensor:
        self.in_backward.begin()
        loss.backward()  # the parameters are updated during this call
        self.in_backward.finish()
        if self.in_backward.nonfinite:
            self._raise_nonfinite_gradient(self.in_backward.nonfinite)
        return self.in_backward.grad_norm()

    def _raise_nonfinite_gradient(self, names: list[str]) -> None:
        raise NonFiniteError(f"non-finite gradient at step {self.step + 1} in parameter {names[0] if names else '?'}")

    def _evaluate_or_save(self) -> dict[str, float]:
        """Run ``evaluate``; if it fails, save the trained weights before the error propagates."""
        try:
            return self.evaluate(self.eval_model)
        except Exception:
            self.save()
            raise

    def _hold_folder(self) -> None:
        """One process per run folder (:mod:`flowkit.train.lock`): held from the start until
        :meth:`fit` ends (or the trainer is gone); a later :meth:`save` takes it again."""
        hold_run_folder(self.out_dir, trainer=True)
        self._release_folder = weakref.finalize(self, release_run_folder, self.out_dir, trainer=True)

    def save(self) -> Path | None:
        """Write ``out_dir/checkpoint`` (rank 0 only)."""
        path = None
        if dist.is_main():
            config = {"model": self.model_config, "train": dataclasses.asdict(self.config), "step": self.step,
                      "arguments": self.arguments}
            ema = self.ema.module if self.ema is not None else None
            evaluator = self.evaluate.state_dict() if hasattr(self.evaluate, "state_dict") else None
            with holding_run_folder(self.out_dir):
                path = save_checkpoint(self.out_dir / "checkpoint", self.model, config, ema, self.optimizer,
                                       evaluator)
        dist.barrier()
        return path

    def fit(self) -> dict[str, float]:
        """Train to ``config.steps`` (or ``max_minutes``); checkpoint and evaluate on the way.
        The run folder is free for other processes when it returns."""
        if not self._release_folder.alive:
            self._hold_folder()
        try:
            return self._fit()
        finally:
            self._release_folder()

    def _fit(self) -> dict[str, float]:
        cfg = self.config
        start = time.monotonic()
        last: dict[str, float] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.progress and dist.is_main()),
                   dynamic_ncols=True, desc="train")
        with stop_on_signals() as stop, bar:  # the bar ends its line whatever ends training: errors start their own
            while self.step < cfg.steps:
                metrics = self.train_step(self.batches(self.step))
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k != "grad_norm"})
                out_of_time = cfg.max_minutes is not None and time.monotonic() - start > 60 * cfg.max_minutes
                done = self.step >= cfg.steps or out_of_time
                record = {"step": self.step, **metrics, "lr": self.scheduler.get_last_lr()[0],
                          "time_s": round(time.monotonic() - start, 3)}
                if self.evaluate is not None and (done or (cfg.eval_every and self.step % cfg.eval_every == 0)):
                    record.update({f"eval_{k}": v for k, v in self._evaluate_or_save().items()})
                if dist.is_main() and (done or self.step % cfg.log_every == 0 or "eval_loss" in record):
                    self.metrics.write(record)
                last = record
                if not done and dist.any_rank(stop.requested):
                    bar.close()
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, self.step, self.save())
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not done:
                    self.save()
                if out_of_time:
                    break
            bar.close()
            self.save()
        if dist.is_main() and self.metrics.read():
            self.metrics.plot(self.out_dir / "metrics.png")
        return last
