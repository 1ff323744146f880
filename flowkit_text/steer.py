r"""Steering sentence embeddings along an attribute, and an honest measurement of it.

The flow-latent edit of an embedding :math:`x` with direction :math:`d` (mean latent of
positive sentences minus mean latent of negative ones) is

.. math:: x' = f^{-1}(f(x) + \alpha d)

and the raw-space edit it is compared with is :math:`x + \beta d_{raw}` with the same
mean-difference direction taken in the encoder's space. Edits are judged by a probe that
never saw the direction: a logistic regression trained on a disjoint labelled split
(:func:`train_probe`). Two edits are compared at equal mean cosine to the originals
(:func:`matching_raw_strength` finds :math:`\beta` for a given cosine), since any edit
flips more sentences if it moves them further. For a unit-norm encoder (all-MiniLM-L6-v2)
the edited embeddings are projected back onto the unit sphere, where the encoder's
embeddings live.

Example:
    >>> x = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    >>> d = torch.randn(8)
    >>> beta = matching_raw_strength(x, d, 0.9, normalise=True)
    >>> round(mean_cosine(x, raw_edit(x, d, beta, normalise=True)), 4)
    0.9
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

import flowkit as fk

__all__ = ["Neighbours", "flow_edit", "matching_raw_strength", "mean_cosine", "nearest", "raw_direction", "raw_edit",
           "train_probe"]


def _project(x: Tensor, normalise: bool) -> Tensor:
    return torch.nn.functional.normalize(x, dim=1) if normalise else x


def raw_direction(positive: Tensor, negative: Tensor) -> Tensor:
    """Mean of ``positive`` minus mean of ``negative``, in the encoder's space."""
    return positive.double().mean(0) - negative.double().mean(0)


def raw_edit(x: Tensor, direction: Tensor, beta: float, normalise: bool) -> Tensor:
    """``x + beta * direction`` (projected onto the sphere when ``normalise``)."""
    return _project(x + beta * direction.to(x.dtype), normalise)


def flow_edit(flow: fk.Flow, x: Tensor, direction: Tensor, alpha: float, normalise: bool) -> Tensor:
    """``decode(encode(x) + alpha * direction)`` (projected onto the sphere when ``normalise``)."""
    return _project(fk.apply_direction(flow, x, direction, alpha), normalise)


def mean_cosine(a: Tensor, b: Tensor) -> float:
    """Mean cosine similarity of corresponding rows."""
    return float(torch.cosine_similarity(a.double(), b.double(), dim=1).mean())


def matching_raw_strength(x: Tensor, direction: Tensor, cosine: float, normalise: bool,
                          iterations: int = 60) -> float:
    """The ``beta >= 0`` whose raw edit has mean cosine ``cosine`` to ``x`` (bisection;
    the cosine falls monotonically as ``beta`` grows)."""
    low, high = 0.0, 1.0
    while mean_cosine(x, raw_edit(x, direction, high, normalise)) > cosine and high < 1e6:
        high *= 2
    for _ in range(iterations):
        middle = (low + high) / 2
        if mean_cosine(x, raw_edit(x, direction, middle, normalise)) > cosine:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def train_probe(positive: Tensor, negative: Tensor, seed: int = 0):
    """A scikit-learn logistic regression telling ``positive`` (1) from ``negative`` (0)
    embeddings; train it on sentences the direction was not computed from."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([positive, negative]).double().numpy()
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return LogisticRegression(C=1.0, max_iter=5000, random_state=seed).fit(x, y)


@dataclass
class Neighbours:
    """The nearest corpus sentences of each query, with their cosine similarities."""

    sentences: list[list[str]]
    cosines: list[list[float]]


def nearest(queries: Tensor, corpus: Tensor, sentences: list[str], k: int = 3) -> Neighbours:
    """The ``k`` corpus sentences most cosine-similar to each query."""
    similarity = torch.nn.functional.normalize(queries.double(), dim=1) @ \
        torch.nn.functional.normalize(corpus.double(), dim=1).T
    values, index = similarity.topk(min(k, len(sentences)), dim=1)
    return Neighbours([[sentences[j] for j in row] for row in index.tolist()],
                      [[round(v, 4) for v in row] for row in values.tolist()])
