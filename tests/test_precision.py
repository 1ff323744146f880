"""bf16 conditioner networks (flowkit.precision): the networks run in bfloat16, the
bijection's arithmetic in float32, the inverse stays exact on real images, and a device
without bfloat16 falls back to float32 with a warning."""

import pytest
import torch

import flowkit as fk
import flowkit.precision as precision
from flowkit.errors import FlowkitError
from flowkit.nn import GlowConditioner, ZeroConv
from flowkit_image import Glow, GlowConfig

pytestmark = pytest.mark.bf16
NETWORKS = ("GlowConditioner", "ZeroConv")
needs_bf16 = pytest.mark.skipif(not fk.bf16_supported("cpu"), reason="this CPU has no native bfloat16")


def _trained_glow(images: torch.Tensor, steps: int = 15) -> Glow:
    model = Glow(GlowConfig(levels=2, depth=2, width=32))
    g = torch.Generator().manual_seed(0)
    model(model.preprocess(images[:64], g))
    optimiser = torch.optim.Adamax(model.parameters(), lr=2e-3)
    for _ in range(steps):  # weights away from the identity init
        loss = model.bits_per_dim(model.preprocess(images[torch.randint(len(images), (16,), generator=g)], g)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@needs_bf16
def test_only_the_networks_run_in_bfloat16(cifar_train):
    model = _trained_glow(cifar_train[0][:256], steps=2)
    assert fk.set_conditioner_precision(model, "bf16-conditioners") == "bf16-conditioners"
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, (GlowConditioner, ZeroConv, fk.ActNorm, fk.Invertible1x1, fk.Invertible1x1LU)):
            module.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(
                type(m).__name__, set()).add((o[0] if isinstance(o, tuple) else o).dtype))
    x = model.preprocess(cifar_train[0][:4], torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, ladj = model.bijector(x)
    assert seen["GlowConditioner"] == seen["ZeroConv"] == {torch.bfloat16}  # coupling and prior networks
    assert all(dtypes == {torch.float32} for kind, dtypes in seen.items() if kind not in NETWORKS)
    assert z.dtype == ladj.dtype == torch.float32
    fk.set_conditioner_precision(model, "float32")
    seen.clear()
    with torch.no_grad():
        model.bijector(x)
    assert seen["GlowConditioner"] == seen["ZeroConv"] == {torch.float32}


@needs_bf16
def test_the_round_trip_on_real_images_is_near_exact_and_bits_per_dim_barely_move(cifar_train, cifar_val):
    """Near, not float32-exact (see flowkit.precision): on this small Glow (L = 2, K = 2,
    width 32) and 64 validation images, mean error 5e-6, 1.2 % of values above 1e-4, max
    2e-3, 0.13 % of 8-bit pixels changed (float32 conditioners: max 4e-7)."""
    model = _trained_glow(cifar_train[0][:512])
    images = cifar_val[0][:32]
    x = model.preprocess(images, torch.Generator().manual_seed(2))
    with torch.no_grad():
        float32_bpd = float(model.bits_per_dim(x).mean())
        assert (model.decode(model.encode(x)) - x).abs().max() < 1e-5
        fk.set_conditioner_precision(model, "bf16-conditioners")
        decoded = model.decode(model.encode(x))
        error = (decoded - x).abs()
        bf16_bpd = float(model.bits_per_dim(x).mean())
    assert float(error.mean()) < 2e-5 and float(torch.quantile(error.flatten(), 0.95)) < 1e-4
    assert float(error.max()) < 1e-2
    assert float((model.postprocess(decoded) != images).float().mean()) < 0.005
    assert abs(bf16_bpd - float32_bpd) < 0.02
    assert bf16_bpd != float32_bpd  # the networks really ran in another precision


def test_float64_inputs_are_not_cast_so_the_kit_still_applies():
    layer = fk.AffineCoupling(4, hidden=8, spatial_dims=1)
    fk.set_conditioner_precision(layer, "bf16-conditioners", warn=False)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    layer.double()
    y, ladj = layer(x)
    assert y.dtype == ladj.dtype == torch.float64
    assert torch.allclose(layer.inverse(y)[0], x, atol=1e-12)


def test_without_bfloat16_the_option_says_so_and_runs_float32(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device="cpu": False)
    flow = fk.Sequential(fk.AffineCoupling(4, hidden=8, spatial_dims=1),
                         fk.FactorOut(4, spatial_dims=1))
    with pytest.warns(UserWarning, match="no native bfloat16; --precision bf16-conditioners runs float32"):
        assert fk.set_conditioner_precision(flow, "bf16-conditioners") == "float32"
    assert all(getattr(m, "conditioner_dtype", None) is None for m in flow.modules())
    with pytest.raises(FlowkitError, match="precision must be one of float32, bf16-conditioners"):
        fk.set_conditioner_precision(flow, "fp8")


@needs_bf16
def test_training_with_bf16_conditioners_through_the_engine_and_the_cli(tmp_path, capsys):
    import json

    from flowkit.cli import main

    run = tmp_path / "run"
    assert main(["image", "train", "--preset", "tiny", "--out", str(run), "--steps", "3",
                 "--precision", "bf16-conditioners"]) == 0
    saved = json.loads((run / "checkpoint" / "config.json").read_text())
    assert saved["train"]["precision"] == "bf16-conditioners"
    capsys.readouterr()
    assert main(["image", "evaluate", "--checkpoint", str(run), "--precision", "bf16-conditioners", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["precision"] == "bf16-conditioners" and result["bits_per_dim"] > 0
    assert main(["image", "train", "--preset", "tiny", "--out", str(tmp_path / "bad"), "--steps", "1",
                 "--precision", "fp8"]) == 2


@pytest.mark.parametrize("value, forced_off", [("0", True), ("off", True), ("1", False), ("", False)])
def test_the_environment_can_force_bfloat16_off(monkeypatch, value, forced_off):
    """FLOWKIT_BF16=0 makes a machine with bfloat16 behave as one without (make test reruns
    the tests marked bf16 so); any other value leaves the hardware's answer."""
    monkeypatch.setenv(precision.BF16_VARIABLE, value)
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert fk.bf16_supported("cpu") is (False if forced_off else native)
    if forced_off:
        flow = fk.Sequential(fk.AffineCoupling(4, hidden=8, spatial_dims=1))
        assert fk.set_conditioner_precision(flow, "bf16-conditioners", warn=False) == "float32"
