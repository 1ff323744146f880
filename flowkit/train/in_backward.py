r"""Optimiser steps inside backward: parameters are updated, and their gradients freed,
a few MiB at a time as autograd accumulates them.

A training step normally holds every parameter's gradient at once, between the end of
backward and the optimiser step: memory that grows with the model's depth however the
activations are handled. Stepping from the parameters' post-accumulate-grad hooks
(PyTorch's "optimizer in backward" pattern) holds one bucket of gradients at a time. With
reversible backpropagation, whose activation memory does not grow with depth either
(:func:`flowkit.set_memory_mode` with ``accumulate_grads=True``), a step's
memory is then nearly independent of depth.

The update is the one the optimiser makes in ordinary training (it is the same
optimiser, stepped on part of the parameters at a time), so checkpoints are ordinary
ones. What it cannot do is anything that needs all gradients before the first update:
clipping by the global norm, or the all-reduce of data parallel training.

References:
    | Training deep nets with sublinear memory cost (Chen et al., 2016)
    | https://arxiv.org/abs/1604.06174
    | How to save memory by fusing the optimizer step into the backward pass (PyTorch tutorial)
    | https://pytorch.org/tutorials/intermediate/optimizer_step_in_backward_tutorial.html
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, optim

__all__ = ["InBackwardOptimizer"]


class InBackwardOptimizer:
    """Run ``optimizer`` inside backward, on buckets of gradients as they arrive.

    Each parameter's post-accumulate-grad hook adds its gradient to a bucket; when the
    bucket holds ``bucket_mib`` MiB, the optimiser steps (its multi-tensor step updates
    exactly the parameters that hold a gradient) and the bucket's gradients are freed.
    The optimiser is the one ordinary training uses, with its state, learning-rate
    scheduler and ``state_dict``. A bucket whose gradients are not all finite is not
    applied; the offending parameters' names are listed in :attr:`nonfinite`.

    Call :meth:`begin` before and :meth:`finish` after each backward (``finish`` applies
    the last, partly filled bucket).

    Arguments:
        optimizer: a ``torch.optim`` optimiser built on the parameters.
        named_parameters: ``(name, parameter)`` pairs, e.g. ``model.named_parameters()``.
        bucket_mib: gradient memory gathered before a step; ``0`` steps every parameter
            on its own (least memory, most per-step overhead).

    Example:
        >>> layer = torch.nn.Linear(3, 2)
        >>> stepper = InBackwardOptimizer(torch.optim.SGD(layer.parameters(), lr=0.1), layer.named_parameters())
        >>> before = layer.weight.detach().clone()
        >>> stepper.begin()
        >>> layer(torch.ones(4, 3)).sum().backward()
        >>> stepper.finish()
        >>> layer.weight.grad is None, bool((layer.weight != before).all())
        (True, True)
    """

    def __init__(self, optimizer: optim.Optimizer, named_parameters: Iterable[tuple[str, Tensor]],
                 bucket_mib: float = 4.0):
        self.optimizer = optimizer
        self.names = {p: name for name, p in named_parameters if p.requires_grad}
        self.bucket_bytes = int(bucket_mib * 2**20)
        self.nonfinite: list[str] = []
        self._square_norms: list[Tensor] = []
        self._bucket: list[Tensor] = []
        self._bucket_size = 0
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        self._handles = [p.register_post_accumulate_grad_hook(self._arrived) for p in params]

    def begin(self) -> None:
        """Call before each backward: clears the gradient norm and the non-finite list."""
        self.nonfinite = []
        self._square_norms = []
        self._bucket, self._bucket_size = [], 0

    def finish(self) -> None:
        """Call after each backward: applies the gradients still in the bucket."""
        if self._bucket:
            self._apply()

    def grad_norm(self) -> Tensor:
        """Euclidean norm of all gradients applied since :meth:`begin`."""
        if not self._square_norms:
            return torch.zeros(())
        return torch.stack(self._square_norms).sum().sqrt()

    def remove(self) -> None:
        """Unregister the hooks: gradients accumulate in ``.grad`` again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _arrived(self, p: Tensor) -> None:
        if p.grad is None:  # autograd also runs the hook where a function returned no gradient
            return
        self._bucket.append(p)
        self._bucket_size += p.grad.numel() * p.grad.element_size()
        if self._bucket_size >= self.bucket_bytes:
            self._apply()

    def _apply(self) -> None:
        grads = [p.grad for p in self._bucket]
        square = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]).square().sum()
        if torch.isfinite(square):
            self._square_norms.append(square)
            self.optimizer.step()  # only the bucket's parameters hold a gradient
        else:
            self.nonfinite += [self.names.get(p, "?") for p, g in zip(self._bucket, grads)
                               if not torch.isfinite(g).all()]
        for p in self._bucket:
            p.grad = None
        self._bucket, self._bucket_size = [], 0
