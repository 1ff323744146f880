"""flowkit: normalizing flows for PyTorch across modalities.

Exact likelihoods, exact encode/decode, fast sampling and latent editing, built from
bijectors that work on any channel-first tensor.
"""

from .bijector import Bijector, Inverse
from .distributions import DiagNormal, StandardNormal
from .errors import CheckpointError, DataError, FlowkitError, NonFiniteError, ShapeError
from .flow import Flow
from .frozen import compile_frozen
from .layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    AffineTransform,
    Coupling,
    ElementTransform,
    FactorOut,
    Invertible1x1,
    Invertible1x1LU,
    LearnedPrior,
    Permute,
    RQSplineCoupling,
    RQSplineTransform,
    ShiftTransform,
    Squeeze,
    build_multiscale,
)
from .manipulate import apply_direction, attribute_direction, evaluation_mode, interpolate, regression_direction
from .precision import PRECISIONS, bf16_supported, set_conditioner_precision
from .sequential import Sequential, set_memory_mode
from .transfer import transfer

__version__ = "0.1.0"

__all__ = ["ActNorm", "AdditiveCoupling", "AffineCoupling", "AffineTransform", "Bijector", "CheckpointError",
           "Coupling", "DataError", "DiagNormal", "ElementTransform", "FactorOut", "Flow", "FlowkitError", "Inverse",
           "Invertible1x1", "Invertible1x1LU", "LearnedPrior", "NonFiniteError", "PRECISIONS", "Permute",
           "RQSplineCoupling", "RQSplineTransform", "Sequential", "ShapeError", "ShiftTransform", "Squeeze",
           "StandardNormal", "apply_direction", "attribute_direction", "bf16_supported", "build_multiscale",
           "compile_frozen", "evaluation_mode", "interpolate", "regression_direction", "set_conditioner_precision",
           "set_memory_mode", "transfer"]
