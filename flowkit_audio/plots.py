"""Spectrogram pictures side by side (matplotlib, written as PNG): log-mel frames, and
notes on a logarithmic frequency axis (where a transposition is a vertical shift)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .features import MelConfig

__all__ = ["save_note_spectrograms", "save_spectrograms"]


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
    fig.tight_layout()
    fig.savefig(path, dpi=90)
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
    hz = torch.arange(n_fft // 2 + 1).numpy() * sample_rate / n_fft
    low, high = min(float(s.min()) for s in specs), max(float(s.max()) for s in specs)
    fig, axes = plt.subplots(1, len(specs), figsize=(3.2 * len(specs), 2.8), squeeze=False, sharey=True)
    for ax, spec, title in zip(axes[0], specs, titles):
        seconds = torch.arange(spec.shape[1]).numpy() * hop_length / sample_rate
        ax.pcolormesh(seconds, hz[1:], spec[1:], shading="auto", vmin=max(low, high - 12), vmax=high, cmap="magma")
        ax.set_yscale("log")
        ax.set_ylim(low_hz, sample_rate / 2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("seconds")
    axes[0][0].set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
