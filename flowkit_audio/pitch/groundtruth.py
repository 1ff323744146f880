r"""Judging a transposition against a real recording: the same instrument's real note
``D`` semitones away is the ground truth of a ``D``-semitone edit.

The distance between two notes is the RMS difference, in dB, of their time-averaged
128-band log-mel spectra with each spectrum's own mean removed:

.. math::
    \bar L_a = \frac{1}{|F_a|} \sum_{t \in F_a} \max\big(10 \log_{10} M |X_a(t)|^2, \; m_a - 80\big), \qquad
    d(a, b) = \operatorname{RMS}_j \big[(\bar L_a - \operatorname{mean} \bar L_a)_j
              - (\bar L_b - \operatorname{mean} \bar L_b)_j\big]

where ``M`` is a 128-band Slaney mel filterbank (librosa) over a 2048-point STFT with hop
256 at 16 kHz, ``m_a`` the note's loudest bin in dB (librosa's ``power_to_db`` floor) and
``F_a`` the frames within 30 dB of ``a``'s loudest frame (the note, not the silence
after it). Removing the mean makes the distance blind to loudness, so it
judges the shape of the spectrum: where the harmonics are and how they are weighted.

Example:
    >>> rate = 16000
    >>> t = torch.arange(2 * rate) / rate
    >>> a4, c5 = (torch.sin(2 * torch.pi * f * t) for f in (440.0, 523.25))
    >>> spectral_distance_db(a4, a4, rate), spectral_distance_db(a4, c5, rate) > 5
    (0.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from flowkit.errors import DataError, FlowkitError

__all__ = ["SPECTRUM", "average_log_mel", "spectral_distance_db", "transposition_pairs"]

SPECTRUM = {"sample_rate": 16000, "n_fft": 2048, "hop_length": 256, "n_mels": 128, "top_db": 30.0, "floor_db": 80.0}


def average_log_mel(audio: Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """The note's time-averaged log-mel spectrum in dB, ``(128,)``, minus its own mean."""
    try:
        import librosa
    except ImportError as error:  # an evaluation tool, not part of the audio extra
        raise FlowkitError("the ground-truth distance needs librosa (pip install librosa)") from error

    if sample_rate != SPECTRUM["sample_rate"]:
        raise DataError(f"the ground-truth distance is defined at {SPECTRUM['sample_rate']} Hz, not {sample_rate}")
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1 or samples.size < SPECTRUM["hop_length"]:
        raise DataError(f"need mono audio of at least {SPECTRUM['hop_length']} samples, got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise DataError("the audio holds NaN or infinite samples")
    power = librosa.feature.melspectrogram(y=samples, sr=sample_rate, n_fft=SPECTRUM["n_fft"],
                                           hop_length=SPECTRUM["hop_length"], n_mels=SPECTRUM["n_mels"], power=2.0)
    db = librosa.power_to_db(power, ref=np.max, top_db=SPECTRUM["floor_db"])
    frame_db = 10 * np.log10(np.maximum(power.sum(0), 1e-10))
    loud = frame_db >= frame_db.max() - SPECTRUM["top_db"]
    average = db[:, loud].mean(1)
    return average - average.mean()


def spectral_distance_db(a: Tensor | np.ndarray, b: Tensor | np.ndarray, sample_rate: int) -> float:
    """RMS difference (dB) of the two notes' mean-removed time-averaged log-mel spectra."""
    difference = average_log_mel(a, sample_rate) - average_log_mel(b, sample_rate)
    return round(float(np.sqrt(np.mean(difference ** 2))), 4)


def transposition_pairs(evaluated: Sequence[tuple[str, int]], recorded: Sequence[tuple[str, int]],
                        max_semitones: int = 4) -> list[tuple[int, int, int]]:
    """``(evaluated index, D, recorded index)`` for every evaluated note ``(instrument,
    midi)`` and every ``D`` in ``-max..max`` (not 0) for which ``recorded`` holds the same
    instrument's note ``midi + D``."""
    where = {note: i for i, note in enumerate(recorded)}
    pairs = []
    for i, (instrument, midi) in enumerate(evaluated):
        for d in range(-max_semitones, max_semitones + 1):
            j = where.get((instrument, midi + d))
            if d != 0 and j is not None:
                pairs.append((i, d, j))
    return pairs

