"""Data loaders on real files, and augmentation that is a pure function of (seed, epoch, index)."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile

import numpy as np
import pytest
import torch
from conftest import require_shared
from PIL import Image

from kdistill.data import load_image_folder_bundle, load_mnist_bundle, split_validation
from kdistill.data.image_folder import cache_dir
from kdistill.data.mnist import read_idx
from kdistill.data.transforms import Augment, apply_augmentation


def test_idx_reader_parses_header(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 3, 4) + images.tobytes())
    np.testing.assert_array_equal(read_idx(path), images)


@pytest.mark.data
def test_mnist_from_shared_folder():
    bundle = load_mnist_bundle(require_shared("mnist"))
    assert len(bundle.train) == 60_000 and len(bundle.test) == 10_000
    assert bundle.train.inputs.shape[1:] == (1, 28, 28) and bundle.train.inputs.dtype == torch.uint8
    counts = torch.bincount(bundle.test.labels, minlength=10)
    assert counts.tolist()[:2] == [980, 1135]  # the canonical test-set class counts


def make_tar(tmp_path, per_class: int = 3):
    path = tmp_path / "tiny.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as archive:
        for split in ("train", "test"):
            for label, colour in (("cat", 200), ("airplane", 30)):
                for index in range(per_class):
                    pixels = np.full((8, 8, 3), colour, np.uint8) + rng.integers(0, 5, (8, 8, 3), dtype=np.uint8)
                    buffer = io.BytesIO()
                    Image.fromarray(pixels).save(buffer, format="PNG")
                    info = tarfile.TarInfo(f"./{split}/{label}/{index:04d}.png")
                    info.size = buffer.getbuffer().nbytes
                    buffer.seek(0)
                    archive.addfile(info, buffer)
    return path


def test_image_folder_from_tarball_and_cache(tmp_path):
    path = make_tar(tmp_path)
    first = load_image_folder_bundle(path)
    assert first.classes == ["airplane", "cat"]  # sorted, like torchvision's ImageFolder
    assert first.train.inputs.shape == (6, 3, 8, 8)
    assert first.train.inputs[first.train.labels == 1].float().mean() > 190
    second = load_image_folder_bundle(path)  # from the decoded cache
    assert torch.equal(first.train.inputs, second.train.inputs)
    assert list(cache_dir().glob("image-folder-*.npz"))  # the second load had a decoded cache to read


def test_image_folder_directory_change_invalidates_the_decoded_cache(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "test"):
        for label, colour in (("a", 10), ("b", 240)):
            (root / split / label).mkdir(parents=True)
            Image.fromarray(np.full((4, 4, 3), colour, np.uint8)).save(root / split / label / "0.png")
    first = load_image_folder_bundle(root)
    assert len(first.train) == 2
    Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(root / "train" / "b" / "1.png")
    second = load_image_folder_bundle(root)
    assert len(second.train) == 3  # a stale cache would still say 2


def test_validation_split_is_stratified_and_disjoint(digits):
    bundle, _, _ = digits
    train, val = split_validation(bundle.train, 0.2, seed=0)
    assert len(train) + len(val) == len(bundle.train)
    fractions = torch.bincount(val.labels, minlength=10) / torch.bincount(bundle.train.labels, minlength=10)
    assert torch.all((fractions - 0.2).abs() < 0.03)


def test_augmentation_is_a_function_of_seed_epoch_index():
    augment = Augment(crop_padding=4, horizontal_flip=True, seed=3)
    images = torch.rand(16, 3, 32, 32)
    indices = torch.arange(100, 116)
    a = augment(images, indices, epoch=2)
    b = augment(images.flip(0), indices.flip(0), epoch=2).flip(0)  # other order, same samples
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, augment(images, indices, epoch=3))
    params = augment.parameters(torch.arange(10_000), epoch=0)
    assert params[:, 0].min() == 0 and params[:, 0].max() == 8  # offsets cover [0, 2 * padding]
    assert 0.45 < params[:, 2].float().mean() < 0.55  # half flipped


def test_crop_offset_matches_a_hand_shift():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    # offset (padding, padding) is the identity; (padding+1, padding) shifts rows up by one, zero-filling
    identity = apply_augmentation(image, torch.tensor([[2, 2, 0]]), padding=2)
    torch.testing.assert_close(identity, image)
    shifted = apply_augmentation(image, torch.tensor([[3, 2, 1]]), padding=2)
    expected = torch.cat([image[:, :, 1:], torch.zeros(1, 1, 1, 4)], dim=2).flip(-1)
    torch.testing.assert_close(shifted, expected)
