r"""Attribute transfer with a conditional flow: encode under one context, decode under another.

A flow :math:`f(\cdot\,; c)` conditioned on an attribute :math:`c` (a class, a sentiment
label, a MIDI pitch, an instrument) maps a sample to a latent that holds what the flow does
*not* explain by :math:`c`. Decoding that latent under another context gives the same sample
with the other attribute:

.. math:: x' = f^{-1}\big(f(x;\ c_s);\ c_s + \lambda\,(c_t - c_s)\big)

With strength :math:`\lambda = 1` this is the transfer itself; other strengths interpolate
(:math:`0 < \lambda < 1`) or extrapolate the context, which is meaningful for continuous
contexts (pitch) and serves as an edit strength for class contexts. :math:`\lambda = 0`,
or equal contexts, give back ``x`` up to rounding (an exact round trip).

Unlike a latent direction (:func:`flowkit.attribute_direction`), the edit needs no
examples at edit time and may differ from sample to sample: the flow decides how the
attribute shows in each one.

References:
    | Guided Image Generation with Conditional Invertible Neural Networks (Ardizzone et al., 2019)
    | https://arxiv.org/abs/1907.02392

Example:
    >>> layers = flowkit.Sequential(flowkit.AffineCoupling(4, hidden=8, spatial_dims=0, context_channels=2),
    ...                             flowkit.LearnedPrior(4, context_channels=2))
    >>> flow = flowkit.Flow(layers, event_shape=(4,))
    >>> _ = torch.nn.init.normal_(layers[1].context_net.layer.weight)  # as after training: classes differ
    >>> x = torch.randn(3, 4)
    >>> cat, dog = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # broadcast over the batch
    >>> transfer(flow, x, cat, dog).shape
    torch.Size([3, 4])
    >>> torch.allclose(transfer(flow, x, cat, cat), x, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import FlowkitError, ShapeError, check_finite
from .flow import Flow
from .manipulate import evaluation_mode

__all__ = ["batched_context", "transfer"]

Context = Tensor | float | int


def batched_context(context: Context, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``context`` for a batch of ``n``: a tensor whose first size is ``n`` as it is, one whose
    first size is 1 repeated ``n`` times, and a number (or 0-d tensor) as an ``(n, 1)`` column
    (a scalar attribute such as MIDI pitch)."""
    if not torch.is_tensor(context):
        if isinstance(context, bool) or not isinstance(context, (int, float)):
            raise ShapeError(f"a context is a tensor or a number, not {type(context).__name__}")
        context = torch.tensor(float(context))
    if context.dim() == 0:
        return context.to(dtype).expand(n, 1)
    if context.shape[0] == n:
        return context
    if context.shape[0] == 1:
        return context.expand(n, *context.shape[1:])
    raise ShapeError(f"a context of shape {tuple(context.shape)} fits neither a batch of {n} (first size {n}) "
                     f"nor every sample (first size 1)")


@torch.no_grad()
def transfer(flow: Flow, x: Tensor | Sequence[Tensor], source: Context | Sequence[Context],
             target: Context | Sequence[Context], strength: float = 1.0,
             batch_size: int = 256) -> Tensor | list[Tensor]:
    r"""Encode ``x`` under ``source`` and decode it under ``source + strength * (target - source)``.

    Arguments:
        flow: a flow with at least one layer that reads a context.
        x: a batch, or a list of clips (event tensors, lengths may differ).
        source, target: the contexts: per sample (first size ``B``), one for every sample
            (first size 1), or a number for a scalar attribute. For a list of clips, also a
            list with one context per clip.
        strength: :math:`\lambda`; 1 is the transfer.
        batch_size: samples encoded and decoded at once.

    Returns:
        The edited batch (or list of clips), in evaluation mode, like ``x``.
    """
    if getattr(flow.bijector, "reads_context", None) is False:
        raise FlowkitError("transfer needs a flow conditioned on a context; no layer of this flow reads one")
    if not math.isfinite(float(strength)):
        raise FlowkitError(f"the transfer strength must be a finite number, not {strength}")
    if not torch.is_tensor(x):
        return [transfer(flow, clip[None], _one(source, i), _one(target, i), strength)[0] for i, clip in enumerate(x)]
    n = x.shape[0]
    source, target = (batched_context(c, n, x.dtype) for c in (source, target))
    if source.shape != target.shape:
        raise ShapeError(f"source and target contexts differ in shape: {tuple(source.shape)} vs {tuple(target.shape)}")
    check_finite(source, "the source context")
    check_finite(target, "the target context")
    goal = source + float(strength) * (target.to(source.dtype) - source)
    with evaluation_mode(flow):
        parts = [flow.decode(flow.encode(x[i:i + batch_size], source[i:i + batch_size]), goal[i:i + batch_size])
                 for i in range(0, n, batch_size)]
    return torch.cat(parts) if parts else x.clone()


def _one(context: Context | Sequence[Context], i: int) -> Context:
    """Clip ``i``'s context from a per-clip list, or the shared one."""
    if isinstance(context, (list, tuple)):
        return context[i]
    if torch.is_tensor(context) and context.dim() > 0 and context.shape[0] != 1:
        return context[i:i + 1]
    return context
