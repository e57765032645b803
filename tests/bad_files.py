"""Builders of small real and broken files (checkpoints, IDX, images, tar archives) as bytes, for the
unit tests of unreadable files and for the bad-input corpus (`bad_input/files.py`)."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tarfile
import zipfile

import numpy as np
import torch
from PIL import Image


def torch_bytes(payload: object, **save_options: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer, **save_options)
    return buffer.getvalue()


def mlp_state(num_classes: int = 10, hidden: int = 16, input_shape: tuple[int, ...] = (1, 8, 8)) -> dict:
    from kdistill.models import build_model

    torch.manual_seed(0)
    return build_model("mlp", num_classes, input_shape, {"hidden": [hidden]}).state_dict()


class RunsCode:
    """A pickle payload that would create `marker` if it were ever unpickled without weights_only."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_bytes(height: int = 4, width: int = 4, colour: int = 128, noise_seed: int | None = None) -> bytes:
    """A PNG of one colour, or of seeded noise (incompressible: an archive of these is large)."""
    pixels = np.full((height, width, 3), colour, np.uint8)
    if noise_seed is not None:
        pixels = np.random.default_rng(noise_seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def safetensors_bytes() -> bytes:
    """A valid safetensors file of one float32 tensor `w` of shape (1,), written by hand."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<f", 1.0)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def idx_bytes(array: np.ndarray, compress: bool = True, magic: bytes | None = None,
              shape: tuple[int, ...] | None = None) -> bytes:
    """An IDX file of uint8 `array`; `magic` and `shape` override the header to make it lie."""
    dims = shape if shape is not None else array.shape
    header = (magic if magic is not None else struct.pack(">HBB", 0, 8, len(dims)))
    raw = header + struct.pack(">" + "I" * len(dims), *dims) + array.astype(np.uint8).tobytes()
    return gzip.compress(raw) if compress else raw


def mnist_files(count: int = 6, label_count: int | None = None) -> dict[str, bytes]:
    """The four MNIST files for `count` 28x28 images per split (labels: `label_count` of them)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = np.arange(count if label_count is None else label_count, dtype=np.uint8) % 10
    files = {}
    for split in ("train", "t10k"):
        files[f"{split}-images-idx3-ubyte.gz"] = idx_bytes(images)
        files[f"{split}-labels-idx1-ubyte.gz"] = idx_bytes(labels)
    return files


def tar_bytes(members: dict[str, bytes], compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_members(classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 2,
                  splits: tuple[str, ...] = ("train", "test")) -> dict[str, bytes]:
    """`split/class/N.png` members of 4x4 images, one colour per class."""
    return {f"{split}/{label}/{index}.png": png_bytes(colour=40 + 100 * c)
            for split in splits for c, label in enumerate(classes) for index in range(per_class)}
