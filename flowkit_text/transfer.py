r"""Label transfer of sentence embeddings, its ablations and its measure against human rewrites.

A labelled text flow moves a sentence to another label by encoding it under its own label
and decoding it under the other (:func:`flowkit.transfer`); a strength :math:`\lambda` scales
that move (:func:`scaled_transfer`, :math:`x + \lambda (T(x) - x)`). Beside it, every table shows:

- the **conditional Gaussian** (:func:`conditional_gaussian`): the same transfer with the
  flow replaced by whitening and one Gaussian per label in the whitened space (per-label
  mean and per-axis scale, closed form). It is itself a flowkit :class:`~flowkit.Flow`, so
  the very same :func:`flowkit.transfer` runs it;
- the **raw-space edit**: :math:`x + \beta (\bar x_{target} - \bar x_{source})`, the
  mean-difference move in the encoder's space;
- the unedited sentence.

**transfer@1** (:func:`transfer_at_1`): for each source sentence with a human rewrite, is
the edited vector's nearest neighbour (cosine), in a pool of all rewrites and all sources
(its own source included), its own rewrite?

**The strength** (:func:`calibrate_strength`) is chosen on labelled sentences only, never
on rewrites: for each source and target label, the smallest strength at which half of the
edited held-out sentences have a sentence of the target label as nearest neighbour among
all held-out sentences, their own source included. transfer@1 asks the same of a rewrite:
to leave its source's neighbourhood for the target's. :class:`LabelProbe` (a logistic
regression) judges edits in the benchmark; it is fitted on other sentences.

References:
    | Delete, Retrieve, Generate: a Simple Approach to Sentiment and Style Transfer (Li et al., 2018)
    | https://arxiv.org/abs/1804.06437

Example:
    >>> x = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    >>> context = torch.nn.functional.one_hot(torch.arange(40) % 2, 2).float()
    >>> gaussian = conditional_gaussian(x, context)
    >>> flowkit.transfer(gaussian, x[:3], context[:1], context[1:2]).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

import flowkit as fk
from flowkit.errors import DataError

from .whitening import Whitening

__all__ = ["STRENGTHS", "LabelProbe", "calibrate_strength", "conditional_gaussian", "raw_label_edit",
           "scaled_transfer", "transfer_at_1"]

STRENGTHS = tuple(0.25 * i for i in range(1, 33))  # 0.25 .. 8
Edit = Callable[[Tensor, str, str, float], Tensor]


@torch.no_grad()
def conditional_gaussian(x: Tensor, context: Tensor, noise_var: float = 0.0) -> fk.Flow:
    """One Gaussian per label as a flow: whitening fitted on all of ``x``, then a
    class-conditional :class:`flowkit.LearnedPrior` set to each label's mean and per-axis
    log-std in the whitened space (maximum likelihood, closed form). ``context`` is one-hot
    ``(N, K)``; rows of zeros (unlabelled) count for the whitening only."""
    if context.dim() != 2 or len(context) != len(x):
        raise DataError(f"{len(x)} embeddings need a one-hot context of shape ({len(x)}, K)")
    whitening = Whitening.fitted(x, noise_var=noise_var)
    z = whitening(x)[0].double()
    noise_in_whitened = noise_var / whitening.eigenvalues  # isotropic noise, per whitened axis
    k = context.shape[1]
    prior = fk.LearnedPrior(x.shape[1], context_channels=k)
    weight = torch.zeros(2 * x.shape[1], k, dtype=torch.float64)
    for label in range(k):
        rows = z[context[:, label] > 0]
        if len(rows) < 2:
            raise DataError(f"label {label} has {len(rows)} sentence(s); a Gaussian needs at least 2")
        weight[0::2, label] = rows.mean(0)
        weight[1::2, label] = 0.5 * (rows.var(0, correction=0) + noise_in_whitened).log()
    prior.context_net.layer.weight.copy_(weight.view_as(prior.context_net.layer.weight))
    return fk.Flow(fk.Sequential(whitening, prior), event_shape=(x.shape[1],)).eval()


@torch.no_grad()
def scaled_transfer(flow: fk.Flow, x: Tensor, source: Tensor, target: Tensor, strength: float,
                    normalise: bool) -> Tensor:
    r"""The transfer's own move, scaled: :math:`x + \lambda\,(T(x) - x)` with
    :math:`T(x) = f^{-1}(f(x; c_s); c_t)` (:func:`flowkit.transfer`), back on the sphere when
    ``normalise``. The flow decides each sentence's move; the strength only scales it. (For
    class contexts this stays finite at any strength, where extrapolating a one-hot context
    sends the coupling networks far outside what they were trained on.)"""
    moved = x + strength * (fk.transfer(flow, x, source, target, batch_size=1024) - x)
    return torch.nn.functional.normalize(moved, dim=1) if normalise else moved


def raw_label_edit(x: Tensor, source_mean: Tensor, target_mean: Tensor, beta: float, normalise: bool) -> Tensor:
    """The raw-space edit ``x + beta (target_mean - source_mean)`` (back on the sphere when ``normalise``)."""
    moved = x + beta * (target_mean - source_mean).to(x.dtype)
    return torch.nn.functional.normalize(moved, dim=1) if normalise else moved


def transfer_at_1(edited: Tensor, own_rewrite: Sequence[int], pool: Tensor) -> float:
    """The share of rows of ``edited`` whose nearest row of ``pool`` (cosine) is row
    ``own_rewrite[i]``; the pool holds every rewrite and every source."""
    e = torch.nn.functional.normalize(edited.double(), dim=1)
    p = torch.nn.functional.normalize(pool.double(), dim=1)
    nearest = (e @ p.T).argmax(1)
    return float((nearest == torch.as_tensor(list(own_rewrite))).double().mean())


class LabelProbe:
    """A multinomial logistic regression (scikit-learn) over encoder-space embeddings: the
    judge of which label an edit carries. Fit it on sentences the edits never saw."""

    def __init__(self, x: Tensor, labels: Sequence[str], seed: int = 0):
        from sklearn.linear_model import LogisticRegression

        self.names = sorted(set(labels))
        if len(self.names) < 2:
            raise DataError("a label probe needs sentences of at least two labels")
        y = np.array([self.names.index(label) for label in labels])
        self.model = LogisticRegression(C=1.0, max_iter=5000, random_state=seed).fit(x.double().numpy(), y)

    def log_probability(self, x: Tensor, label: str) -> np.ndarray:
        """``log P(label | x)`` per row."""
        column = list(self.model.classes_).index(self.names.index(label))
        return self.model.predict_log_proba(x.double().numpy())[:, column]

    def rate(self, x: Tensor, label: str) -> float:
        """The share of rows the probe assigns to ``label``."""
        predicted = self.model.predict(x.double().numpy())
        return float((predicted == self.names.index(label)).mean())


def calibrate_strength(edit: Edit, x_by_label: dict[str, Tensor], strengths: Sequence[float] = STRENGTHS,
                       share: float = 0.5) -> dict[tuple[str, str], float]:
    """For each ordered pair of labels, the smallest of ``strengths`` at which ``share`` of
    the edited held-out sentences of the source label have, as nearest neighbour (cosine)
    among all held-out sentences of every label (their own source included), a sentence of
    the target label: the weakest edit that takes most sentences out of their own
    neighbourhood and among real sentences of the target label (the largest strength where
    none does). ``edit(x, source, target, strength)`` makes the edit."""
    pool = torch.nn.functional.normalize(torch.cat(list(x_by_label.values())).double(), dim=1)
    owner = [name for name, x in x_by_label.items() for _ in range(len(x))]
    chosen = {}
    for source, x in x_by_label.items():
        for target in x_by_label:
            if target == source:
                continue
            chosen[source, target] = strengths[-1]
            for strength in strengths:
                edited = torch.nn.functional.normalize(edit(x, source, target, strength).double(), dim=1)
                nearest = (edited @ pool.T).argmax(1).tolist()
                if sum(owner[i] == target for i in nearest) >= share * len(x):
                    chosen[source, target] = strength
                    break
    return chosen
