"""Images in `split/class/*.jpg` layout, from a directory or a `.tar.gz` of one.

Decoding tens of thousands of small JPEGs takes a while, so the decoded uint8 arrays are cached
under `~/.cache/kdistill` (or `$KDISTILL_CACHE`), keyed by the source's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from kdistill.data.base import DataBundle, InMemoryDataset
from kdistill.data.image_files import IMAGE_SUFFIXES, LAYOUT, Decoded, decode_all
from kdistill.errors import UnreadableFile
from kdistill.file_checks import MissingFile

__all__ = ["IMAGE_SUFFIXES", "cache_dir", "load_image_folder_bundle", "source_key"]


def cache_dir() -> Path:
    return Path(os.environ.get("KDISTILL_CACHE", Path.home() / ".cache" / "kdistill"))


def source_key(root: Path, train_split: str, test_split: str, image_size: int | None) -> str:
    """What the decoded arrays depend on: the source's files (name, size, mtime), splits and size."""
    digest = hashlib.sha256(f"{root.resolve()}|{train_split}|{test_split}|{image_size}".encode())
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root) if root.is_dir() else path.name}|{stat.st_size}|"
                      f"{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _decode(root: Path, size: tuple[int, int] | None) -> tuple[Decoded, str | None]:
    from kdistill.engine.progress import progress_task

    with progress_task(True, f"decoding the images of {root.name}", None) as advance:
        return decode_all(root, size, advance)


def _arrays(root: Path, decoded: Decoded, stray: str | None, splits: tuple[str, str]
            ) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Classes (sorted, from the training split) and each split's (N, 3, H, W) images and labels."""
    train_split, test_split = splits
    for split in splits:
        if split not in decoded:
            outside = f"; {stray} is outside a class folder" if stray else ""
            raise UnreadableFile(root, f"has no '{split}/<class>/' images (found splits: {', '.join(sorted(decoded))})"
                                       f"{outside}; arrange the files as {LAYOUT} or set data.options "
                                       "train_split / test_split")
    classes = sorted(decoded[train_split])
    unknown = sorted(set(decoded[test_split]) - set(classes))
    if unknown:
        raise UnreadableFile(root, f"'{test_split}/' has classes that '{train_split}/' lacks ({', '.join(unknown)}); "
                                   "every class needs training images")
    sizes: dict[tuple[int, ...], str] = {}
    for split in splits:
        for items in decoded[split].values():
            for name, pixels in items:
                sizes.setdefault(pixels.shape, name)
    if len(sizes) > 1:
        (a, a_name), (b, b_name) = list(sizes.items())[:2]
        raise UnreadableFile(root, f"images differ in size ({a_name} is {a[1]}x{a[0]}, {b_name} is {b[1]}x{b[0]}); "
                                   "set data.options.image_size to resize them all")
    arrays = {}
    for split in splits:
        xs, ys = [], []
        for label_index, label in enumerate(classes):
            images = [pixels for _, pixels in decoded[split].get(label, [])]
            xs.extend(images)
            ys.extend([label_index] * len(images))
        arrays[split] = (np.stack(xs).transpose(0, 3, 1, 2).copy(), np.asarray(ys, dtype=np.int64))
    return classes, arrays


def _read_cache(cached: Path, splits: tuple[str, str]) -> tuple[list[str], dict] | None:
    """The decoded arrays kept from an earlier load; None (decode again) when absent or unreadable."""
    if not cached.exists():
        return None
    try:
        with np.load(cached, allow_pickle=False) as stored:
            classes = [str(c) for c in stored["classes"]]
            return classes, {s: (stored[f"{s}_x"], stored[f"{s}_y"]) for s in splits}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def load_image_folder_bundle(
    root: str | Path,
    train_split: str = "train",
    test_split: str = "test",
    image_size: int | None = None,
    mean: tuple[float, ...] = (0.485, 0.456, 0.406),
    std: tuple[float, ...] = (0.229, 0.224, 0.225),
) -> DataBundle:
    root = Path(root)
    if not root.exists():
        raise MissingFile(root, f"image folder not found; give a folder or a .tar/.tar.gz of {LAYOUT}")
    splits = (train_split, test_split)
    key = source_key(root, train_split, test_split, image_size)
    cached = cache_dir() / f"image-folder-{key}.npz"
    kept = _read_cache(cached, splits)
    if kept is not None:
        classes, arrays = kept
    else:
        size = (image_size, image_size) if image_size else None
        classes, arrays = _arrays(root, *_decode(root, size), splits)
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.stem}.", suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, classes=np.asarray(classes), **{f"{s}_x": a[0] for s, a in arrays.items()},
                     **{f"{s}_y": a[1] for s, a in arrays.items()})
        os.replace(tmp, cached)
    datasets = {s: InMemoryDataset(torch.from_numpy(x), torch.from_numpy(y), classes) for s, (x, y) in arrays.items()}
    return DataBundle(
        name=f"image-folder:{root.name}",
        train=datasets[train_split],
        test=datasets[test_split],
        num_classes=len(classes),
        mean=tuple(mean),
        std=tuple(std),
        image=True,
        classes=classes,
    )
