"""Optimiser, linear warmup and Polyak (EMA) averaging for the training engine."""

from __future__ import annotations

from torch import nn, optim
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_optimizer(params, name: str, lr: float, betas: tuple[float, float], weight_decay: float = 0.0) -> optim.Optimizer:
    """``"adamax"`` (openai/glow), ``"adam"`` or plain ``"sgd"``, in their multi-tensor
    (``foreach``) form: one kernel per operation for all parameters instead of a Python
    loop over them (a third less optimiser time for Glow on CPU)."""
    if name == "sgd":
        return optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=True)
    kinds = {"adamax": optim.Adamax, "adam": optim.Adam}
    if name not in kinds:
        raise ValueError(f"optimizer must be one of adam, adamax, sgd, not {name!r}")
    return kinds[name](params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)


def linear_warmup(optimizer: optim.Optimizer, warmup_steps: int) -> optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps``."""
    return optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of the parameters (buffers are copied at creation:
    create it after data-dependent initialisation)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
