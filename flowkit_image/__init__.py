"""flowkit_image: the reference Glow (Kingma and Dhariwal 2018), its training recipe and
the image workflows (sampling, interpolation, attribute manipulation)."""

from .glow import Glow, GlowConfig, build_glow_bijector
from .presets import PRESETS

__all__ = ["PRESETS", "Glow", "GlowConfig", "build_glow_bijector"]
