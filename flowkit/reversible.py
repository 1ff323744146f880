r"""Memory-saving backpropagation through a chain of bijectors.

``"reversible"`` (RevNet / memcnn style): the forward pass keeps no intermediate
activations, only the chain's output. Backward walks the chain from the end: it
reconstructs each layer's input from its output with the exact inverse, re-runs that one
layer with autograd on (:meth:`flowkit.Bijector.recompute`; couplings do both with one
evaluation of their network), and back-propagates through it, log-dets and context
included. Activation memory is then that of one layer, whatever the depth.

``"checkpoint"``: plain gradient checkpointing per layer (``torch.utils.checkpoint``),
which stores every layer's input but none of its internals.

Switch a model with :func:`set_memory_mode` after the data-dependent initialisation.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

MemoryMode = Literal["plain", "checkpoint", "reversible"]


class _ReversibleChain(torch.autograd.Function):
    """Forward without saving activations; backward by inversion and per-layer recomputation."""

    @staticmethod
    def forward(ctx, x: Tensor, context: Tensor | None, layers: nn.ModuleList, *params: Tensor):
        with torch.no_grad():
            ladj = x.new_zeros(x.shape[0])
            y = x
            for layer in layers:
                y, step = layer(y, context)
                ladj = ladj + step
        ctx.layers = layers
        ctx.has_context = context is not None
        ctx.save_for_backward(y, *([context] if context is not None else []))
        return y, ladj

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_ladj: Tensor):
        y, *saved = ctx.saved_tensors
        context = saved[0] if ctx.has_context else None
        params = [p for p in ctx.layers.parameters() if p.requires_grad]
        param_grads: dict[Tensor, Tensor] = {}
        context_grad = None
        for layer in reversed(ctx.layers):
            want_context_grad = context is not None and ctx.needs_input_grad[1]
            ctx_in = context.detach().requires_grad_(True) if want_context_grad else context
            with torch.enable_grad():
                leaves, out, step = layer.recompute(y, ctx_in)
                layer_params = [p for p in layer.parameters() if p.requires_grad]
                inputs = [*leaves, *layer_params] + ([ctx_in] if want_context_grad else [])
                pairs = [(o, g) for o, g in ((out, grad_y), (step, grad_ladj)) if o.requires_grad]
                grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
            leaf_grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
            grad_y = leaf_grads[0] if len(leaf_grads) == 1 else torch.cat(leaf_grads, dim=1)
            for p, g in zip(layer_params, grads[len(leaves):len(leaves) + len(layer_params)]):
                if g is not None:
                    param_grads[p] = g if p not in param_grads else param_grads[p] + g
            if want_context_grad and grads[-1] is not None:
                context_grad = grads[-1] if context_grad is None else context_grad + grads[-1]
            y = torch.cat([t.detach() for t in leaves], dim=1) if len(leaves) > 1 else leaves[0].detach()
        return (grad_y, context_grad, None, *(param_grads.get(p) for p in params))


def reversible_forward(layers: nn.ModuleList, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """Run ``layers`` on ``x`` without storing activations (see module doc)."""
    params = [p for p in layers.parameters() if p.requires_grad]
    return _ReversibleChain.apply(x, context, layers, *params)


def checkpointed_forward(layers: nn.ModuleList, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """Run ``layers`` with gradient checkpointing per layer."""
    ladj = x.new_zeros(x.shape[0])
    for layer in layers:
        x, step = checkpoint(layer, x, context, use_reentrant=False)
        ladj = ladj + step
    return x, ladj


def set_memory_mode(module: nn.Module, mode: MemoryMode) -> nn.Module:
    """Set the backpropagation mode of every :class:`flowkit.Sequential` inside ``module``."""
    from .bijector import MEMORY_MODES, Sequential

    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {mode!r}")
    for sub in module.modules():
        if isinstance(sub, Sequential):
            sub.memory = mode
    return module
