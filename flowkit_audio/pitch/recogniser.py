r"""A small instrument recogniser for the notes demo: which instrument a clip sounds like,
so that an edited file can be named for what is heard rather than for what was asked.

Each clip becomes the mean and standard deviation over frames of its 20 MFCCs
(torchaudio; 64 mel bands, 1024 / 256 STFT), standardised with the training clips'
statistics; a clip is named for the nearest class mean (nearest centroid). It needs no
extra dependency, and it is a yardstick, not a state-of-the-art classifier:
``benchmarks/notes.py`` uses scikit-learn's logistic regression on the same kind of
features, and the demo reports this one's accuracy on held-out originals beside its
verdict.

Example:
    >>> rate = 16000
    >>> t = torch.arange(rate) / rate
    >>> low = [torch.sin(2 * torch.pi * f * t) for f in (110.0, 131.0, 147.0)]
    >>> bright = [torch.sign(torch.sin(2 * torch.pi * f * t)) * 0.5 for f in (110.0, 131.0, 147.0)]
    >>> recogniser = InstrumentRecogniser.fit(low + bright, ["sine"] * 3 + ["square"] * 3, rate)
    >>> recogniser.predict([torch.sign(torch.sin(2 * torch.pi * 123.0 * t)) * 0.5])
    ['square']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit.errors import DataError

__all__ = ["InstrumentRecogniser"]


def _statistics(clips: Sequence[Tensor], sample_rate: int) -> Tensor:
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(sample_rate, n_mfcc=20,
                                      melkwargs={"n_fft": 1024, "hop_length": 256, "n_mels": 64})
    rows = []
    for clip in clips:
        if clip.dim() != 1 or not torch.isfinite(clip).all():
            raise DataError(f"the recogniser takes finite mono clips of shape (samples,), got {tuple(clip.shape)}")
        coefficients = mfcc(clip.float())
        rows.append(torch.cat([coefficients.mean(-1), coefficients.std(-1)]))
    return torch.stack(rows)


@dataclass
class InstrumentRecogniser:
    """Nearest class mean of standardised MFCC statistics; build it with :meth:`fit`."""

    sample_rate: int
    names: list[str]
    centroids: Tensor
    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, clips: Sequence[Tensor], labels: Sequence[str], sample_rate: int) -> InstrumentRecogniser:
        if len(clips) != len(labels) or len(set(labels)) < 2:
            raise DataError("the recogniser needs one label per clip and at least two instruments")
        features = _statistics(clips, sample_rate)
        mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
        scaled = (features - mean) / std
        names = sorted(set(labels))
        centroids = torch.stack([scaled[[i for i, label in enumerate(labels) if label == name]].mean(0)
                                 for name in names])
        return cls(sample_rate, names, centroids, mean, std)

    def predict(self, clips: Sequence[Tensor]) -> list[str]:
        scaled = (_statistics(clips, self.sample_rate) - self.mean) / self.std
        return [self.names[i] for i in torch.cdist(scaled, self.centroids).argmin(1).tolist()]

    def accuracy(self, clips: Sequence[Tensor], labels: Sequence[str]) -> float:
        return sum(p == t for p, t in zip(self.predict(clips), labels)) / max(len(labels), 1)
