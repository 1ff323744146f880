"""``check_bijector``: the conformance checks every flowkit bijector passes.

Run it on your own layer (here a core one):

    >>> from flowkit.testing import check_bijector
    >>> make = lambda: flowkit.AffineCoupling(4, hidden=8, spatial_dims=1)
    >>> check_bijector(make(), torch.randn(3, 4, 6), factory=make)

It raises :class:`ConformanceError` listing every property that failed.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..bijector import Bijector


class ConformanceError(AssertionError):
    """A bijector broke the contract; the message lists each failed property."""


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=rtol))


def _err(a: Tensor, b: Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    return f"max abs error {float((a - b).abs().max()):.3g}"


@torch.no_grad()
def _perturb(module: nn.Module, scale: float, generator: torch.Generator) -> None:
    """Move every parameter off its (often zero or identity) initial value."""
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))


def _untracked_tensors(module: nn.Module) -> list[str]:
    """Tensor attributes that are neither parameters nor persistent buffers."""
    names = []
    for prefix, sub in module.named_modules():
        non_persistent = getattr(sub, "_non_persistent_buffers_set", set())
        for key, value in vars(sub).items():
            if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                names.append(f"{prefix}.{key}" if prefix else key)
        names += [f"{prefix}.{key}" if prefix else key for key in non_persistent if not key.startswith("_")]
    return names


def _jacobian_logdet(b: Bijector, x: Tensor, context: Tensor | None) -> Tensor:
    def f(flat: Tensor) -> Tensor:
        return b(flat.view(1, *x.shape), context)[0].reshape(-1)

    jac = torch.autograd.functional.jacobian(f, x.reshape(-1), vectorize=True)
    return torch.linalg.slogdet(jac)[1]


def _slice(context: Tensor | None, i: int) -> Tensor | None:
    return None if context is None else context[i:i + 1]


def check_bijector(bijector: Bijector, example: Tensor, context: Tensor | None = None, *,
                   factory: Callable[[], Bijector] | None = None, perturb: float = 0.05,
                   atol: float = 1e-6, rtol: float = 1e-5, max_jacobian_dim: int = 1024,
                   jacobian_samples: int = 2, seed: int = 0) -> None:
    """Check the bijector contract on ``example`` (a batch of at least 2 samples).

    The checks run on a copy; ``bijector`` is left untouched. The copy's parameters
    are perturbed by ``perturb`` (so zero-initialised networks do something), it is
    run once in training mode (data-dependent initialisation) and moved to float64.
    Then: output shapes, dtype, device and ``forward_shape``; round trips both ways;
    inverse log-det equals minus the forward one; the log-det equals ``log|det|`` of
    the autograd Jacobian; changing one sample changes no other sample's output; a
    declared ``reads_context`` matches what a changed context does; gradients reach
    every parameter; training and evaluation mode agree; a state_dict round trip (into
    ``factory()`` when given) reproduces the outputs; no tensor state lives outside the
    state_dict; and ``example``'s own dtype round trips to ``sqrt(atol)``; ``recompute`` (reversible backprop) rebuilds
    the input and the outputs, and ``reversible_backward`` gives autograd's gradients
    (input, parameters, context); autograd's gradients of the output and the log-det
    with respect to the input, the context and the parameters match finite differences
    (``torch.autograd.gradcheck`` in float64), which catches a detached tensor that the
    Jacobian log-det cannot see (a block-triangular Jacobian's determinant ignores the
    off-diagonal block, where a detached conditioner input hides).

    Raises:
        ConformanceError: listing every failed property.
    """
    if example.dim() < 2 or example.shape[0] < 2:
        raise ValueError(f"check_bijector needs a batch of at least 2 samples, got shape {tuple(example.shape)}")
    failures: list[str] = []

    def expect(ok: bool, message: str) -> None:
        if not ok:
            failures.append(message)

    generator = torch.Generator().manual_seed(seed)
    b = copy.deepcopy(bijector).train()
    _perturb(b, perturb, generator)
    with torch.no_grad():
        b(example, context)  # data-dependent initialisation, after the perturbation as in real training

    with torch.no_grad():
        y_native, ladj_native = b(example, context)
        x_native = b.inverse(y_native, context)[0]
    expect(y_native.dtype == example.dtype, f"forward changed dtype {example.dtype} to {y_native.dtype}")
    expect(y_native.device == example.device and ladj_native.device == example.device, "forward changed device")
    expect(ladj_native.shape == (example.shape[0],),
           f"log-det must have shape (batch,) = ({example.shape[0]},), got {tuple(ladj_native.shape)}")
    expect(ladj_native.dtype == example.dtype, f"log-det dtype {ladj_native.dtype} differs from input {example.dtype}")
    tol = max(atol, rtol) ** 0.5
    expect(_close(x_native, example, tol, tol), f"round trip in {example.dtype}: {_err(x_native, example)}")
    expect(tuple(y_native.shape[1:]) == tuple(b.forward_shape(example.shape[1:])),
           f"forward_shape says {b.forward_shape(example.shape[1:])}, output event is {tuple(y_native.shape[1:])}")
    expect(tuple(b.inverse_shape(y_native.shape[1:])) == tuple(example.shape[1:]),
           f"inverse_shape says {b.inverse_shape(y_native.shape[1:])}, input event is {tuple(example.shape[1:])}")

    if ladj_native.shape != (example.shape[0],):
        _raise_if(failures, bijector)  # later checks index the log-det per sample

    b = b.double().eval()
    x = example.double()
    ctx = None if context is None or not context.is_floating_point() else context.double()
    ctx = context if ctx is None else ctx
    with torch.no_grad():
        y, ladj = b(x, ctx)
        x_back, ladj_back = b.inverse(y, ctx)
        y_again, _ = b(x_back, ctx)
    expect(_close(x_back, x, atol, rtol), f"inverse(forward(x)) != x: {_err(x_back, x)}")
    expect(_close(y_again, y, atol, rtol), f"forward(inverse(y)) != y: {_err(y_again, y)}")
    expect(_close(ladj_back, -ladj, atol, rtol), f"inverse log-det != -forward log-det: {_err(ladj_back, -ladj)}")
    with torch.enable_grad():
        leaves, y_re, ladj_re = b.recompute(y, ctx)
    x_re = torch.cat([t.detach() for t in leaves], dim=1)
    expect(_close(x_re, x_back, atol, rtol) and _close(y_re.detach(), y, atol, rtol)
           and _close(ladj_re.detach(), ladj, atol, rtol),
           "recompute(y) (used by reversible backprop) does not rebuild the input and outputs")
    inv_y, inv_ladj = b.inv(y, ctx)
    expect(_close(inv_y, x_back, atol, rtol) and _close(inv_ladj, ladj_back, atol, rtol),
           ".inv does not run the inverse")

    if x[0].numel() <= max_jacobian_dim:
        for i in range(min(jacobian_samples, x.shape[0])):
            expected = _jacobian_logdet(b, x[i], _slice(ctx, i))
            expect(_close(ladj[i], expected, 1e-5, 1e-5),
                   f"log-det of sample {i} is {float(ladj[i]):.6g}, autograd Jacobian gives {float(expected):.6g}")

    x_changed = x.clone()
    x_changed[0] = x_changed[0] + torch.randn(x[0].shape, generator=generator, dtype=x.dtype)
    with torch.no_grad():
        y_changed, ladj_changed = b(x_changed, ctx)
        x_from_changed, _ = b.inverse(y_changed, ctx)
    expect(_close(y_changed[1:], y[1:], atol, rtol) and _close(ladj_changed[1:], ladj[1:], atol, rtol),
           "changing sample 0 changed the forward output of other samples (cross-sample leakage)")
    expect(_close(x_from_changed[1:], x_back[1:], atol, rtol),
           "changing sample 0 changed the inverse output of other samples (cross-sample leakage)")

    if any(p.requires_grad for p in b.parameters()):
        b.zero_grad()
        y_grad, ladj_grad = b(x, ctx)
        # random weights: a layer initialised on this very batch (ActNorm) makes sum(y) zero, and with it
        # the bias gradient of sum(y**2); a weighted sum has no such blind spot
        weights = torch.randn(y_grad.shape, generator=generator, dtype=y_grad.dtype).to(y_grad.device)
        (y_grad.square().sum() + (weights * y_grad).sum() + ladj_grad.sum()).backward()
        dead = [n for n, p in b.named_parameters()
                if p.requires_grad and p.numel() and (p.grad is None or not p.grad.abs().sum() > 0)]
        expect(not dead, f"no gradient reaches parameters {dead}")

    failures += _context_failures(b, x, ctx, generator, atol, rtol)
    failures += _reversible_failures(b, x, ctx, generator, atol, rtol)
    failures += _gradient_failures(b, x[:2], None if ctx is None else ctx[:2], generator)

    with torch.no_grad():
        y_train, ladj_train = b.train()(x, ctx)
    b.eval()
    expect(_close(y_train, y, atol, rtol) and _close(ladj_train, ladj, atol, rtol),
           "training and evaluation mode give different outputs after initialisation")

    untracked = _untracked_tensors(b)
    expect(not untracked, f"tensor state outside the state_dict: {untracked}")
    failures += _state_dict_failures(b, x, ctx, factory, perturb, generator, atol, rtol)

    _raise_if(failures, bijector)


def _raise_if(failures: list[str], bijector: Bijector) -> None:
    if failures:
        raise ConformanceError(f"{type(bijector).__name__} failed {len(failures)} check(s):\n- "
                               + "\n- ".join(failures))


def _context_failures(b: Bijector, x: Tensor, ctx: Tensor | None, generator: torch.Generator,
                      atol: float, rtol: float) -> list[str]:
    """A declared :attr:`~flowkit.Bijector.reads_context` must match what the layer does
    with a changed (floating-point) context: ``False`` leaves the output alone, ``True``
    changes it (the parameters are perturbed, so a zero-initialised network responds)."""
    declared = getattr(b, "reads_context", None)
    if declared is None or ctx is None or not ctx.is_floating_point():
        return []
    changed = ctx + torch.randn(ctx.shape, generator=generator, dtype=ctx.dtype)
    with torch.no_grad():
        y, ladj = b(x, ctx)
        y_changed, ladj_changed = b(x, changed)
    same = _close(y_changed, y, atol, rtol) and _close(ladj_changed, ladj, atol, rtol)
    if declared is False and not same:
        return ["declares reads_context = False, yet changing the context changed its output"]
    if declared is True and same:
        return ["declares reads_context = True, yet changing the context left its output unchanged"]
    return []


def _reversible_failures(b: Bijector, x: Tensor, ctx: Tensor | None, generator: torch.Generator,
                         atol: float, rtol: float) -> list[str]:
    """``reversible_backward`` from the output must give plain autograd's gradients."""
    from ..reversible import GradSink, vjp

    params = [p for p in b.parameters() if p.requires_grad]
    x_leaf = x.detach().requires_grad_(True)
    want_ctx = ctx is not None and ctx.is_floating_point()
    ctx_leaf = ctx.detach().requires_grad_(True) if want_ctx else ctx
    with torch.enable_grad():
        y, ladj = b(x_leaf, ctx_leaf)
        grad_y = torch.randn(y.shape, generator=generator, dtype=y.dtype)
        grad_ladj = torch.randn(ladj.shape, generator=generator, dtype=ladj.dtype)
        inputs = [x_leaf, *params] + ([ctx_leaf] if want_ctx else [])
        expected = vjp((y, ladj), (grad_y, grad_ladj), inputs)
    expected = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, expected)]
    sink = GradSink(ctx, want_ctx)
    x_back, grad_x = b.reversible_backward(y.detach(), grad_y, grad_ladj, sink)
    got = [grad_x, *(sink.params.get(p, torch.zeros_like(p)) for p in params)]
    if want_ctx:
        got.append(torch.zeros_like(ctx) if sink.context_grad is None else sink.context_grad)
    names = ["the input", *(n for n, p in b.named_parameters() if p.requires_grad)]
    names += ["the context"] if want_ctx else []
    wrong = [name for name, g, e in zip(names, got, expected) if not _close(g, e, atol, rtol)]
    failures = []
    if not _close(x_back, x, atol, rtol):
        failures.append(f"reversible_backward does not rebuild the input: {_err(x_back, x)}")
    if wrong:
        failures.append(f"reversible_backward's gradients differ from autograd's for {wrong}")
    return failures


def _gradcheck_along(run: Callable[[Tensor], tuple[Tensor, Tensor]]) -> bool:
    """gradcheck of ``t -> run(t)``: autograd's derivative along one direction against
    central finite differences (fast mode: random projections of the outputs).

    A network with ReLUs has kinks, and a kink within the finite-difference step of the
    evaluation point makes the two disagree without any bug. A cut path (a detached
    tensor) disagrees everywhere, so the check fails only if it fails at three points
    ``t = 0, 1e-3, -2e-3`` along the direction.
    """
    def along(t: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():  # layers cache derived tensors only with autograd off
            y, ladj = run(t)
        return y + 0 * t, ladj + 0 * t  # an output cut off from t must still count (as a zero derivative)

    for t0 in (0.0, 1e-3, -2e-3):
        t = torch.full((1,), t0, dtype=torch.float64, requires_grad=True)
        if torch.autograd.gradcheck(along, (t,), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True,
                                    raise_exception=False):
            return True
    return False


def _gradient_failures(b: Bijector, x: Tensor, ctx: Tensor | None, generator: torch.Generator) -> list[str]:
    """Output and log-det gradients against finite differences, along random directions of the
    input, the context and all parameters (then each parameter alone, to name the culprits)."""
    from torch.func import functional_call

    params = {n: p.detach() for n, p in b.named_parameters() if p.requires_grad}
    directions = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for n, p in params.items()}
    u_x = torch.randn(x.shape, generator=generator, dtype=x.dtype)

    def with_params(names: list[str]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        return lambda t: functional_call(b, {n: params[n] + t * directions[n] for n in names}, (x, ctx))

    checks = {"the input": lambda t: b(x + t * u_x, ctx)}
    if ctx is not None and ctx.is_floating_point():
        u_c = torch.randn(ctx.shape, generator=generator, dtype=ctx.dtype)
        checks["the context"] = lambda t: b(x, ctx + t * u_c)
    if params:
        checks["the parameters"] = with_params(list(params))
    failures = []
    for what, run in checks.items():
        if _gradcheck_along(run):
            continue
        if what == "the parameters":
            what = f"the parameters {[n for n in params if not _gradcheck_along(with_params([n]))]}"
        failures.append(f"gradients of the output and log-det w.r.t. {what} do not match finite differences "
                        f"(torch.autograd.gradcheck, float64): autograd misses or distorts a path, "
                        f"e.g. a detached tensor")
    return failures


def _state_dict_failures(b: Bijector, x: Tensor, ctx: Tensor | None, factory: Callable[[], Bijector] | None,
                         perturb: float, generator: torch.Generator, atol: float, rtol: float) -> list[str]:
    buffer = io.BytesIO()
    torch.save(b.state_dict(), buffer)
    buffer.seek(0)
    fresh = factory() if factory is not None else copy.deepcopy(b)
    fresh = fresh.double()
    if factory is None:
        _perturb(fresh, perturb, generator)
    try:
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
    except RuntimeError as error:
        return [f"state_dict does not load into a fresh instance: {error}"]
    failures = []
    x = x * 1.5 + 0.25  # other data than the initialisation batch, so a re-initialisation shows
    with torch.no_grad():
        expected = b.eval()(x, ctx)
        for mode in ("eval", "train"):
            got = fresh.train(mode == "train")(x, ctx)
            if not (_close(got[0], expected[0], atol, rtol) and _close(got[1], expected[1], atol, rtol)):
                failures.append(f"after a state_dict round trip the {mode}-mode output differs "
                                f"({_err(got[0], expected[0])}); state kept outside the state_dict, or re-initialised?")
    return failures
