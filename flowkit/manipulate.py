r"""Latent-space editing with an exact encoder (the Glow blog's recipe).

``direction = mean encode(x_pos) - mean encode(x_neg)``; an edit is
``decode(encode(x) + alpha * direction)``; an interpolation is
``decode(z_a + t (z_b - z_a))``. Everything is batched and works for any flow.

Example:
    >>> d = attribute_direction(flow, smiling, neutral)
    >>> edited = apply_direction(flow, faces, d, alphas=[-1.0, 0.0, 1.0])  # (3, B, ...)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import ShapeError
from .flow import Flow


@torch.no_grad()
def _encode_mean(flow: Flow, x: Tensor, context: Tensor | None, batch_size: int) -> Tensor:
    if x.shape[0] == 0:
        raise ShapeError("cannot compute a direction from an empty group")
    total = None
    for start in range(0, x.shape[0], batch_size):
        ctx = None if context is None else context[start:start + batch_size]
        z = flow.encode(x[start:start + batch_size], ctx).double().sum(0)
        total = z if total is None else total + z
    return (total / x.shape[0]).to(x.dtype if x.is_floating_point() else torch.float32)


def attribute_direction(flow: Flow, x_pos: Tensor, x_neg: Tensor, context_pos: Tensor | None = None,
                        context_neg: Tensor | None = None, batch_size: int = 256) -> Tensor:
    """Mean latent of ``x_pos`` minus mean latent of ``x_neg`` (one latent-shaped tensor)."""
    return _encode_mean(flow, x_pos, context_pos, batch_size) - _encode_mean(flow, x_neg, context_neg, batch_size)


@torch.no_grad()
def apply_direction(flow: Flow, x: Tensor, direction: Tensor, alphas: float | Sequence[float],
                    context: Tensor | None = None) -> Tensor:
    """``decode(encode(x) + alpha * direction)``.

    A scalar ``alpha`` gives a batch like ``x``; a sequence of ``A`` alphas gives ``(A, B, ...)``.
    """
    z = flow.encode(x, context)
    if direction.shape != z.shape[1:]:
        raise ShapeError(f"direction has shape {tuple(direction.shape)}, latents have {tuple(z.shape[1:])}")
    scalar = not isinstance(alphas, Sequence) and not (torch.is_tensor(alphas) and alphas.dim() > 0)
    a = torch.as_tensor([alphas] if scalar else list(alphas), dtype=z.dtype, device=z.device)
    edited = z[None] + a.view(-1, *([1] * z.dim())) * direction[None, None]
    out = _decode_stacked(flow, edited, context)
    return out[0] if scalar else out


@torch.no_grad()
def interpolate(flow: Flow, x_a: Tensor, x_b: Tensor, steps: int, context: Tensor | None = None) -> Tensor:
    """Decode ``steps`` evenly spaced points from ``encode(x_a)`` to ``encode(x_b)``: ``(steps, B, ...)``."""
    if x_a.shape != x_b.shape:
        raise ShapeError(f"interpolation ends differ in shape: {tuple(x_a.shape)} vs {tuple(x_b.shape)}")
    z_a, z_b = flow.encode(x_a, context), flow.encode(x_b, context)
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device).view(-1, *([1] * z_a.dim()))
    return _decode_stacked(flow, z_a[None] + t * (z_b - z_a)[None], context)


def _decode_stacked(flow: Flow, z: Tensor, context: Tensor | None) -> Tensor:
    """Decode ``(A, B, ...)`` latents in one batch."""
    a, b = z.shape[:2]
    ctx = None if context is None else context.repeat(a, *([1] * (context.dim() - 1)))
    x = flow.decode(z.reshape(a * b, *z.shape[2:]), ctx)
    return x.reshape(a, b, *x.shape[1:])
