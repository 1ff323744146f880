import numpy as np
import pytest
import torch
from PIL import Image

from flowkit.errors import DataError
from flowkit_image.data import load_images, random_hflip


@pytest.fixture
def real(cifar_train):
    return cifar_train[0][:20], cifar_train[1][:20]


def test_npz_in_nhwc_is_read_as_nchw_uint8(tmp_path, real):
    images, labels = real
    np.savez(tmp_path / "d.npz", images=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
    loaded = load_images(tmp_path / "d.npz")
    assert torch.equal(loaded.images, images) and torch.equal(loaded.labels, labels)


def test_image_folder_with_class_subfolders(tmp_path, real):
    images, _ = real
    for i in range(6):
        folder = tmp_path / ("cats" if i % 2 else "dogs")
        folder.mkdir(exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    loaded = load_images(tmp_path)
    assert loaded.images.shape == (6, 3, 32, 32) and loaded.classes == ["cats", "dogs"]
    assert sorted(loaded.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert len(load_images(tmp_path / "cats" / "1.png")) == 1


def test_cifar10_binary_format(tmp_path, real):
    images, labels = real
    records = np.concatenate([labels.numpy().astype(np.uint8)[:, None], images.reshape(20, -1).numpy()], axis=1)
    records.tofile(tmp_path / "data_batch_1.bin")
    loaded = load_images(tmp_path)
    assert torch.equal(loaded.images, images) and torch.equal(loaded.labels, labels)
    assert loaded.classes[0] == "airplane"


def test_embedded_demo_set_is_real_and_split():
    train, test = load_images(None, "train"), load_images("demo", "test")
    assert train.images.shape == (2000, 3, 32, 32) and test.images.shape == (200, 3, 32, 32)
    assert train.images.float().std() > 40 and len(set(train.labels.tolist())) == 10
    assert len(train.of_class("ship")) == 200


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz"),
    (lambda p: np.savez(p, images=np.random.rand(2, 8, 8, 3)), "integer pixels"),
    (lambda p: np.savez(p, images=np.full((2, 8, 8, 3), 300)), "out of range 0..255"),
    (lambda p: np.savez(p, pictures=np.zeros((2, 8, 8, 3), np.uint8)), "no array named images"),
])
def test_bad_npz_files_are_named(tmp_path, write, message):
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(DataError, match=message):
        load_images(path)


def test_corrupt_image_and_bad_binary_are_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png: corrupt"):
        load_images(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(DataError, match="not a CIFAR-10 binary"):
        load_images(tmp_path / "x.bin")
    with pytest.raises(DataError, match="no such file"):
        load_images(tmp_path / "missing.npz")


def test_hflip_flips_about_half(real):
    images, _ = real
    flipped = random_hflip(images, torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(flipped, images)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, images)]
    assert all(s or m for s, m in zip(same, mirrored)) and 3 <= sum(mirrored) <= 17
