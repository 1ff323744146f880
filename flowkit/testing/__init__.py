"""The public conformance kit: run it on every bijector you write.

``check_bijector`` checks the contract; ``strategies`` draws shapes and batches for
hypothesis property tests.
"""

from . import strategies
from .check import ConformanceError, check_bijector
from .memory import peak_saved_bytes

__all__ = ["ConformanceError", "check_bijector", "peak_saved_bytes", "strategies"]
