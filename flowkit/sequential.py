r"""Chains of bijectors: :class:`Sequential`, and :func:`set_memory_mode`, which picks how
a model's chains back-propagate (see :mod:`flowkit.reversible`).

Example:
    >>> import torch, flowkit
    >>> chain = flowkit.Sequential(flowkit.ActNorm(4), flowkit.Invertible1x1(4))
    >>> y, ladj = chain(torch.randn(8, 4, 16))
    >>> ladj.shape
    torch.Size([8])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .bijector import Bijector, Shape
from .memory import MemoryMode, check_memory_mode
from .reversible import GradSink, chain_backward, checkpointed_forward, reversible_forward

__all__ = ["Sequential", "any_reads_context", "set_memory_mode", "total_log_det"]


class Sequential(Bijector):
    r"""Compose bijectors: ``Sequential(f1, f2)(x) = f2(f1(x))``, log-dets summed.

    Every member receives the same ``context``. Indexing with an int gives a member,
    with a slice a new :class:`Sequential` sharing the members. ``memory`` picks how
    training back-propagates: ``"plain"`` autograd, ``"checkpoint"`` (per-layer gradient
    checkpointing), ``"reversible"`` (no stored activations; inputs rebuilt with the
    exact inverse during backward) or ``"reversible+boundaries"`` (also keeps the input
    of every multiscale level, which bounds reconstruction drift), see
    :mod:`flowkit.reversible`.

    Args:
        bijectors: the members, in order (or one iterable of them).
        memory: the backpropagation mode (:data:`flowkit.memory.MEMORY_MODES`).

    Example:
        >>> flow = flowkit.Sequential(flowkit.Squeeze(2), flowkit.ActNorm(12))
        >>> flow.forward_shape((3, 32, 32))
        (12, 16, 16)
    """

    def __init__(self, *bijectors: Bijector | Iterable[Bijector], memory: MemoryMode = "plain"):
        super().__init__()
        check_memory_mode(memory)
        self.memory = memory  # see flowkit.reversible
        self.accumulate_grads = False  # see set_memory_mode below
        if len(bijectors) == 1 and not isinstance(bijectors[0], nn.Module):
            bijectors = tuple(bijectors[0])
        for i, b in enumerate(bijectors):
            if not isinstance(b, Bijector):
                raise TypeError(f"Sequential member {i} is a {type(b).__name__}, not a flowkit.Bijector")
        self.layers = nn.ModuleList(bijectors)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.memory != "plain" and torch.is_grad_enabled() and len(self.layers):
            if self.memory == "checkpoint":
                return checkpointed_forward(self.layers, x, context)
            return reversible_forward(self.layers, x, context, boundaries=self.memory == "reversible+boundaries",
                                      accumulate_grads=self.accumulate_grads)
        steps = []
        for layer in self.layers:
            x, step = layer(x, context)
            steps.append(step)
        return x, total_log_det(steps, x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        steps = []
        for layer in reversed(self.layers):
            y, step = layer.inverse(y, context)
            steps.append(step)
        return y, total_log_det(steps, y)

    def reversible_backward(self, y: Tensor, grad_y: Tensor, grad_ladj: Tensor,
                            sink: GradSink) -> tuple[Tensor, Tensor]:
        return chain_backward(self.layers, y, grad_y, grad_ladj, sink)

    @property
    def reads_context(self) -> bool | None:
        return any_reads_context(self.layers)

    def forward_shape(self, shape: Sequence[int]) -> Shape:
        for layer in self.layers:
            shape = layer.forward_shape(shape)
        return tuple(shape)

    def inverse_shape(self, shape: Sequence[int]) -> Shape:
        for layer in reversed(self.layers):
            shape = layer.inverse_shape(shape)
        return tuple(shape)

    def __getitem__(self, index: int | slice) -> Bijector:
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Bijector]:
        return iter(self.layers)


def any_reads_context(bijectors: Iterable[nn.Module]) -> bool | None:
    """``True`` if any of ``bijectors`` reads its context, ``False`` if each is known not to,
    ``None`` otherwise (a container's :attr:`Bijector.reads_context`)."""
    flags = [getattr(b, "reads_context", None) for b in bijectors]
    if any(flag is True for flag in flags):
        return True
    return False if all(flag is False for flag in flags) else None


def total_log_det(steps: list[Tensor], x: Tensor) -> Tensor:
    """The sum of a chain's per-sample log-dets, in one reduction: a running sum costs an
    operation and an autograd node per layer, which adds up in deep eager models."""
    if not steps:
        return x.new_zeros(x.shape[0])
    if len(steps) == 1:
        return steps[0]
    if all(step.shape == steps[0].shape for step in steps):
        return torch.stack(steps).sum(0)
    total = steps[0]
    for step in steps[1:]:
        total = total + step
    return total


def set_memory_mode(module: nn.Module, mode: MemoryMode, accumulate_grads: bool = False) -> nn.Module:
    """Set the backpropagation mode of every :class:`flowkit.Sequential` inside ``module``.

    Arguments:
        module: a flow or any module holding :class:`flowkit.Sequential` chains.
        mode: one of :data:`flowkit.memory.MEMORY_MODES`.
        accumulate_grads: reversible modes only: deliver each layer's parameter
            gradients into ``.grad`` during backward, as soon as they are computed, instead
            of all at once at the end of the chain. Needed by optimisers that step inside
            backward; ``torch.autograd.grad`` with respect to parameters then finds none.
    """
    check_memory_mode(mode)
    for sub in module.modules():
        if isinstance(sub, Sequential):
            sub.memory = mode
            sub.accumulate_grads = accumulate_grads
    return module
