r"""Latent-space editing with an exact encoder (the Glow blog's recipe).

``direction = mean encode(x_pos) - mean encode(x_neg)``; an edit is
``decode(encode(x) + alpha * direction)``; an interpolation is
``decode(z_a + t (z_b - z_a))``. Everything is batched, runs in evaluation mode (a
fresh ActNorm is never initialised by an edit) and works for any flow.

Variable-length data (audio clips, sequences): pass lists of clips of different lengths
(each an event tensor, no batch dim, with a list of per-clip contexts if the flow is
conditional), and ``average_positions=True`` so the direction is averaged over the
positions (time) and broadcasts along them: shape ``(C, 1)`` for sequences.

Example:
    >>> flow = flowkit.Flow(flowkit.Sequential(flowkit.ActNorm(4), flowkit.Invertible1x1(4)), event_shape=(4, None))
    >>> smiling, neutral, faces = torch.randn(8, 4, 16) + 1, torch.randn(8, 4, 16), torch.randn(2, 4, 16)
    >>> d = attribute_direction(flow, smiling, neutral)
    >>> apply_direction(flow, faces, d, alphas=[-1.0, 0.0, 1.0]).shape
    torch.Size([3, 2, 4, 16])
    >>> high, low = [torch.randn(4, 20) + 1, torch.randn(4, 12)], [torch.randn(4, 30)]  # clips of any length
    >>> d = attribute_direction(flow, high, low, average_positions=True)
    >>> [clip.shape for clip in apply_direction(flow, [torch.randn(4, 9)], d, 1.0)]
    [torch.Size([4, 9])]
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from .errors import ShapeError, check_count, check_finite
from .flow import Flow

__all__ = ["apply_direction", "attribute_direction", "evaluation_mode", "interpolate", "regression_direction"]

Clips = Tensor | Sequence[Tensor]


@contextmanager
def evaluation_mode(module: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``module.eval()``, then restore its training flags."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _groups(x: Clips, context: Clips | None, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Batches of a tensor, or one-clip batches of a list of clips."""
    if torch.is_tensor(x):
        for start in range(0, x.shape[0], batch_size):
            yield x[start:start + batch_size], None if context is None else context[start:start + batch_size]
        return
    for i, clip in enumerate(x):
        yield clip[None], None if context is None else context[i][None]


def _count(x: Clips) -> int:
    return x.shape[0] if torch.is_tensor(x) else len(x)


@torch.no_grad()
def _weighted_latent_sum(flow: Flow, x: Clips, context: Clips | None, batch_size: int, average_positions: bool,
                         weights: Tensor) -> Tensor:
    """``sum_i weights[i] * encode(x_i)`` in float64, in evaluation mode, batch by batch
    (each latent averaged over its positions first if asked)."""
    total, seen = None, 0
    with evaluation_mode(flow):
        for batch, ctx in _groups(x, context, batch_size):
            z = flow.encode(batch, ctx).double()
            if average_positions:
                z = z.mean(dim=tuple(range(2, z.dim())), keepdim=True)
            elif total is not None and z.shape[1:] != total.shape:
                raise ShapeError(f"latents of shapes {tuple(total.shape)} and {tuple(z.shape[1:])} cannot be "
                                 f"combined: clips of different lengths need average_positions=True")
            w = weights[seen:seen + z.shape[0]].view(-1, *([1] * (z.dim() - 1)))
            seen += z.shape[0]
            total = (w * z).sum(0) if total is None else total + (w * z).sum(0)
    return total


def _input_dtype(x: Clips) -> torch.dtype:
    return next((t.dtype for t in ([x] if torch.is_tensor(x) else x) if t.is_floating_point()), torch.float32)


def _encode_mean(flow: Flow, x: Clips, context: Clips | None, batch_size: int, average_positions: bool) -> Tensor:
    n = _count(x)
    if n == 0:
        raise ShapeError("cannot compute a direction from an empty group")
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    return _weighted_latent_sum(flow, x, context, batch_size, average_positions, weights).to(_input_dtype(x))


def attribute_direction(flow: Flow, x_pos: Clips, x_neg: Clips, context_pos: Clips | None = None,
                        context_neg: Clips | None = None, batch_size: int = 256,
                        average_positions: bool = False) -> Tensor:
    """Mean latent of ``x_pos`` minus mean latent of ``x_neg``.

    Arguments:
        x_pos, x_neg: batches, or lists of clips (event tensors, lengths may differ).
        context_pos, context_neg: their contexts (batches or lists), for conditional flows.
        average_positions: average each latent over its positions first, so the direction
            has size 1 along them and applies to data of any length.
    """
    mean_pos = _encode_mean(flow, x_pos, context_pos, batch_size, average_positions)
    return mean_pos - _encode_mean(flow, x_neg, context_neg, batch_size, average_positions)


@torch.no_grad()
def regression_direction(flow: Flow, x: Clips, values: Sequence[float] | Tensor, context: Clips | None = None,
                         batch_size: int = 256, average_positions: bool = False,
                         groups: Sequence[Hashable] | None = None) -> Tensor:
    r"""The least-squares slope of the latent on a scalar label: how far the latent moves
    per unit of the label (e.g. per semitone of MIDI pitch), for directions fitted from
    labels rather than from two groups.

    .. math:: d = \frac{\sum_i (v_i - \bar v)(z_i - \bar z)}{\sum_i (v_i - \bar v)^2}

    so ``apply_direction(flow, x, d, s)`` asks for ``s`` units of change. With ``groups``
    (e.g. the instrument of each note) the means are taken within each group (the
    fixed-effects slope), so a label that differs between groups (violins play higher
    than cellos) does not pull the group difference into the direction.

    Arguments:
        x: a batch, or a list of clips (event tensors, lengths may differ).
        values: one finite label per sample, not all equal.
        context: contexts of ``x`` for conditional flows.
        average_positions: average each latent over its positions first (see
            :func:`attribute_direction`).
        groups: one hashable key per sample; the slope is fitted within groups.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() != _count(x):
        raise ShapeError(f"{v.numel()} labels for {_count(x)} samples")
    if not torch.isfinite(v).all() or v.numel() < 2 or float(v.std()) == 0:
        raise ShapeError("regression needs at least 2 finite labels that are not all equal")
    centred = v - _group_means(v, groups)
    if float(centred.square().sum()) == 0:
        raise ShapeError("regression needs labels that vary within at least one group")
    # sum_i w_i z_i with weights summing to zero in every group is the within-group slope
    centred = centred / centred.square().sum()
    return _weighted_latent_sum(flow, x, context, batch_size, average_positions, centred).to(_input_dtype(x))


def _group_means(v: Tensor, groups: Sequence[Hashable] | None) -> Tensor:
    """Each label's group mean (the overall mean without groups)."""
    if groups is None:
        return v.mean().expand_as(v)
    keys = list(groups)
    if len(keys) != v.numel():
        raise ShapeError(f"{len(keys)} group keys for {v.numel()} labels")
    number = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    index = torch.tensor([number[k] for k in keys])
    sums = torch.zeros(int(index.max()) + 1, dtype=v.dtype).index_add_(0, index, v)
    counts = torch.bincount(index).to(v.dtype)
    return (sums / counts)[index]


@torch.no_grad()
def apply_direction(flow: Flow, x: Clips, direction: Tensor, alphas: float | Sequence[float],
                    context: Clips | None = None) -> Tensor | list[Tensor]:
    """``decode(encode(x) + alpha * direction)``.

    A scalar ``alpha`` gives a batch like ``x``; a sequence of ``A`` alphas gives ``(A, B, ...)``.
    A list of clips gives a list of edited clips (each ``(...)`` or ``(A, ...)``). The
    direction broadcasts against the latent (a position-averaged one along time).
    """
    if not torch.is_tensor(x):
        edited = []
        for i, clip in enumerate(x):
            out = apply_direction(flow, clip[None], direction, alphas, None if context is None else context[i][None])
            edited.append(out.select(out.dim() - clip.dim() - 1, 0))  # drop the batch dim of one
        return edited
    with evaluation_mode(flow):
        z = flow.encode(x, context)
        try:
            fits = torch.broadcast_shapes(direction.shape, z.shape[1:]) == z.shape[1:]
        except RuntimeError:
            fits = False
        if not fits:
            raise ShapeError(f"direction has shape {tuple(direction.shape)}, latents have {tuple(z.shape[1:])}")
        scalar = not isinstance(alphas, Sequence) and not (torch.is_tensor(alphas) and alphas.dim() > 0)
        a = torch.as_tensor([alphas] if scalar else list(alphas), dtype=z.dtype, device=z.device)
        check_finite(direction, "the direction")
        check_finite(a, "alpha")
        edited = z[None] + a.view(-1, *([1] * z.dim())) * direction.to(z.dtype)[None, None]
        out = _decode_stacked(flow, edited, context)
    return out[0] if scalar else out


@torch.no_grad()
def interpolate(flow: Flow, x_a: Tensor, x_b: Tensor, steps: int, context: Tensor | None = None) -> Tensor:
    """Decode ``steps`` evenly spaced points from ``encode(x_a)`` to ``encode(x_b)``: ``(steps, B, ...)``."""
    if x_a.shape != x_b.shape:
        raise ShapeError(f"interpolation ends differ in shape: {tuple(x_a.shape)} vs {tuple(x_b.shape)}")
    steps = check_count(steps, "interpolation steps", least=1)
    with evaluation_mode(flow):
        z_a, z_b = flow.encode(x_a, context), flow.encode(x_b, context)
        t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device).view(-1, *([1] * z_a.dim()))
        return _decode_stacked(flow, z_a[None] + t * (z_b - z_a)[None], context)


def _decode_stacked(flow: Flow, z: Tensor, context: Tensor | None) -> Tensor:
    """Decode ``(A, B, ...)`` latents in one batch."""
    a, b = z.shape[:2]
    ctx = None if context is None else context.repeat(a, *([1] * (context.dim() - 1)))
    x = flow.decode(z.reshape(a * b, *z.shape[2:]), ctx)
    return x.reshape(a, b, *x.shape[1:])
