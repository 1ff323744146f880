r"""The bijector contract: :class:`Bijector` and :class:`Inverse` (chains: :mod:`flowkit.sequential`).

A bijector is an invertible map :math:`y = f(x)` that also returns
:math:`\log |\det J_f(x)|`, one value per sample, summed over the event:

.. code-block:: python

    y, ladj = bijector(x, context)          # forward
    x, ladj_inv = bijector.inverse(y, context)  # ladj_inv == -ladj

Tensors are channel-first, ``(batch, channels, *spatial)`` with zero, one or two
spatial dims; log-dets have shape ``(batch,)`` and the input's dtype and device.

Example:
    >>> import torch, flowkit
    >>> mix = flowkit.Invertible1x1(4)
    >>> y, ladj = mix(torch.randn(8, 4, 16))
    >>> ladj.shape, mix.inv.inv is mix
    (torch.Size([8]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import ShapeError
from .reversible import GradSink, recompute_backward

__all__ = ["Bijector", "Inverse", "Shape", "check_channels", "interleaved_pair", "spatial_size", "sum_except_batch"]

Shape = tuple[int, ...]


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

    def reversible_backward(self, y: Tensor, grad_y: Tensor, grad_ladj: Tensor,
                            sink: GradSink) -> tuple[Tensor, Tensor]:
        """For reversible backprop: from the output ``y`` and the gradients of the loss
        with respect to ``y`` and to the log-det, return the input and its gradient; add
        parameter (and context) gradients to ``sink``. The default recomputes this layer
        with :meth:`recompute`; containers override it to walk their members, so each
        member is recomputed once however deep the nesting.
        """
        return recompute_backward(self.recompute, list(self.parameters()), y, grad_y, grad_ladj, sink)


class Inverse(Bijector):
    """Swap the directions of a bijector; ``Inverse(b).inv is b``.

    Args:
        bijector: the bijector whose inverse this is.
    """

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
