r"""Memory-saving backpropagation through a chain of bijectors.

``"reversible"`` (RevNet / memcnn style): the forward pass keeps no intermediate
activations, only the chain's output. Backward walks the chain from the end: it
reconstructs each layer's input from its output with the exact inverse, re-runs that one
layer with autograd on (:meth:`flowkit.Bijector.recompute`; couplings do both with one
evaluation of their network), and back-propagates through it, log-dets and context
included. Activation memory is then that of one layer, whatever the depth.

``"reversible+boundaries"``: the same, but the forward pass also keeps the input of
every multiscale level (:func:`record_boundary`, called by
:class:`flowkit.FactorOut`), and backward restarts each level from the stored tensor
instead of the reconstructed one. Reconstruction error then accumulates over one level,
not the whole model, for the memory of about one more input. ``GradSink.drift`` holds
how far each reconstruction had drifted.

``"checkpoint"``: plain gradient checkpointing per layer (``torch.utils.checkpoint``),
which stores every layer's input but none of its internals.

By default reversible backward hands the chain's parameter gradients to autograd when
the whole chain is done (so ``torch.autograd.grad`` works). With ``accumulate_grads``
each layer's gradients go into ``.grad`` as soon as that layer is done, firing the
parameters' post-accumulate-grad hooks: with an optimiser that steps in those hooks
(:class:`flowkit.train.InBackwardOptimizer`) and frees the gradient, gradient memory is
that of one layer too.

Switch a model with :func:`flowkit.set_memory_mode` after the data-dependent initialisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

Recompute = Callable[[Tensor, "Tensor | None"], "tuple[list[Tensor], Tensor, Tensor]"]


_BOUNDARIES: ContextVar[dict[nn.Module, Tensor] | None] = ContextVar("flowkit_boundaries", default=None)
_LAST_DRIFT: dict[nn.Module, float] = {}


def record_boundary(module: nn.Module, x: Tensor) -> None:
    """Keep ``x``, the input of ``module``, when a ``"reversible+boundaries"`` forward
    pass is running (a no-op otherwise)."""
    recorder = _BOUNDARIES.get()
    if recorder is not None:
        recorder[module] = x.detach()


class GradSink:
    """Where reversible backward accumulates parameter and context gradients; it also
    carries the stored level boundaries and the drift measured against them."""

    def __init__(self, context: Tensor | None, want_context_grad: bool,
                 boundaries: dict[nn.Module, Tensor] | None = None, accumulate_grads: bool = False):
        self.context = context
        self.accumulate_grads = accumulate_grads
        self.want_context_grad = want_context_grad and context is not None
        self.params: dict[Tensor, Tensor] = {}
        self.context_grad: Tensor | None = None
        self.boundaries = boundaries or {}
        self.drift: dict[nn.Module, float] = {}

    def note_drift(self, module: nn.Module, rebuilt: Tensor, stored: Tensor) -> None:
        self.drift[module] = float((rebuilt - stored).abs().max())

    def context_input(self) -> Tensor | None:
        """The context to feed a recomputation: a fresh leaf when its gradient is wanted."""
        return self.context.detach().requires_grad_(True) if self.want_context_grad else self.context

    def add(self, params: list[Tensor], grads) -> None:
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
        if self.accumulate_grads:
            if pairs:  # into .grad now, through autograd, so post-accumulate-grad hooks fire
                torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])
            return
        for p, g in pairs:
            self.params[p] = g if p not in self.params else self.params[p] + g

    def add_context(self, grad: Tensor | None) -> None:
        if grad is not None:
            self.context_grad = grad if self.context_grad is None else self.context_grad + grad


def vjp(outputs: Sequence[Tensor], cotangents: Sequence[Tensor], inputs: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
    """Gradients of ``sum(<output, cotangent>)`` with respect to ``inputs`` (``None``
    where unused); outputs that do not require grad (a constant log-det) are skipped."""
    pairs = [(o, g) for o, g in zip(outputs, cotangents) if o.requires_grad]
    return torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)


def recompute_backward(recompute: Recompute, params: list[Tensor], y: Tensor, grad_y: Tensor,
                       grad_ladj: Tensor, sink: GradSink) -> tuple[Tensor, Tensor]:
    """Back-propagate through one layer from its output: ``recompute(y, context)``
    rebuilds the input leaves and re-runs the forward pass with autograd on; returns the
    input and its gradient, and adds parameter and context gradients to ``sink``."""
    ctx_in = sink.context_input()
    with torch.enable_grad():
        leaves, out, ladj = recompute(y, ctx_in)
        params = [p for p in params if p.requires_grad]
        inputs = [*leaves, *params] + ([ctx_in] if sink.want_context_grad else [])
        grads = vjp((out, ladj), (grad_y, grad_ladj), inputs)
    leaf_grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    sink.add(params, grads[len(leaves):len(leaves) + len(params)])
    if sink.want_context_grad:
        sink.add_context(grads[-1])
    return _join([t.detach() for t in leaves]), _join(leaf_grads)


def chain_backward(layers, y: Tensor, grad_y: Tensor, grad_ladj: Tensor, sink: GradSink) -> tuple[Tensor, Tensor]:
    """Reversible backward through a chain, last layer first."""
    for layer in reversed(layers):
        y, grad_y = layer.reversible_backward(y, grad_y, grad_ladj, sink)
    return y, grad_y


def _join(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class _ReversibleChain(torch.autograd.Function):
    """Forward without saving activations; backward by inversion and per-layer recomputation."""

    @staticmethod
    def forward(ctx, x: Tensor, context: Tensor | None, layers: nn.ModuleList, boundaries: bool,
                accumulate_grads: bool, *params: Tensor):
        recorder: dict[nn.Module, Tensor] = {}
        token = _BOUNDARIES.set(recorder if boundaries else None)
        try:
            with torch.no_grad():
                ladj = x.new_zeros(x.shape[0])
                y = x
                for layer in layers:
                    y, step = layer(y, context)
                    ladj = ladj + step
        finally:
            _BOUNDARIES.reset(token)
        ctx.layers = layers
        ctx.has_context = context is not None
        ctx.boundary_modules = list(recorder)
        ctx.accumulate_grads = accumulate_grads
        ctx.save_for_backward(y, *([context] if context is not None else []), *recorder.values())
        return y, ladj

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_ladj: Tensor):
        y, *saved = ctx.saved_tensors
        context = saved.pop(0) if ctx.has_context else None
        sink = GradSink(context, ctx.needs_input_grad[1], dict(zip(ctx.boundary_modules, saved)),
                        ctx.accumulate_grads)
        _, grad_x = chain_backward(ctx.layers, y, grad_y, grad_ladj, sink)
        _LAST_DRIFT.clear()
        _LAST_DRIFT.update(sink.drift)
        params = [p for p in ctx.layers.parameters() if p.requires_grad]
        return (grad_x, sink.context_grad, None, None, None, *(sink.params.get(p) for p in params))


def last_drift() -> dict[nn.Module, float]:
    """Per level, the largest absolute difference between the rebuilt and the stored
    input in the last ``"reversible+boundaries"`` backward pass (empty otherwise)."""
    return dict(_LAST_DRIFT)


def reversible_forward(layers: nn.ModuleList, x: Tensor, context: Tensor | None,
                       boundaries: bool = False, accumulate_grads: bool = False) -> tuple[Tensor, Tensor]:
    """Run ``layers`` on ``x`` without storing activations (see module doc); with
    ``boundaries`` keep the inputs of multiscale levels; with ``accumulate_grads`` put
    each layer's parameter gradients into ``.grad`` as soon as backward has them."""
    params = [p for p in layers.parameters() if p.requires_grad]
    return _ReversibleChain.apply(x, context, layers, boundaries, accumulate_grads, *params)


def checkpointed_forward(layers: nn.ModuleList, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """Run ``layers`` with gradient checkpointing per layer."""
    ladj = x.new_zeros(x.shape[0])
    for layer in layers:
        x, step = checkpoint(layer, x, context, use_reentrant=False)
        ladj = ladj + step
    return x, ladj
