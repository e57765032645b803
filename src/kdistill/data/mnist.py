"""MNIST from the four canonical IDX files in a directory (gzipped, or already unpacked).

A broken download is common (an HTML error page saved as `.gz`, a transfer cut short), so every
way the files can be wrong is an `UnreadableFile` naming the file and what it is not, rather than
a numpy reshape error.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from kdistill.data.base import DataBundle, InMemoryDataset
from kdistill.errors import UnreadableFile
from kdistill.file_checks import MissingFile, described, read_head

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = b"\x00\x00\x08"  # two zero bytes, type code 0x08 (unsigned byte); the 4th is the number of dims
REFETCH = "download it again"


def read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when it is gzip (whatever its name says)."""
    head = read_head(path)
    if not head.startswith(GZIP_MAGIC):
        if path.suffix == ".gz" and not head.startswith(IDX_UBYTE):
            raise UnreadableFile(path, f"not a gzip file{described(head)}; {REFETCH}")
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except EOFError as error:
        raise UnreadableFile(path, f"truncated gzip file (the compressed data ends early); {REFETCH}") from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise UnreadableFile(path, f"damaged gzip file ({error}); {REFETCH}") from error


def read_idx(path: Path, dims: int | None = None) -> np.ndarray:
    """Parse an unsigned-byte IDX file (magic: two zero bytes, type 0x08, the number of dimensions);
    with `dims`, the array must have that many (3 for images, 1 for labels)."""
    path = Path(path)
    data = read_bytes(path)
    what = {3: "images", 1: "labels"}.get(dims or 0, "data")
    if len(data) < 4:
        raise UnreadableFile(path, f"truncated: {len(data)} bytes, too short for an IDX header; {REFETCH}")
    if not data.startswith(IDX_UBYTE) or not 1 <= data[3] <= 4:
        magic = int.from_bytes(data[:4], "big")
        expected = f"0x0000080{dims}" if dims else "0x0000080N"
        raise UnreadableFile(path, f"not an unsigned-byte IDX file (magic number 0x{magic:08x}, expected {expected})"
                                   f"{described(data[:512])}; {REFETCH}")
    ndim = data[3]
    if dims is not None and ndim != dims:
        raise UnreadableFile(path, f"an IDX file of {ndim} dimensions where {what} ({dims}) belong; "
                                   "are the image and label files swapped?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UnreadableFile(path, f"truncated: the IDX header needs {header} bytes, found {len(data)}; {REFETCH}")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    expected_bytes, found = int(np.prod(shape)), len(data) - header
    if found < expected_bytes:
        raise UnreadableFile(path, f"truncated: expected {expected_bytes} bytes of {what} {shape}, found {found}; "
                                   f"{REFETCH}")
    if found > expected_bytes:
        raise UnreadableFile(path, f"{found - expected_bytes} bytes beyond the {expected_bytes} of {what} its header "
                                   f"announces {shape}; not an IDX file as written, {REFETCH}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def find_file(root: Path, name: str) -> Path:
    """`name` in `root`, or its unpacked twin (`name` without `.gz`); a missing one names all four."""
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    names = ", ".join(n for pair in FILES.values() for n in pair)
    raise MissingFile(root / name, f"MNIST file missing; {root} must hold the four IDX files ({names})")


def read_split(root: Path, images_name: str, labels_name: str) -> InMemoryDataset:
    images_path, labels_path = find_file(root, images_name), find_file(root, labels_name)
    images = read_idx(images_path, dims=3)
    labels = read_idx(labels_path, dims=1)
    if len(images) != len(labels):
        raise UnreadableFile(labels_path, f"{len(labels)} labels for the {len(images)} images in {images_path.name}; "
                                          f"the two files must come from the same download")
    if len(labels) and labels.max() > 9:
        raise UnreadableFile(labels_path, f"labels outside 0..9 (largest {labels.max()}): not MNIST's labels")
    classes = [str(c) for c in range(10)]
    return InMemoryDataset(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)),
                           classes)  # uint8 (N, 1, 28, 28)


def load_mnist_bundle(root: str | Path) -> DataBundle:
    root = Path(root)
    if not root.exists():
        raise MissingFile(root, "folder not found; data.root must be the folder holding MNIST's four IDX files")
    if not root.is_dir():
        raise UnreadableFile(root, "not a folder; data.root must be the folder holding MNIST's four IDX files")
    splits = {split: read_split(root, *names) for split, names in FILES.items()}
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
