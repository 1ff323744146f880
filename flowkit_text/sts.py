"""Semantic textual similarity: Spearman correlation (x100) between the cosine similarity
of two sentences' embeddings and the human score, in the raw, whitened and flow-latent
spaces.

Example:
    >>> a, b = torch.randn(50, 8), torch.randn(50, 8)
    >>> scores = torch.cosine_similarity(a, b).numpy() * 5
    >>> round(spearman_x100(a, b, scores), 1)
    100.0
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flowkit.errors import DataError

__all__ = ["spearman_x100"]


def spearman_x100(a: Tensor, b: Tensor, scores: np.ndarray) -> float:
    """Spearman's rank correlation x100 between ``cos(a_i, b_i)`` and ``scores``."""
    from scipy.stats import spearmanr

    if a.shape != b.shape or a.shape[0] != len(scores):
        raise DataError(f"{a.shape[0]} and {b.shape[0]} embeddings for {len(scores)} scores")
    if len(scores) < 3 or np.ptp(scores) == 0:
        raise DataError("STS needs at least 3 pairs with different scores")
    cosine = torch.cosine_similarity(a.double(), b.double(), dim=1).numpy()
    return float(100 * spearmanr(cosine, scores).statistic)
