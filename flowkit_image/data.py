"""Image datasets: an ``.npz`` of uint8 images, a folder of PNG/JPEG files, the
official CIFAR-10 binary files, and the embedded demo set. No pickle is ever loaded.

Every loader returns an :class:`ImageSet`: ``images`` uint8 ``(N, C, H, W)``, ``labels``
int64 ``(N,)`` or ``None``, and ``classes``. Bad files raise :class:`DataError` with
the file named.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowkit.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class ImageSet:
    images: Tensor
    labels: Tensor | None = None
    classes: list[str] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor | slice) -> ImageSet:
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, self.classes)

    def of_class(self, name_or_index: str | int) -> ImageSet:
        """The images of one class, by name or index."""
        if self.labels is None:
            raise DataError("this dataset has no labels")
        index = name_or_index
        if isinstance(name_or_index, str) and not name_or_index.isdigit():
            if not self.classes or name_or_index not in self.classes:
                raise DataError(f"unknown class {name_or_index!r}; classes are {self.classes}")
            index = self.classes.index(name_or_index)
        chosen = self.subset(self.labels == int(index))
        if len(chosen) == 0:
            raise DataError(f"no images of class {name_or_index!r}")
        return chosen


def _as_uint8_nchw(array: np.ndarray, source: str) -> Tensor:
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise DataError(f"{source}: images must be (N, H, W, C) or (N, C, H, W); got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{source}: images must be integer pixels 0..255, got dtype {array.dtype}")
        if array.min() < 0 or array.max() > 255:
            raise DataError(f"{source}: pixel values out of range 0..255 (min {array.min()}, max {array.max()})")
        array = array.astype(np.uint8)
    if array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        array = array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array))


def load_npz(path: str | Path, split: str | None = None) -> ImageSet:
    """An ``.npz`` with ``images`` (or ``{split}_images``) and optional ``labels`` and ``classes``."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy (one array) under an .npz name
            raise DataError(f"{path}: a single .npy array, not an .npz archive; save it with "
                            f"numpy.savez(path, images=array)")
        with archive as data:
            prefix = f"{split}_" if split else ""
            if f"{prefix}images" not in data.files:
                raise DataError(f"{path}: no array named {prefix}images (found {data.files})")
            images = _as_uint8_nchw(data[f"{prefix}images"], str(path))
            labels = None
            if f"{prefix}labels" in data.files:
                labels = torch.from_numpy(data[f"{prefix}labels"].astype(np.int64))
            classes = [str(c) for c in data["classes"]] if "classes" in data.files else None
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise DataError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")
    return ImageSet(images, labels, classes)


def load_cifar_binary(paths: list[Path]) -> ImageSet:
    """The official CIFAR-10 binary files (``data_batch_*.bin``, ``test_batch.bin``)."""
    images, labels = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            raise DataError(f"{path}: not a CIFAR-10 binary file "
                            f"({raw.size} bytes is not a multiple of {CIFAR_RECORD})")
        records = raw.reshape(-1, CIFAR_RECORD)
        if records[:, 0].max() > 9:
            raise DataError(f"{path}: labels above 9, not a CIFAR-10 binary file")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return ImageSet(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)),
                    list(CIFAR_CLASSES))


def load_folder(path: Path) -> ImageSet:
    """PNG/JPEG files, all of one size; sub-folder names become class labels."""
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return load_files(files, path)


def load_files(files: list[Path], path: Path) -> ImageSet:
    """The given image files; their folders relative to ``path`` become class labels."""
    from PIL import Image, UnidentifiedImageError

    arrays, folders = [], []
    for file in files:
        try:
            with Image.open(file) as image:
                arrays.append(np.asarray(image.convert("RGB")))
        except Image.DecompressionBombError as error:
            raise DataError(f"{file}: refused as a possible decompression bomb ({error})") from None
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"{file}: corrupt or unreadable image ({error})") from None
        folders.append(file.parent.relative_to(path).as_posix())
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise DataError(f"{path}: images differ in size {sorted(sizes)[:3]}; resize them to one size first")
    classes = sorted(set(folders))
    labels = torch.tensor([classes.index(f) for f in folders]) if len(classes) > 1 else None
    return ImageSet(_as_uint8_nchw(np.stack(arrays), str(path)), labels, classes if labels is not None else None)


def demo_path() -> Path:
    return Path(str(resources.files("flowkit_image") / "assets" / "cifar10_demo.npz"))


def load_images(source: str | Path | None = None, split: str = "train") -> ImageSet:
    """Load images from ``source``; ``None`` or ``"demo"`` is the embedded CIFAR-10 sample
    (``split`` ``"train"`` or ``"test"``)."""
    if source is None or str(source) == "demo":
        return load_npz(demo_path(), split)
    images = _load_source(Path(source))
    if len(images) == 0:
        raise DataError(f"{source} holds no images")
    return images


def _load_source(path: Path) -> ImageSet:
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_file():
        if path.suffix == ".npz":
            return load_npz(path)
        if path.suffix == ".bin":
            return load_cifar_binary([path])
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return load_files([path], path.parent)
        raise DataError(f"{path}: unknown data format (use .npz, CIFAR-10 .bin or a folder of images)")
    binaries = sorted(path.glob("data_batch_*.bin")) + sorted(path.glob("test_batch.bin"))
    if binaries:
        return load_cifar_binary(binaries)
    return load_folder(path)


def random_hflip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
