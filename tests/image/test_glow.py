import math

import pytest
import torch

from flowkit.errors import DataError, FlowkitError, ShapeError
from flowkit.testing import check_bijector
from flowkit_image import Glow, GlowConfig, build_glow_bijector
from flowkit_image.glow import count_parameters


def train_a_little(model: Glow, images: torch.Tensor, steps: int = 10) -> Glow:
    g = torch.Generator().manual_seed(0)
    model(model.preprocess(images[:64], g))
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
    for _ in range(steps):
        x = model.preprocess(images[torch.randint(len(images), (16,), generator=g)], g)
        loss = model.bits_per_dim(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_cifar10_preset_has_the_papers_parameter_count():
    from flowkit_image.presets import preset

    model = Glow(GlowConfig(**preset("cifar10")["glow"]))
    assert abs(count_parameters(model) - 44.6e6) / 44.6e6 < 0.01


@pytest.mark.parametrize("permutation", ["conv", "conv_lu", "shuffle", "reverse"])
@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_tiny_glow_passes_the_conformance_kit(permutation, coupling):
    cfg = GlowConfig(image_shape=(3, 4, 4), levels=2, depth=2, width=8, permutation=permutation, coupling=coupling)
    x = torch.rand(4, 3, 4, 4) - 0.5
    check_bijector(build_glow_bijector(cfg), x, factory=lambda: build_glow_bijector(cfg), atol=1e-6, rtol=1e-5)


def test_class_conditional_glow_passes_the_conformance_kit():
    cfg = GlowConfig(image_shape=(3, 4, 4), levels=2, depth=1, width=8, n_classes=3)
    context = torch.eye(3)[[0, 1, 2, 1]]
    check_bijector(build_glow_bijector(cfg), torch.rand(4, 3, 4, 4) - 0.5, context,
                   factory=lambda: build_glow_bijector(cfg))


def test_every_bordered_convolution_keeps_the_patches_of_the_shape_it_sees():
    """Glow keeps each border channel's patches for its level's spatial size (so
    compile_frozen folds the border's response into a constant); a wrong size would
    silently fall back to computing them on every call."""
    from flowkit.nn import Conv

    model = Glow(GlowConfig(image_shape=(3, 16, 8), levels=3, depth=2, width=8))
    bordered = [m for m in model.modules() if isinstance(m, Conv) and m.edge_bias]
    seen = {}

    def record(conv, args):
        seen.setdefault(conv, tuple(args[0].shape[2:]))

    for conv in bordered:
        conv.register_forward_pre_hook(record)
    with torch.no_grad():
        model.eval()(torch.rand(2, 3, 16, 8) - 0.5)
    assert len(seen) == len(bordered) == 3 * 2 * 2 + 2
    assert all(conv.border_shape == shape for conv, shape in seen.items())
    assert not any("patches" in name for name in model.state_dict())


def test_exact_reconstruction_on_real_images_at_L3_K8(cifar_train, cifar_val):
    model = train_a_little(Glow(GlowConfig(levels=3, depth=8, width=32)), cifar_train[0][:512])
    x = model.preprocess(cifar_val[0][:64], torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model.encode(x)
        x_back = model.decode(z)
    assert z.shape == x.shape
    assert float((x_back - x).abs().max()) < 1e-4
    centred = model.preprocess(cifar_val[0][:64], noise=False) + 0.5 / model.n_bins
    with torch.no_grad():
        assert torch.equal(model.postprocess(model.decode(model.encode(centred))), cifar_val[0][:64])


def test_pixel_bookkeeping_follows_openai():
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=1, depth=1, width=8, n_bits=5))
    pixels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    x = model.preprocess(pixels, torch.Generator().manual_seed(0))
    assert x.min() >= -0.5 and x.max() <= 0.5
    expected_bin = (pixels.long() // 8).float() / 32 - 0.5
    assert ((x - expected_bin) >= 0).all() and ((x - expected_bin) < 1 / 32).all()  # uniform noise in one bin
    torch.testing.assert_close(model.postprocess(x), (pixels // 8 * 8).to(torch.uint8))
    with torch.no_grad():
        log_p = model.log_prob(x)
    torch.testing.assert_close(model.nll_to_bits_per_dim(log_p), model.bits_per_dim(x))
    manual = (-log_p + 192 * math.log(32)) / (192 * math.log(2))
    torch.testing.assert_close(model.bits_per_dim(x), manual)


def test_untrained_glow_is_near_uniform_and_training_helps(cifar_train, cifar_val):
    model = Glow(GlowConfig(levels=2, depth=2, width=16))
    g = torch.Generator().manual_seed(0)
    held_out = model.preprocess(cifar_val[0][:200], g)
    model(model.preprocess(cifar_train[0][:128], g))
    with torch.no_grad():
        before = float(model.eval().bits_per_dim(held_out).mean())
    train_a_little(model.train(), cifar_train[0], steps=60)
    with torch.no_grad():
        after = float(model.bits_per_dim(held_out).mean())
    assert 5.0 < before < 9.0  # after ActNorm init, roughly a per-channel Gaussian
    assert after < before - 0.5


def test_temperature_zero_sample_is_the_prior_mode_and_samples_are_images():
    """T = 0 decodes the latent mode (eps = 0 at every level); T scales the latent std."""
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=2, depth=1, width=8))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model(torch.rand(16, 3, 8, 8, generator=g) - 0.5)  # ActNorm init
        for p in model.parameters():  # learned priors away from N(0, I), so eps = 0 is not x = 0
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.eval()
    mode = model.sample(3, temperature=0.0, generator=g)
    assert mode.abs().max() > 1e-3 and torch.equal(mode[0], mode[1]) and torch.equal(mode[0], mode[2])
    assert model.encode(mode).abs().max() < 1e-4
    latent = model.encode(model.sample(256, temperature=0.5, generator=g))
    assert abs(float(latent.std()) - 0.5) < 0.02
    images = model.postprocess(model.sample(4, temperature=0.7))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)


def test_bad_images_get_clear_errors():
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=1, depth=1, width=8))
    with pytest.raises(DataError, match="uint8"):
        model.preprocess(torch.rand(2, 3, 8, 8))
    with pytest.raises(DataError, match="out of range 0..255"):
        model.preprocess(torch.full((2, 3, 8, 8), 300))
    with pytest.raises(ShapeError, match=r"\(batch, 3, 8, 8\)"):
        model.preprocess(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="divisible"):
        GlowConfig(image_shape=(3, 20, 20), levels=3)



def test_log_prob_refuses_pixels_scaled_another_way():
    model = Glow(GlowConfig(image_shape=(3, 8, 8), levels=1, depth=1, width=8)).eval()
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pixels[0, 0, 0, :2] = torch.tensor([0, 255], dtype=torch.uint8)
    x = model.preprocess(pixels, torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match=r"\[-0.5, 0.5\].*look like \[0, 1\] floats"):
        model.bits_per_dim(x + 0.5)
    with pytest.raises(DataError, match=r"got values from 0 to 255$"):
        model.log_prob(pixels.float())
    with pytest.raises(DataError, match="from -0.6"):
        model.log_prob(x.clamp(-0.5, 0.5).index_fill(0, torch.tensor([1]), -0.6))  # one bad sample is enough
    with pytest.raises(DataError, match="floating point"):
        model.log_prob(pixels)
    with pytest.raises(ShapeError):  # the shape is named before the range
        model.log_prob(torch.full((2, 3, 4, 4), 9.0))
    with torch.no_grad():  # the closed range is allowed, and validate=False switches the check off
        edges = torch.full_like(x, -0.5).index_fill(0, torch.tensor([1]), 0.5)
        assert torch.isfinite(model.log_prob(edges)).all()
        model.validate = False
        assert torch.isfinite(model.log_prob(x + 0.5)).all()

@pytest.mark.parametrize("sizes, message", [({"width": 200_000}, "width=200000"), ({"depth": 100_000}, "depth=100000"),
                                            ({"levels": -1}, "levels=-1"),
                                            ({"depth": 400, "width": 8000}, "billion parameters")])
def test_absurd_sizes_are_refused_before_anything_is_allocated(sizes, message):
    with pytest.raises(FlowkitError, match=message):
        GlowConfig(image_shape=(3, 32, 32), **sizes)
