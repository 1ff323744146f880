"""flowkit_image: the reference Glow (Kingma and Dhariwal 2018).

* :mod:`~flowkit_image.glow`: the model; :mod:`~flowkit_image.presets`: its sizes and recipes;
* :mod:`~flowkit_image.data`: image files, CIFAR-10, the embedded sample;
* :mod:`~flowkit_image.run`: train, load, evaluate, sample, reconstruct, interpolate, manipulate;
* :mod:`~flowkit_image.demo`: ``flowkit image demo``; :mod:`~flowkit_image.cli`: ``flowkit image ...``.
"""

from .glow import Glow, GlowConfig, build_glow_bijector
from .presets import PRESETS

__all__ = ["PRESETS", "Glow", "GlowConfig", "build_glow_bijector"]
