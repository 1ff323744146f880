r"""Optimiser steps inside backward: each parameter is updated, and its gradient freed, as
soon as autograd has accumulated it.

A training step normally holds every parameter's gradient at once, between the end of
backward and the optimiser step: memory that grows with the model's depth however the
activations are handled. Stepping in each parameter's post-accumulate-grad hook
(PyTorch's "optimizer in backward" pattern) holds one layer's gradients at a time. With
reversible backpropagation, whose activation memory does not grow with depth either
(:func:`flowkit.reversible.set_memory_mode` with ``accumulate_grads=True``), a step's
memory is then nearly independent of depth.

The update is the one the wrapped optimiser would make (same rule, state and learning
rate), so checkpoints are interchangeable with ordinary training. What it cannot do is
anything that needs all gradients before the first update: clipping by the global norm,
or the all-reduce of data parallel training.

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
    """Step ``optimizer``'s rule on each parameter inside backward.

    ``optimizer`` keeps owning the state (so its ``state_dict`` is the checkpoint), the
    learning rate its scheduler sets, and the parameter list; one single-parameter copy
    of it per parameter, sharing that state, makes the per-parameter updates. A gradient
    that is not finite is not applied: the parameter keeps its value and its name is
    listed in :attr:`nonfinite` until the next :meth:`begin`.

    Arguments:
        optimizer: a ``torch.optim`` optimiser built on the parameters (one group).
        named_parameters: ``(name, parameter)`` pairs, e.g. ``model.named_parameters()``.

    Example:
        >>> layer = torch.nn.Linear(3, 2)
        >>> stepper = InBackwardOptimizer(torch.optim.SGD(layer.parameters(), lr=0.1), layer.named_parameters())
        >>> before = layer.weight.detach().clone()
        >>> stepper.begin()
        >>> layer(torch.ones(4, 3)).sum().backward()
        >>> layer.weight.grad is None, bool((layer.weight != before).all())
        (True, True)
    """

    def __init__(self, optimizer: optim.Optimizer, named_parameters: Iterable[tuple[str, Tensor]]):
        if len(optimizer.param_groups) != 1:
            raise ValueError("InBackwardOptimizer takes an optimizer with one parameter group")
        self.optimizer = optimizer
        self.names = {p: name for name, p in named_parameters if p.requires_grad}
        self.nonfinite: list[str] = []
        self._square_norm: list[Tensor] = []
        self._single = {p: type(optimizer)([p], **optimizer.defaults) for p in optimizer.param_groups[0]["params"]}
        self._handles = [p.register_post_accumulate_grad_hook(self._step) for p in self._single]
        self.share_state()

    def share_state(self) -> None:
        """Point every per-parameter copy at the optimiser's state (again after the
        optimiser's ``load_state_dict``, which replaces it)."""
        for single in self._single.values():
            single.state = self.optimizer.state

    def begin(self) -> None:
        """Call before each backward: takes the optimiser's current learning rate and
        hyper-parameters, and clears the gradient norm and the non-finite list."""
        group = self.optimizer.param_groups[0]
        for single in self._single.values():
            single.param_groups[0].update((k, v) for k, v in group.items() if k != "params")
        self.nonfinite = []
        self._square_norm = []

    def grad_norm(self) -> Tensor:
        """Euclidean norm of all gradients applied since :meth:`begin`."""
        if not self._square_norm:
            return torch.zeros(())
        return torch.stack(self._square_norm).sum().sqrt()

    def remove(self) -> None:
        """Unregister the hooks: gradients accumulate in ``.grad`` again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _step(self, p: Tensor) -> None:
        grad = p.grad
        if grad is None:  # autograd also runs the hook where a function returned no gradient
            return
        square = grad.detach().float().square().sum()
        if not torch.isfinite(square):
            self.nonfinite.append(self.names.get(p, "?"))
        else:
            self._square_norm.append(square)
            self._single[p].step()
        p.grad = None
