r"""Optimiser steps inside backward: each module's parameters are updated, and their
gradients freed, as soon as autograd has accumulated them.

A training step normally holds every parameter's gradient at once, between the end of
backward and the optimiser step: memory that grows with the model's depth however the
activations are handled. Stepping from the parameters' post-accumulate-grad hooks
(PyTorch's "optimizer in backward" pattern) holds about one layer's gradients at a time. With
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


class _Module:
    """The parameters of one module, stepped together once all their gradients are in."""

    def __init__(self, optimizer: optim.Optimizer, params: list[Tensor]):
        self.optimizer = optimizer
        self.params = params
        self.arrived: list[Tensor] = []


class InBackwardOptimizer:
    """Step ``optimizer``'s rule on each module's parameters inside backward.

    ``optimizer`` keeps owning the state (so its ``state_dict`` is the checkpoint), the
    learning rate its scheduler sets, and the parameter list. One copy of it per module
    (the parameters whose names share a prefix), sharing that state, updates the module as
    soon as autograd has accumulated all its gradients, in one multi-tensor step, and
    frees them. A module whose gradients are not all finite is not updated; the names of
    the offending parameters are listed in :attr:`nonfinite`.

    Call :meth:`begin` before and :meth:`finish` after each backward (``finish`` updates
    modules of which only some parameters got a gradient).

    Arguments:
        optimizer: a ``torch.optim`` optimiser built on the parameters (one group).
        named_parameters: ``(name, parameter)`` pairs, e.g. ``model.named_parameters()``.

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

    def __init__(self, optimizer: optim.Optimizer, named_parameters: Iterable[tuple[str, Tensor]]):
        if len(optimizer.param_groups) != 1:
            raise ValueError("InBackwardOptimizer takes an optimizer with one parameter group")
        self.optimizer = optimizer
        self.names = {p: name for name, p in named_parameters if p.requires_grad}
        self.nonfinite: list[str] = []
        self._square_norms: list[Tensor] = []
        by_owner: dict[str, list[Tensor]] = {}
        for p in optimizer.param_groups[0]["params"]:
            by_owner.setdefault(self.names.get(p, "").rpartition(".")[0], []).append(p)
        self._modules = [_Module(type(optimizer)(params, **optimizer.defaults), params) for params in by_owner.values()]
        self._module_of = {p: module for module in self._modules for p in module.params}
        self._handles = [p.register_post_accumulate_grad_hook(self._arrived) for p in self._module_of]
        self.share_state()

    def share_state(self) -> None:
        """Point every per-module copy at the optimiser's state (again after the
        optimiser's ``load_state_dict``, which replaces it)."""
        for module in self._modules:
            module.optimizer.state = self.optimizer.state

    def begin(self) -> None:
        """Call before each backward: takes the optimiser's current learning rate and
        hyper-parameters, and clears the gradient norm and the non-finite list."""
        settings = [(k, v) for k, v in self.optimizer.param_groups[0].items() if k != "params"]
        for module in self._modules:
            module.optimizer.param_groups[0].update(settings)
            module.arrived = []
        self.nonfinite = []
        self._square_norms = []

    def finish(self) -> None:
        """Call after each backward: updates the modules still waiting for a gradient
        that never came (parameters the loss did not use keep their value)."""
        for module in self._modules:
            if module.arrived:
                self._apply(module)

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
        module = self._module_of[p]
        module.arrived.append(p)
        if len(module.arrived) == len(module.params):
            self._apply(module)

    def _apply(self, module: _Module) -> None:
        grads = [p.grad for p in module.arrived]
        square = torch.stack([g.detach().float().square().sum() for g in grads]).sum()
        if torch.isfinite(square):
            self._square_norms.append(square)
            module.optimizer.step()
        else:
            self.nonfinite += [self.names.get(p, "?") for p, g in zip(module.arrived, grads)
                               if not torch.isfinite(g).all()]
        for p in module.arrived:
            p.grad = None
        module.arrived = []
