"""MNIST from the four canonical IDX `.gz` files in a directory."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from kdistill.data.base import DataBundle, InMemoryDataset

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (magic: two zero bytes, a type code, the number of dimensions)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist_bundle(root: str | Path) -> DataBundle:
    root = Path(root)
    splits = {}
    for split, (images_name, labels_name) in FILES.items():
        images_path, labels_path = root / images_name, root / labels_name
        for path in (images_path, labels_path):
            if not path.exists():
                raise FileNotFoundError(f"MNIST file missing: {path} (expected the four IDX .gz files in {root})")
        images = torch.from_numpy(read_idx(images_path).copy())[:, None]  # uint8 (N, 1, 28, 28)
        labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
        splits[split] = InMemoryDataset(images, labels, [str(c) for c in range(10)])
    return DataBundle(
        name="mnist",
        train=splits["train"],
        test=splits["test"],
        num_classes=10,
        mean=(0.1307,),
        std=(0.3081,),
        image=True,
        classes=[str(c) for c in range(10)],
    )
