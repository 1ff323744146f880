r"""Compiled inference with frozen weights, never stale.

Inductor's weight freezing (``torch._inductor.config.freezing``) compiles a function of a
module as if its parameters and buffers were constants: what depends on the weights alone
(the 1x1 layers' inverses and log-dets, the weight scales folded into the convolutions,
the border channel's responses where the patches are kept, as Glow keeps them) is
computed once, at compile time, and oneDNN's convolution weights are packed once, which
makes Glow's compiled sampling faster than compiling without freezing (measured in
docs/benchmarks.md, "bf16 conditioner networks").

Two traps come with it, and :func:`compile_frozen` removes both:

- Freezing is read when the function is compiled, which ``torch.compile`` does lazily at
  the first call: patching the config around ``torch.compile(...)`` freezes nothing.
  Here every call runs under the patch (and without autograd: frozen weights are
  constants, so no gradient could reach them).
- Nothing guards the frozen values: after an optimiser step or ``load_state_dict`` a
  frozen function silently keeps computing with the old weights. Here every call
  compares the module's parameters and buffers (their version counters and storage)
  with those it was compiled with; when they changed it warns, resets torch's compile
  caches (``torch.compiler.reset()``: other compiled functions in the process compile
  again on their next call) and compiles again.

Use it where the weights stay fixed for many calls (a sampling or scoring service, an
evaluation over a dataset); while a model trains, compile without freezing.

Example:
    >>> flow = flowkit.Flow(flowkit.ActNorm(3), event_shape=(3,)).eval()
    >>> log_prob = compile_frozen(flow.log_prob, flow)
    >>> x = torch.randn(2, 3)
    >>> torch.allclose(log_prob(x), flow.log_prob(x))
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

__all__ = ["FrozenFunction", "compile_frozen", "weights_key"]


def weights_key(module: nn.Module) -> tuple:
    """What identifies the current values of ``module``'s parameters and buffers: every
    tensor's version counter (bumped by each in-place change), storage, dtype and device."""
    return _key_of(_tensors_of(module))


def _tensors_of(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(), *module.buffers()]


def _key_of(tensors: list[Tensor]) -> tuple:
    return tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)


# Walking a module tree for its tensors costs far more than comparing them, so a
# FrozenFunction keeps the list until any module anywhere registers or replaces a
# parameter, buffer or submodule.
_registrations = 0


def _count_registration(*_: Any) -> None:
    global _registrations
    _registrations += 1


for _register in (register_module_parameter_registration_hook, register_module_buffer_registration_hook,
                  register_module_module_registration_hook):
    _register(_count_registration)


class FrozenFunction:
    """``fn`` compiled with ``module``'s weights frozen; see :func:`compile_frozen`."""

    def __init__(self, fn: Callable, module: nn.Module, **compile_options: Any):
        self.fn = fn
        self.module = module
        self.compile_options = compile_options
        self.compiles = 0
        self._compiled: Callable | None = None
        self._key: tuple | None = None
        self._tensors: list[Tensor] = []
        self._registrations = -1

    def _weights_key(self) -> tuple:
        if self._registrations != _registrations:
            self._tensors = _tensors_of(self.module)
            self._registrations = _registrations
        return _key_of(self._tensors)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch._inductor.config as inductor

        key = self._weights_key()
        if self._compiled is not None and key != self._key:
            warnings.warn(f"the weights of {type(self.module).__name__} changed since {self.fn.__name__} was "
                          "compiled with them frozen: compiling again (torch.compiler.reset())", stacklevel=2)
            torch.compiler.reset()
            self._compiled = None
        compiling = self._compiled is None
        if compiling:
            self._compiled = torch.compile(self.fn, **self.compile_options)
            self.compiles += 1
        with torch.no_grad(), inductor.patch(freezing=True):
            out = self._compiled(*args, **kwargs)
        if compiling:  # taken after the call: a first call may initialise buffers
            self._key = self._weights_key()
        return out


def compile_frozen(fn: Callable, module: nn.Module, **compile_options: Any) -> FrozenFunction:
    """Compile ``fn`` (e.g. ``flow.sample`` or ``flow.log_prob``) for inference with the
    weights of ``module`` frozen, recompiling whenever those weights change.

    Calls run without autograd. ``compile_options`` go to ``torch.compile`` (``mode``,
    ``dynamic``, ...).

    Arguments:
        fn: the function to compile; it reads the weights of ``module``.
        module: the module whose parameters and buffers are frozen into the graph.
    """
    return FrozenFunction(fn, module, **compile_options)
