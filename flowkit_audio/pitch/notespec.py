r"""The ``notes`` front-end: a note's pitch and its spectrum on a log-frequency axis
relative to that pitch, so that a pitch change is one coordinate of the data.

A log-mel frame encodes pitch as the *positions* of harmonic peaks; adding a latent
offset re-weights the peaks instead of moving them, so a linear latent direction cannot
transpose a note (measured: a MIDI-regression direction in a log-mel flow moved the
tracked pitch of held-out notes by 0.00 semitones at +-4; see docs/audio.md). This
front-end makes transposition a translation of one channel:

.. math::
    p = 69 + 12 \log_2 (f_0 / 440), \qquad
    S_j(t) = \log \max\Big(\sum_k w_{jk}(f_0) |X_k(t)|, \epsilon\Big), \quad
    c_j = f_0 \, 2^{j / B - o}

``p`` is the note's pitch in MIDI units (Praat's tracker, the median over voiced
frames), ``X`` the STFT and ``w_j`` a triangular band around ``c_j`` (``B`` bands per
octave from ``o`` octaves below ``f_0``, at least one STFT bin wide): a constant-Q
spectrum whose axis moves with the note (harmonic ``h`` sits at band ``B(o + log2 h)``
for every note). The features are ``(1 + K, frames)``: ``p`` repeated per frame, then
``S``. :func:`render` puts the bands back at ``f_0 = 440 \cdot 2^{(p - 69)/12}`` for
each frame (linear interpolation in log magnitude at the STFT bins), so changing ``p``
by ``s`` transposes the spectrum by exactly ``s`` semitones, harmonics and noise
together, like a resampling pitch shifter; Griffin-Lim (torchaudio) gives audio.

Example:
    >>> spec = NoteSpectrum()
    >>> note = torch.sin(2 * math.pi * 440 * torch.arange(16000) / 16000)
    >>> features, info = spec.analyse(note)
    >>> features.shape, round(info["pitch"], 1)
    (torch.Size([217, 63]), 69.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowkit.config import SavedConfig
from flowkit.errors import DataError, FlowkitError

__all__ = ["NoteSpectrum", "griffin_lim_notes", "hz_to_midi", "midi_to_hz", "render_magnitude", "spectral_envelope"]

FALLBACK_PITCH = 60.0  # C4, used when the tracker finds no voiced frame


def midi_to_hz(pitch: float | Tensor) -> float | Tensor:
    """MIDI number (fractional allowed) to Hz: ``440 * 2^((p - 69) / 12)``."""
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def hz_to_midi(hz: float) -> float:
    """Hz to a fractional MIDI number."""
    return 69.0 + 12.0 * math.log2(hz / 440.0)


@dataclass(frozen=True)
class NoteSpectrum(SavedConfig):
    """The notes front-end's settings; saved in checkpoints.

    Arguments:
        sample_rate: audio rate in Hz (the notes are 16 kHz).
        n_fft, hop_length: the STFT (Hann window of ``n_fft``; 64 ms resolves the 33 Hz
            spacing of the lowest notes' harmonics).
        bands_per_octave, octaves, octaves_below: the relative constant-Q axis: ``K =
            bands_per_octave * octaves`` bands from ``octaves_below`` octaves under
            ``f_0`` (9 octaves from ``f_0 / 2`` reach 8 kHz for the lowest note, C1).
        log_floor: the magnitude floor before the log.
        pitch_floor, pitch_ceiling: the tracker's search range in Hz.
        formant_lifter: with a positive value, rendering an edit keeps the spectral
            envelope of the unedited clip at its absolute frequencies (the cepstrum's first
            ``formant_lifter`` coefficients: formants, not harmonics), as a
            formant-preserving pitch shifter does; 0 transposes everything (notes).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    bands_per_octave: int = 24
    octaves: int = 9
    octaves_below: int = 1
    log_floor: float = 1e-5
    pitch_floor: float = 25.0
    pitch_ceiling: float = 4200.0
    formant_lifter: int = 0

    def __post_init__(self):
        sizes = {"sample_rate": 384_000, "n_fft": 65_536, "hop_length": 65_536, "bands_per_octave": 256,
                 "octaves": 16}
        bad = [f"{k}={getattr(self, k)!r}" for k, most in sizes.items()
               if not (isinstance(getattr(self, k), int) and 0 < getattr(self, k) <= most)]
        if bad:
            raise FlowkitError(f"invalid note spectrum configuration: {', '.join(bad)} (integers from 1 to "
                               f"{', '.join(f'{k} {v}' for k, v in sizes.items())})")
        if not (self.hop_length <= self.n_fft and 0 <= self.octaves_below < self.octaves):
            raise FlowkitError(f"invalid note spectrum configuration {self}")
        if not 0 < self.pitch_floor < self.pitch_ceiling <= self.sample_rate / 2:
            raise FlowkitError(f"need 0 < pitch_floor < pitch_ceiling <= Nyquist, got {self.pitch_floor}, "
                               f"{self.pitch_ceiling}")
        if not 0 <= self.formant_lifter < self.n_fft // 2:
            raise FlowkitError(f"formant_lifter must be in [0, {self.n_fft // 2}), not {self.formant_lifter}")

    @property
    def bands(self) -> int:
        return self.bands_per_octave * self.octaves

    @property
    def channels(self) -> int:
        """Feature channels: the pitch, then the bands."""
        return 1 + self.bands

    def frames(self, samples: int) -> int:
        return samples // self.hop_length + 1

    def _bin_hz(self) -> Tensor:
        return torch.arange(self.n_fft // 2 + 1, dtype=torch.float64) * self.sample_rate / self.n_fft

    def centres(self, f0: float) -> Tensor:
        """Band centres in Hz for a note at ``f0``."""
        return f0 * 2.0 ** (torch.arange(self.bands, dtype=torch.float64) / self.bands_per_octave - self.octaves_below)

    def filterbank(self, f0: float) -> Tensor:
        """``(K, n_fft // 2 + 1)`` triangular bands around :meth:`centres`, each summing to 1."""
        bins, centres = self._bin_hz(), self.centres(f0)
        half_width = torch.clamp(centres * (2 ** (1 / self.bands_per_octave) - 1), min=float(bins[1]))
        weights = (1 - (bins[None] - centres[:, None]).abs() / half_width[:, None]).clamp_min(0)
        return weights / weights.sum(1, keepdim=True).clamp_min(1e-12)

    def magnitude(self, audio: Tensor) -> Tensor:
        """``|STFT|``, ``(n_fft // 2 + 1, frames)``, float64."""
        window = torch.hann_window(self.n_fft, dtype=torch.float64)
        return torch.stft(audio.double(), self.n_fft, self.hop_length, self.n_fft, window, center=True,
                          return_complex=True).abs()

    def track_pitch(self, audio: Tensor | np.ndarray) -> float:
        """The median F0 over voiced frames, in MIDI units (Praat); NaN when nothing is voiced."""
        from ..features import f0_hz

        hz = f0_hz(np.asarray(audio, dtype=np.float64), self.sample_rate, self.pitch_floor, self.pitch_ceiling)
        return math.nan if math.isnan(hz) else hz_to_midi(hz)

    def analyse(self, audio: Tensor, pitch: float | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Features ``(1 + K, frames)`` of a mono clip ``(T,)``; ``pitch`` (MIDI) skips the
        tracker. Returns the features and ``{"pitch", "tracked"}``."""
        if audio.dim() != 1:
            raise DataError(f"a note must be mono audio of shape (samples,), got {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise DataError("the audio holds NaN or infinite samples")
        tracked = pitch is None
        if pitch is None:
            pitch = self.track_pitch(audio)
            if math.isnan(pitch):
                pitch, tracked = FALLBACK_PITCH, False
        f0 = float(midi_to_hz(pitch))
        bands = self.filterbank(f0) @ self.magnitude(audio)
        bands[self.centres(f0) > self.sample_rate / 2] = 0  # above Nyquist: the floor
        spectrum = torch.log(bands.clamp_min(self.log_floor))
        pitch_row = torch.full((1, spectrum.shape[1]), pitch, dtype=torch.float64)
        return torch.cat([pitch_row, spectrum]).float(), {"pitch": pitch, "tracked": tracked}


def spectral_envelope(log_magnitude: Tensor, lifter: int) -> Tensor:
    r"""The smooth envelope of ``(n_fft // 2 + 1, frames)`` log magnitudes: the real
    cepstrum kept below quefrency ``lifter``, :math:`\mathcal F(w \cdot \mathcal F^{-1} \log |X|)`."""
    n_fft = 2 * (log_magnitude.shape[0] - 1)
    cepstrum = torch.fft.irfft(log_magnitude, n=n_fft, dim=0)
    cepstrum[lifter: n_fft - lifter + 1] = 0
    return torch.fft.rfft(cepstrum, dim=0).real


def render_magnitude(features: Tensor, spec: NoteSpectrum, reference: Tensor | None = None) -> Tensor:
    """Features ``(1 + K, frames)`` to an STFT magnitude ``(n_fft // 2 + 1, frames)``: the
    bands placed at each frame's pitch (linear interpolation of the log magnitude). With
    ``spec.formant_lifter`` and the unedited clip's features as ``reference``, the result
    takes the reference's spectral envelope (:func:`spectral_envelope`)."""
    magnitude = _placed(features, spec)
    if reference is None or spec.formant_lifter == 0:
        return magnitude
    if reference.shape != features.shape:
        raise DataError(f"the reference features {tuple(reference.shape)} must match the edit {tuple(features.shape)}")
    edited, original = magnitude.log(), _placed(reference, spec).log()
    lifter = spec.formant_lifter
    held = edited + spectral_envelope(original, lifter) - spectral_envelope(edited, lifter)
    return held.clamp(max=math.log(spec.n_fft)).exp()


def _placed(features: Tensor, spec: NoteSpectrum) -> Tensor:
    if features.dim() != 2 or features.shape[0] != spec.channels:
        raise DataError(f"note features must be ({spec.channels}, frames), got {tuple(features.shape)}")
    f0 = midi_to_hz(features[0].double())  # (frames,)
    log_bands = features[1:].double()
    position = spec.bands_per_octave * (torch.log2(spec._bin_hz()[1:, None] / f0[None]) + spec.octaves_below)
    low = position.floor().long()
    inside = (low >= 0) & (low < spec.bands - 1)
    low = low.clamp(0, spec.bands - 2)
    frac = position - low
    values = torch.gather(log_bands, 0, low) * (1 - frac) + torch.gather(log_bands, 0, low + 1) * frac
    floor = math.log(spec.log_floor)
    # a full-scale sine peaks at n_fft / 4 in a Hann STFT: cap what a far-out latent decodes to
    values = torch.where(inside, values.clamp(max=math.log(spec.n_fft)), torch.full_like(values, floor))
    dc = torch.full((1, values.shape[1]), floor, dtype=torch.float64)
    return torch.cat([dc, values]).exp()


def griffin_lim_notes(features: Tensor, spec: NoteSpectrum, n_iter: int = 60, seed: int = 0,
                      reference: Tensor | None = None) -> Tensor:
    """Audio ``(samples,)`` from note features: :func:`render_magnitude`, then Griffin-Lim."""
    import torchaudio

    gl = torchaudio.transforms.GriffinLim(n_fft=spec.n_fft, win_length=spec.n_fft, hop_length=spec.hop_length,
                                          power=1.0, n_iter=n_iter, rand_init=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        audio = gl(render_magnitude(features, spec, reference).float())
    return audio[: (features.shape[1] - 1) * spec.hop_length]
