"""The conformance kit must fail loudly on broken bijectors, and pass correct ones."""

import pytest
import torch

from flowkit import ActNorm, AffineCoupling, Bijector, FactorOut
from flowkit.testing import ConformanceError, check_bijector


class Scale(Bijector):
    """y = x * exp(s): correct unless a defect is switched on."""

    def __init__(self, channels: int, defect: str | None = None):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.full((channels,), 0.3))
        self.defect = defect

    def _s(self, x):
        return self.log_scale.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x, context=None):
        y = x * self._s(x).exp()
        ladj = self._s(x).expand_as(x).reshape(x.shape[0], -1).sum(1)
        if self.defect == "sign":
            ladj = -ladj
        if self.defect == "constant":
            ladj = ladj + 1.0
        if self.defect == "leak":
            y = y + 0.1 * x.mean(0, keepdim=True)
        if self.defect == "batch_logdet":
            ladj = ladj.sum()
        return y, ladj

    def inverse(self, y, context=None):
        x = y * (-self._s(y)).exp()
        if self.defect == "not_inverse":
            x = x * 1.01
        if self.defect == "leak":
            x = x - 0.1 * x.mean(0, keepdim=True)
        ladj = -self._s(y).expand_as(y).reshape(y.shape[0], -1).sum(1)
        if self.defect in ("sign", "constant", "batch_logdet"):
            # keep the inverse consistent with the broken forward so only the Jacobian check can catch it
            ladj = -self.forward(x)[1]
        return x, ladj


class HiddenState(Scale):
    """Keeps a tensor outside the state_dict."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.offsets = torch.randn(channels)

    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        return y + self.offsets.view(1, -1, *([1] * (x.dim() - 2))), ladj

    def inverse(self, y, context=None):
        return super().inverse(y - self.offsets.view(1, -1, *([1] * (y.dim() - 2))))


class DeadParameter(Scale):
    def __init__(self, channels: int):
        super().__init__(channels)
        self.unused = torch.nn.Parameter(torch.zeros(3))


class ReinitialisesOnLoad(ActNorm):
    """An ActNorm whose init flag is not persisted: re-initialises after loading."""

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._initialized = False


class ForgetsLogDetGradient(Scale):
    """A hand-written reversible backward that drops the log-det's gradient."""

    def reversible_backward(self, y, grad_y, grad_ladj, sink):
        x = self.inverse(y)[0]
        with torch.enable_grad():
            y_again = x * self._s(x).exp()
            g_s, = torch.autograd.grad(y_again, [self.log_scale], grad_y)
        sink.add([self.log_scale], [g_s])
        return x, grad_y * self._s(y).exp()


class DetachedConditioner(AffineCoupling):
    """The classic silent bug: the conditioner sees ``x_a.detach()``. Inverse, log-det and
    Jacobian determinant are all right; only the gradients of log p(x) are wrong."""

    def _conditioner(self, x_a, context):
        return super()._conditioner(x_a.detach(), context)


class DetachedPrior(FactorOut):
    """A factor-out whose prior network sees ``z1.detach()``."""

    def _prior(self, z1, context):
        return super()._prior(z1.detach(), context)


class DetachedScale(Scale):
    """The parameter's gradient through the output is cut (the log-det keeps one)."""

    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        return x * self._s(x).detach().exp(), ladj


x = torch.randn(4, 3, 5)


def test_correct_bijector_passes():
    check_bijector(Scale(3), x, factory=lambda: Scale(3))


@pytest.mark.parametrize("defect, message", [
    ("sign", "autograd Jacobian"),
    ("constant", "autograd Jacobian"),
    ("not_inverse", "inverse\\(forward\\(x\\)\\) != x"),
    ("leak", "cross-sample leakage"),
    ("batch_logdet", "shape \\(batch,\\)"),
])
def test_kit_catches_defect(defect, message):
    with pytest.raises(ConformanceError, match=message):
        check_bijector(Scale(3, defect), x)


def test_kit_catches_state_outside_state_dict():
    with pytest.raises(ConformanceError, match="outside the state_dict"):
        check_bijector(HiddenState(3), x, factory=lambda: HiddenState(3))


def test_kit_catches_parameter_without_gradient():
    with pytest.raises(ConformanceError, match="no gradient reaches parameters \\['unused'\\]"):
        check_bijector(DeadParameter(3), x)


def test_kit_catches_reinitialisation_after_loading():
    with pytest.raises(ConformanceError, match="train-mode output differs"):
        check_bijector(ReinitialisesOnLoad(3), x * 3 + 1, factory=lambda: ReinitialisesOnLoad(3))


def test_kit_catches_wrong_reversible_gradients():
    with pytest.raises(ConformanceError,
                       match="reversible_backward's gradients differ from autograd's for \\['log_scale'\\]"):
        check_bijector(ForgetsLogDetGradient(3), x)


def test_kit_leaves_the_bijector_untouched():
    b = ActNorm(3)
    check_bijector(b, x, factory=lambda: ActNorm(3))
    assert not b._initialized and torch.equal(b.bias, torch.zeros(3))


def test_kit_needs_a_batch():
    with pytest.raises(ValueError, match="at least 2 samples"):
        check_bijector(Scale(3), torch.randn(1, 3))


@pytest.mark.parametrize("broken", [
    lambda: DetachedConditioner(4, hidden=8, spatial_dims=1),
    lambda: DetachedPrior(4, spatial_dims=1),
])
def test_kit_catches_a_detached_network_input(broken):
    with pytest.raises(ConformanceError, match="w.r.t. the input do not match finite differences"):
        check_bijector(broken(), torch.randn(4, 4, 6), factory=broken)


def test_the_same_layers_without_the_bug_pass():
    for layer in (lambda: AffineCoupling(4, hidden=8, spatial_dims=1), lambda: FactorOut(4, spatial_dims=1)):
        check_bijector(layer(), torch.randn(4, 4, 6), factory=layer)


def test_kit_names_the_parameter_whose_gradient_is_cut():
    with pytest.raises(ConformanceError, match="w.r.t. the parameters \\['log_scale'\\] do not match"):
        check_bijector(DetachedScale(3), x)


class ContextShift(Scale):
    """y = x e^s + mean(context): declares ``reads_context`` as told, whatever it does."""

    def __init__(self, channels: int, declared: bool | None, reads: bool):
        super().__init__(channels)
        self.reads_context = declared
        self.reads = reads

    def _shift(self, x, context):
        if not self.reads or context is None:
            return torch.zeros_like(x)
        return context.mean(1).view(-1, *([1] * (x.dim() - 1))).expand_as(x)

    def forward(self, x, context=None):
        y, ladj = super().forward(x)
        return y + self._shift(x, context), ladj

    def inverse(self, y, context=None):
        return super().inverse(y - self._shift(y, context))


@pytest.mark.parametrize("declared, reads, message", [
    (False, True, "declares reads_context = False, yet changing the context changed its output"),
    (True, False, "declares reads_context = True, yet changing the context left its output unchanged"),
])
def test_kit_catches_a_wrong_reads_context(declared, reads, message):
    with pytest.raises(ConformanceError, match=message):
        check_bijector(ContextShift(3, declared, reads), x, torch.randn(4, 2))


@pytest.mark.parametrize("declared, reads", [(True, True), (False, False), (None, True), (None, False)])
def test_a_true_or_absent_reads_context_passes(declared, reads):
    check_bijector(ContextShift(3, declared, reads), x, torch.randn(4, 2))


def test_flowkit_layers_declare_their_context_use_truthfully():
    context = torch.randn(4, 2)
    check_bijector(AffineCoupling(3, hidden=8, spatial_dims=1, context_channels=2), x, context)
    check_bijector(ActNorm(3), x, context)
    check_bijector(FactorOut(4, spatial_dims=1, context_channels=2), torch.randn(4, 4, 6), context)
