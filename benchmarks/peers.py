"""Peer models built the way their authors' examples build them, for side-by-side runs."""

from __future__ import annotations


def normflows_glow(levels: int, depth: int, width: int, image_shape=(3, 32, 32), num_classes: int = 10):
    """normflows' multiscale Glow, as in its examples/glow.ipynb (class-conditional base,
    LU 1x1 convolutions, channel split); ``num_classes=0`` gives an unconditional base."""
    import normflows as nf

    channels = image_shape[0]
    q0, merges, flows = [], [], []
    for i in range(levels):
        level = [nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), width, split_mode="channel", scale=True)
                 for _ in range(depth)]
        level.append(nf.flows.Squeeze())
        flows.append(level)
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (channels * 2 ** (levels - i), image_shape[1] // 2 ** (levels - i),
                      image_shape[2] // 2 ** (levels - i))
        else:
            latent = (channels * 2 ** (levels + 1), image_shape[1] // 2**levels, image_shape[2] // 2**levels)
        if num_classes:
            q0.append(nf.distributions.ClassCondDiagGaussian(latent, num_classes))
        else:
            q0.append(nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=bool(num_classes))
