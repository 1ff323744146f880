"""torch.distributed helpers: start from ``torchrun``'s environment, rank queries.

``torchrun --nproc_per_node N your_script.py`` sets ``WORLD_SIZE``, ``RANK`` and the
rendezvous variables; :func:`init_from_env` then joins the group with ``nccl`` on GPUs
and ``gloo`` on CPUs. A plain ``python`` run is a world of one.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: torch.device | None = None) -> bool:
    """Join the process group described by torchrun's variables; ``True`` if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        use_nccl = device is not None and device.type == "cuda"
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_finite(value: torch.Tensor) -> bool:
    """Whether ``value`` is finite on every rank (one small all-reduce when distributed)."""
    flag = torch.isfinite(value).all().to(torch.float32).reshape(1)
    if is_distributed():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on some rank (one small all-reduce when distributed), so
    every rank takes the same decision, e.g. to stop on a signal only one rank received."""
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
