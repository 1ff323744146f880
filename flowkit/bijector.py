r"""The bijector contract: :class:`Bijector`, :class:`Inverse` and :class:`Sequential`.

A bijector is an invertible map :math:`y = f(x)` that also returns
:math:`\log |\det J_f(x)|`, one value per sample, summed over the event:

.. code-block:: python

    y, ladj = bijector(x, context)          # forward
    x, ladj_inv = bijector.inverse(y, context)  # ladj_inv == -ladj

Tensors are channel-first, ``(batch, channels, *spatial)`` with zero, one or two
spatial dims; log-dets have shape ``(batch,)`` and the input's dtype and device.

Example:
    >>> import torch, flowkit
    >>> flow = flowkit.Sequential(flowkit.ActNorm(4), flowkit.Invertible1x1(4))
    >>> y, ladj = flow(torch.randn(8, 4, 16))
    >>> ladj.shape
    torch.Size([8])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import Tensor, nn

from .errors import ShapeError

if TYPE_CHECKING:
    from .reversible import GradSink

Shape = tuple[int, ...]
MemoryMode = Literal["plain", "checkpoint", "reversible", "reversible+boundaries"]
MEMORY_MODES: tuple[str, ...] = get_args(MemoryMode)


def check_memory_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`MEMORY_MODES`."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {mode!r}")


class Bijector(nn.Module):
    """Base class of every invertible layer and model in flowkit.

    Subclasses implement :meth:`forward` and :meth:`inverse`; shape-changing
    subclasses also override :meth:`forward_shape` and :meth:`inverse_shape`.
    ``context`` is an optional conditioning tensor with the same batch size.
    """

    #: Whether the layer reads ``context``: ``False`` for layers that ignore it (ActNorm,
    #: 1x1 mixing, squeezes), ``True`` for conditioned ones, ``None`` (the default) when a
    #: bijector does not say. :class:`flowkit.Flow` refuses a context that nothing reads.
    reads_context: bool | None = None

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``x`` to ``y``; return ``(y, log|det dy/dx|)`` with the log-det of shape ``(batch,)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``y`` back to ``x``; return ``(x, log|det dx/dy|)``."""
        raise NotImplementedError

    def forward_shape(self, shape: Sequence[int]) -> Shape:
        """The event shape (no batch dim) of the output for an input event of ``shape``."""
        return tuple(shape)

    def inverse_shape(self, shape: Sequence[int]) -> Shape:
        """The event shape of the input that produces an output event of ``shape``."""
        return tuple(shape)

    @property
    def inv(self) -> Bijector:
        """The inverse bijector: its forward is this one's inverse."""
        return Inverse(self)

    def recompute(self, y: Tensor, context: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        """For reversible backprop: rebuild the input from the output ``y`` and re-run the
        forward pass with autograd on.

        Returns ``(leaves, y_again, ladj)``: input leaves that require grad (concatenated
        along dim 1 they form the input), and the forward outputs computed from them.
        Couplings override it to run their network once instead of twice.
        """
        with torch.no_grad():
            x = self.inverse(y, context)[0]
        x = x.detach().requires_grad_(True)
        y_again, ladj = self(x, context)
        return [x], y_again, ladj

    def reversible_backward(self, y: Tensor, grad_y: Tensor, grad_ladj: Tensor, sink: GradSink) -> tuple[Tensor, Tensor]:
        """For reversible backprop: from the output ``y`` and the gradients of the loss
        with respect to ``y`` and to the log-det, return the input and its gradient; add
        parameter (and context) gradients to ``sink``. The default recomputes this layer
        with :meth:`recompute`; containers override it to walk their members, so each
        member is recomputed once however deep the nesting.
        """
        from .reversible import recompute_backward

        return recompute_backward(self.recompute, list(self.parameters()), y, grad_y, grad_ladj, sink)


class Inverse(Bijector):
    """Swap the directions of a bijector; ``Inverse(b).inv is b``."""

    def __init__(self, bijector: Bijector):
        super().__init__()
        self.bijector = bijector

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijector.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijector(y, context)

    def forward_shape(self, shape: Sequence[int]) -> Shape:
        return self.bijector.inverse_shape(shape)

    def inverse_shape(self, shape: Sequence[int]) -> Shape:
        return self.bijector.forward_shape(shape)

    @property
    def inv(self) -> Bijector:
        return self.bijector

    @property
    def reads_context(self) -> bool | None:
        return self.bijector.reads_context


class Sequential(Bijector):
    r"""Compose bijectors: ``Sequential(f1, f2)(x) = f2(f1(x))``, log-dets summed.

    Every member receives the same ``context``. Indexing with an int gives a member,
    with a slice a new :class:`Sequential` sharing the members. ``memory`` picks how
    training back-propagates: ``"plain"`` autograd, ``"checkpoint"`` (per-layer gradient
    checkpointing), ``"reversible"`` (no stored activations; inputs rebuilt with the
    exact inverse during backward) or ``"reversible+boundaries"`` (also keeps the input
    of every multiscale level, which bounds reconstruction drift), see
    :mod:`flowkit.reversible`.

    Example:
        >>> flow = flowkit.Sequential(flowkit.Squeeze(2), flowkit.ActNorm(12))
        >>> flow.forward_shape((3, 32, 32))
        (12, 16, 16)
    """

    def __init__(self, *bijectors: Bijector | Iterable[Bijector], memory: MemoryMode = "plain"):
        super().__init__()
        check_memory_mode(memory)
        self.memory = memory  # see flowkit.reversible
        self.accumulate_grads = False  # see flowkit.reversible.set_memory_mode
        if len(bijectors) == 1 and not isinstance(bijectors[0], nn.Module):
            bijectors = tuple(bijectors[0])
        for i, b in enumerate(bijectors):
            if not isinstance(b, Bijector):
                raise TypeError(f"Sequential member {i} is a {type(b).__name__}, not a flowkit.Bijector")
        self.layers = nn.ModuleList(bijectors)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.memory != "plain" and torch.is_grad_enabled() and len(self.layers):
            from .reversible import checkpointed_forward, reversible_forward

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

    def reversible_backward(self, y: Tensor, grad_y: Tensor, grad_ladj: Tensor, sink: GradSink) -> tuple[Tensor, Tensor]:
        from .reversible import chain_backward

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


def interleaved_pair(h: Tensor) -> tuple[Tensor, Tensor]:
    """``(h[:, 0::2], h[:, 1::2])`` as views of one unbind, whose backward is a single
    stack rather than two zero-filled copies of ``h``'s shape (openai's shift / scale
    layout of a network output)."""
    return h.unflatten(1, (-1, 2)).unbind(2)


def check_channels(x: Tensor, channels: int, layer: str, min_dim: int = 2) -> None:
    """Raise :class:`ShapeError` unless ``x`` is ``(batch, channels, *spatial)``."""
    if x.dim() < min_dim or x.dim() > 4:
        raise ShapeError(
            f"{layer} expects a tensor of shape (batch, channels, *spatial) with 0 to 2 spatial "
            f"dims{'' if min_dim == 2 else ' (at least one)'}; got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ShapeError(f"{layer} was built for {channels} channels; got shape {tuple(x.shape)}")


def spatial_size(x: Tensor) -> int:
    """Number of positions per channel: the product of the spatial dims (1 for vectors)."""
    return math.prod(x.shape[2:])


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum every dim but the first: per-sample totals of shape ``(batch,)``."""
    if x.dim() == 1:
        return x.clone()
    return x.sum(dim=tuple(range(1, x.dim())))
