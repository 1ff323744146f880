"""Optimiser, linear warmup and Polyak (EMA) averaging for the training engine."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn, optim
from torch.optim.swa_utils import AveragedModel

__all__ = ["OPTIMIZERS", "ema_decay_at", "linear_warmup", "make_ema", "make_optimizer", "warmed_up_ema"]


OPTIMIZERS = ("adamax", "adam", "sgd")


def make_optimizer(params, name: str, lr: float, betas: tuple[float, float],
                   weight_decay: float = 0.0) -> optim.Optimizer:
    """``"adamax"`` (openai/glow), ``"adam"`` or plain ``"sgd"``, in their multi-tensor
    (``foreach``) form: one kernel per operation for all parameters instead of a Python
    loop over them (a third less optimiser time for Glow on CPU)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    if name == "sgd":
        return optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=True)
    kinds = {"adamax": optim.Adamax, "adam": optim.Adam}
    return kinds[name](params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)


def linear_warmup(optimizer: optim.Optimizer, warmup_steps: int) -> optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps``."""
    return optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


def ema_decay_at(update: int, decay: float) -> float:
    r"""The EMA decay at the ``update``-th average, warmed up as TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)`` does:

    .. math:: d_t = \min\left(d, \frac{1 + t}{10 + t}\right)

    With a constant decay :math:`d` the average of a short run is mostly its initial
    weights (0.999 keeps 37 % of them after 1,000 updates); the warmed-up decay averages
    over about the last :math:`t / 10` updates early on, and is :math:`d` itself from
    :math:`t = (10 d - 1) / (1 - d)` (8,990 updates for 0.999).

    Arguments:
        update: how many updates the average has had (``AveragedModel.n_averaged``).
        decay: the decay the warmup rises to.

    Example:
        >>> ema_decay_at(0, 0.999), ema_decay_at(90, 0.999), ema_decay_at(10**5, 0.999)
        (0.1, 0.91, 0.999)
    """
    return min(decay, (1 + update) / (10 + update))


def warmed_up_ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    """A ``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel`: the EMA with
    the decay of :func:`ema_decay_at`, all parameters updated by one multi-tensor lerp."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"the EMA decay must be in [0, 1], not {decay}")

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor | int) -> None:
        weight = 1.0 - ema_decay_at(int(n_averaged), decay)
        torch._foreach_lerp_(averaged, current, weight)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of the parameters with a warmed-up decay
    (:func:`ema_decay_at`). Buffers are copied at creation: create it after data-dependent
    initialisation. Its ``n_averaged`` counts the updates (the first one copies)."""
    return AveragedModel(model, multi_avg_fn=warmed_up_ema(decay), use_buffers=False)
