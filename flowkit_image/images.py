"""Writing image grids and strips as PNG (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowkit.errors import FlowkitError
from flowkit.files import write_atomically

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def grid(images: Tensor, ncol: int, pad: int = 2) -> np.ndarray:
    """Tile uint8 ``(N, C, H, W)`` images into an ``(rows * H, ncol * W, C)`` array."""
    n, c, h, w = images.shape
    rows = -(-n // ncol)
    canvas = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = array[i]
    return canvas


def save_grid(images: Tensor, path: str | Path, ncol: int, scale: int = 2) -> Path:
    """Save uint8 ``(N, C, H, W)`` images as one PNG grid, enlarged ``scale`` times."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise FlowkitError(f"{path} is a folder; give an image file name such as samples.png")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise FlowkitError(f"{path}: output images need an extension: {', '.join(sorted(IMAGE_SUFFIXES))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = grid(images.to(torch.uint8), ncol)
    image = Image.fromarray(canvas if canvas.shape[2] == 3 else canvas[..., 0])
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return write_atomically(path, image.save)
