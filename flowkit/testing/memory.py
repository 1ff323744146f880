"""Activation memory of a training step: the peak of what autograd keeps for backward.

Whole-process RSS mixes in weights, allocator caches and the interpreter;
:func:`peak_saved_bytes` counts only tensors autograd saves for the backward pass
(distinct storages, released when autograd frees them), the memory that grows with depth.

Example:
    >>> flow = flowkit.Flow(flowkit.Sequential(flowkit.ActNorm(4), flowkit.Invertible1x1(4)), event_shape=(4, 8))
    >>> x = torch.randn(16, 4, 8)
    >>> peak_saved_bytes(lambda: flow.log_prob(x).sum().backward()) > 0
    True
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch


def peak_saved_bytes(step: Callable[[], object]) -> int:
    """Run ``step`` (forward and backward) and return the peak bytes saved for backward.

    Leaf tensors that require grad (parameters, inputs) are not counted: they exist
    whether or not autograd saves them.
    """
    counts: dict[int, int] = {}
    sizes: dict[int, int] = {}
    state = {"live": 0, "peak": 0, "active": True}

    def release(key: int) -> None:
        if not state["active"] or key not in counts:
            return
        counts[key] -= 1
        if counts[key] == 0:
            state["live"] -= sizes.pop(key)
            del counts[key]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.is_leaf and t.requires_grad:
            return t
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in counts:
            counts[key] = 0
            sizes[key] = storage.nbytes()
            state["live"] += sizes[key]
            state["peak"] = max(state["peak"], state["live"])
        counts[key] += 1
        weakref.finalize(t, release, key)
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
    finally:
        state["active"] = False
    return state["peak"]
