"""Spectrogram pictures: log-mel frames side by side (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .features import MelConfig

__all__ = ["save_spectrograms"]


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
