r"""Mixed precision for the networks inside a flow: ``"bf16-conditioners"``.

Only the coupling networks and the learned priors' networks run in bfloat16 (autocast);
everything that defines the bijection's arithmetic stays in float32: the element
transforms of the couplings, their log-dets, the 1x1 layers, ActNorm, the priors'
standardisation and the loss. Each direction is still a bijection with an exact log-det
(a coupling is invertible whatever its network computes), so likelihoods and samples are
sound; only float32 inputs are cast (float64 checks stay float64).

The round trip ``decode(encode(x))`` is *not* float32-exact. In the inverse a coupling's
network sees ``y_a``, which the float32 inverses of the later 1x1 and ActNorm layers
reconstructed a few 1e-8 away from the forward ``x_a``; where that straddles a bfloat16
rounding boundary the network's output moves by one bfloat16 step (0.4 %), and the
error spreads through the later convolutions (measured on CIFAR-10 by
``python -m benchmarks.precision``; figures in docs/benchmarks.md, "bf16 conditioner
networks"). Use it for training, evaluation and sampling; keep float32 for encoding,
reconstruction and edits.

On a CPU with AVX-512 BF16 (or a GPU with bfloat16) 3x3 convolutions run faster in
bfloat16 (the same section of docs/benchmarks.md says by how much). Where the device lacks
bfloat16 support the option says so and runs float32. ``FLOWKIT_BF16=0`` in the
environment makes :func:`bf16_supported` answer ``False`` on every device, so a machine
with bfloat16 behaves (and tests) like one without; child processes inherit it.
``make test`` reruns the tests marked ``bf16`` that way.

Example:
    >>> flow = flowkit.Sequential(flowkit.AffineCoupling(4, hidden=8, spatial_dims=1))
    >>> set_conditioner_precision(flow, "bf16-conditioners", warn=False) in PRECISIONS
    True
    >>> x = torch.randn(2, 4, 6)
    >>> y, ladj = flow(x)
    >>> y.dtype, ladj.dtype
    (torch.float32, torch.float32)
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from .errors import FlowkitError

__all__ = ["BF16_VARIABLE", "PRECISIONS", "bf16_supported", "conditioner_autocast", "set_conditioner_precision"]

PRECISIONS = ("float32", "bf16-conditioners")
BF16_VARIABLE = "FLOWKIT_BF16"
_OFF = ("0", "off", "false", "no")


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 convolutions and matrix products run natively on ``device``
    (always ``False`` while the environment sets ``FLOWKIT_BF16=0``)."""
    if os.environ.get(BF16_VARIABLE, "").strip().lower() in _OFF:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def set_conditioner_precision(model: nn.Module, precision: str, device: torch.device | str | None = None,
                              warn: bool = True) -> str:
    """Run every coupling and prior network of ``model`` in ``precision``; returns the
    precision in effect (``"float32"`` where the device lacks bfloat16, with a warning)."""
    if precision not in PRECISIONS:
        raise FlowkitError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    if precision == "bf16-conditioners" and not bf16_supported(device):
        if warn:
            warnings.warn(f"{torch.device(device).type} here has no native bfloat16; "
                          f"--precision bf16-conditioners runs float32", stacklevel=2)
        precision = "float32"
    dtype = torch.bfloat16 if precision == "bf16-conditioners" else None
    for module in model.modules():
        if hasattr(module, "conditioner_dtype"):
            module.conditioner_dtype = dtype
    return precision


def conditioner_autocast(module: nn.Module, x: Tensor):
    """The context a layer runs its network in: bfloat16 autocast when the layer was set
    to it and ``x`` is float32, otherwise nothing."""
    dtype = getattr(module, "conditioner_dtype", None)
    if dtype is None or x.dtype != torch.float32:
        return nullcontext()
    return torch.autocast(x.device.type, dtype=dtype)
