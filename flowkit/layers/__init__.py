"""Bijective layers that work on any channel-first tensor ``(B, C, *spatial)``."""

from .actnorm import ActNorm
from .coupling import AdditiveCoupling, AffineCoupling, AffineTransform, Coupling, ElementTransform, ShiftTransform
from .mixing import Invertible1x1, Invertible1x1LU
from .multiscale import FactorOut, LearnedPrior, build_multiscale
from .permute import Permute
from .spline import RQSplineCoupling, RQSplineTransform
from .squeeze import Squeeze

__all__ = ["ActNorm", "AdditiveCoupling", "AffineCoupling", "AffineTransform", "Coupling", "ElementTransform",
           "FactorOut", "Invertible1x1", "Invertible1x1LU", "LearnedPrior", "Permute", "RQSplineCoupling",
           "RQSplineTransform", "ShiftTransform", "Squeeze", "build_multiscale"]
