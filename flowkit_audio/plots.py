"""Spectrogram pictures side by side (matplotlib, written as PNG): log-mel frames, and
notes on a logarithmic frequency axis (where a transposition is a vertical shift)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowkit.files import write_atomically

from .features import MelConfig

__all__ = ["save_note_spectrograms", "save_spectrograms"]


def _fixed_margins(fig, panels: int, shared_y: bool) -> None:
    """Margins in inches for 3.2 x 2.8 inch panels: as ``tight_layout`` places them, without
    the layout pass that costs more than drawing (these pictures are written per file)."""
    width, height = 3.2 * panels, 2.8
    fig.subplots_adjust(left=0.62 / width, right=1 - 0.12 / width, bottom=0.5 / height, top=1 - 0.3 / height,
                        wspace=0.08 if shared_y else 0.22)


def _on_log_frequencies(spec, sample_rate: int, n_fft: int, low_hz: float, high_hz: float, rows: int = 240):
    """The ``(bins, frames)`` STFT magnitudes on ``rows`` log-spaced frequencies from
    ``low_hz`` to ``high_hz`` (linear interpolation between bins)."""
    bin_of = np.geomspace(low_hz, high_hz, rows) * n_fft / sample_rate
    below = np.minimum(np.floor(bin_of).astype(int), spec.shape[0] - 2)
    weight = (bin_of - below)[:, None]
    return spec[below] * (1 - weight) + spec[below + 1] * weight


def save_spectrograms(path: str | Path, mels: list[Tensor], titles: list[str], config: MelConfig) -> Path:
    """One panel per ``(n_mels, frames)`` log-mel spectrogram, on a shared colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    low = min(float(m.min()) for m in mels)
    high = max(float(m.max()) for m in mels)
    fig, axes = plt.subplots(1, len(mels), figsize=(3.2 * len(mels), 2.8), squeeze=False)
    for ax, mel, title in zip(axes[0], mels, titles):
        seconds = mel.shape[-1] * config.hop_length / config.sample_rate
        ax.imshow(mel.detach().cpu().numpy(), origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                  extent=(0, seconds, 0, config.n_mels))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("seconds")
    axes[0][0].set_ylabel("mel bin")
    _fixed_margins(fig, len(mels), shared_y=False)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)
    return path


def save_note_spectrograms(path: str | Path, audios: list[Tensor], titles: list[str], sample_rate: int,
                           n_fft: int = 1024, hop_length: int = 256, low_hz: float = 30.0) -> Path:
    """One panel per clip: the log-magnitude STFT on a log-frequency axis, shared colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    window = torch.hann_window(n_fft)
    specs = [torch.log(torch.stft(a.float().reshape(-1), n_fft, hop_length, window=window, return_complex=True)
                       .abs().clamp_min(1e-5)).numpy() for a in audios]
    top_hz = sample_rate / 2
    specs = [_on_log_frequencies(spec, sample_rate, n_fft, low_hz, top_hz) for spec in specs]
    low, high = min(float(s.min()) for s in specs), max(float(s.max()) for s in specs)
    fig, axes = plt.subplots(1, len(specs), figsize=(3.2 * len(specs), 2.8), squeeze=False, sharey=True)
    decades = [10.0**k for k in range(math.ceil(math.log10(low_hz)), math.floor(math.log10(top_hz)) + 1)]
    for ax, spec, title in zip(axes[0], specs, titles):
        seconds = spec.shape[1] * hop_length / sample_rate
        # an image on log10(Hz) rows: the look of a log axis at a fraction of pcolormesh's drawing time
        ax.imshow(spec, origin="lower", aspect="auto", vmin=max(low, high - 12), vmax=high, cmap="magma",
                  extent=(0, seconds, math.log10(low_hz), math.log10(top_hz)), interpolation="nearest")
        ax.set_yticks([math.log10(d) for d in decades], [f"$10^{{{round(math.log10(d))}}}$" for d in decades])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("seconds")
    axes[0][0].set_ylabel("Hz")
    _fixed_margins(fig, len(specs), shared_y=True)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)
    return path
