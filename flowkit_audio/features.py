r"""The one mel definition shared by training, inference and evaluation, Griffin-Lim,
and F0 measured with an established tracker (Praat, through parselmouth).

.. math:: \text{logmel}(x) = \log \max(M \, |\text{STFT}(x)|, \epsilon)

with torchaudio's ``MelSpectrogram`` (magnitude, Slaney filters, centred frames, as
WaveGlow's Tacotron 2 front-end) and a floor :math:`\epsilon` (WaveGlow: 1e-5). A clip
of ``T`` samples gives ``T // hop + 1`` frames.

Example:
    >>> mel = MelConfig()                      # 8 kHz speech
    >>> log_mel(torch.zeros(1, 8000), mel).shape
    torch.Size([1, 80, 126])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from flowkit.config import SavedConfig
from flowkit.errors import DataError, FlowkitError

__all__ = ["MelConfig", "f0_hz", "griffin_lim", "log_mel", "mel_filterbank", "semitones"]


@dataclass(frozen=True)
class MelConfig(SavedConfig):
    """STFT and mel filterbank of a model; saved in its checkpoint.

    Arguments:
        sample_rate: audio rate in Hz.
        n_fft, win_length, hop_length: the STFT (the hop is the samples per frame).
        n_mels, f_min, f_max: the mel filterbank (``f_max=None``: Nyquist).
        log_floor: the magnitude floor before the log.

    The 8 kHz default resolves the harmonics of speech (64 ms window, 15.6 Hz bins),
    which pitch editing needs; WaveGlow's paper configuration is
    ``MelConfig(22050, 1024, 1024, 256, 80, 0.0, 8000.0)``.
    """

    sample_rate: int = 8000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 64
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-5

    def __post_init__(self):
        sizes = {"sample_rate": (1, 384_000), "n_fft": (1, 65_536), "win_length": (1, 65_536),
                 "hop_length": (1, 65_536), "n_mels": (1, 1024)}
        bad = [f"{k}={getattr(self, k)!r} (an integer from {low} to {high})" for k, (low, high) in sizes.items()
               if not (isinstance(getattr(self, k), int) and low <= getattr(self, k) <= high)]
        if bad:
            raise FlowkitError(f"invalid mel configuration: {', '.join(bad)}")
        if self.win_length > self.n_fft or self.hop_length > self.win_length:
            raise FlowkitError(f"need hop <= win <= n_fft, got {self.hop_length}, {self.win_length}, {self.n_fft}")

    def frames(self, samples: int) -> int:
        """Frames of a clip of ``samples`` samples (centred STFT)."""
        return samples // self.hop_length + 1



@lru_cache(maxsize=8)
def _mel_transform(config: MelConfig):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
        hop_length=config.hop_length, f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels,
        power=1.0, norm="slaney", mel_scale="slaney", center=True, pad_mode="reflect")


def mel_filterbank(config: MelConfig) -> Tensor:
    """``(n_fft // 2 + 1, n_mels)``: the filterbank :func:`log_mel` applies to STFT magnitudes."""
    return _mel_transform(config).mel_scale.fb


def log_mel(audio: Tensor, config: MelConfig) -> Tensor:
    """``(B, T)`` or ``(B, 1, T)`` audio in [-1, 1] to ``(B, n_mels, T // hop + 1)`` log-mel frames."""
    if audio.dim() == 3:
        audio = audio[:, 0]
    if audio.dim() != 2:
        raise DataError(f"audio must be (batch, samples) or (batch, 1, samples), got shape {tuple(audio.shape)}")
    transform = _mel_transform(config).to(audio.device)
    return torch.log(torch.clamp(transform(audio.float()), min=config.log_floor))


def griffin_lim(logmel: Tensor, config: MelConfig, n_iter: int = 60, seed: int = 0) -> Tensor:
    """Invert log-mel frames to audio ``(B, T)``: least-squares inverse of the filterbank,
    then Griffin-Lim phase recovery (torchaudio), ``T = (frames - 1) * hop``."""
    import torchaudio

    inverse = torchaudio.transforms.InverseMelScale(
        n_stft=config.n_fft // 2 + 1, n_mels=config.n_mels, sample_rate=config.sample_rate, f_min=config.f_min,
        f_max=config.f_max, norm="slaney", mel_scale="slaney").to(logmel.device)
    magnitude = inverse(logmel.exp()).clamp_min(0)
    gl = torchaudio.transforms.GriffinLim(n_fft=config.n_fft, win_length=config.win_length,
                                          hop_length=config.hop_length, power=1.0, n_iter=n_iter,
                                          rand_init=False).to(logmel.device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        audio = gl(magnitude)
    return audio[..., : (logmel.shape[-1] - 1) * config.hop_length]


def f0_hz(audio: Tensor | np.ndarray, sample_rate: int, floor: float = 60.0, ceiling: float = 500.0) -> float:
    """Median F0 in Hz over the voiced frames (Praat's autocorrelation tracker); NaN if none is voiced."""
    import parselmouth

    values = np.asarray(audio, dtype=np.float64).reshape(-1)
    if values.size < sample_rate * 3 / floor:  # Praat needs three periods of the floor
        return math.nan
    pitch = parselmouth.Sound(values, sampling_frequency=sample_rate).to_pitch(pitch_floor=floor,
                                                                                pitch_ceiling=ceiling)
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else math.nan


def semitones(f_from: float, f_to: float) -> float:
    """The interval from ``f_from`` to ``f_to`` in semitones (12 per octave)."""
    return 12.0 * math.log2(f_to / f_from)
