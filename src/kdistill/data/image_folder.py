"""Images in `split/class/*.jpg` layout, from a directory or a `.tar.gz` of one.

Decoding tens of thousands of small JPEGs takes a while, so the decoded uint8 arrays are cached
under `~/.cache/kdistill` (or `$KDISTILL_CACHE`), keyed by the source's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdistill.data.base import DataBundle, InMemoryDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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


def _iter_files(root: Path):
    """Yield (relative posix path, bytes) for every image under `root` (directory or tarball)."""
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path.relative_to(root).as_posix(), path.read_bytes()
        return
    with tarfile.open(root, "r:*") as archive:
        for member in archive:
            if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                yield member.name.lstrip("./"), archive.extractfile(member).read()


def _decode(root: Path, size: tuple[int, int] | None) -> dict[str, dict[str, list[np.ndarray]]]:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    by_split: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = defaultdict(lambda: defaultdict(list))
    progress = Progress(SpinnerColumn(), TextColumn("decoding {task.completed} images from " + root.name),
                        transient=True)
    with progress:
        task = progress.add_task("decode", total=None)
        for name, payload in _iter_files(root):
            _add_image(by_split, name, payload, size)
            progress.advance(task)
    return {split: {label: [array for _, array in sorted(items, key=lambda item: item[0])]
                    for label, items in classes.items()}
            for split, classes in by_split.items()}


def _add_image(by_split: dict, name: str, payload: bytes, size: tuple[int, int] | None) -> None:
    """File `split/label/name` goes to by_split[split][label]; deeper prefixes are ignored."""
    parts = name.split("/")
    if len(parts) < 3:
        return
    split, label = parts[-3], parts[-2]
    image = Image.open(io.BytesIO(payload)).convert("RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    by_split[split][label].append((name, np.asarray(image, dtype=np.uint8)))


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
        raise FileNotFoundError(f"image folder not found: {root}")
    key = source_key(root, train_split, test_split, image_size)
    cached = cache_dir() / f"image-folder-{key}.npz"
    if cached.exists():
        stored = np.load(cached, allow_pickle=False)
        classes = [str(c) for c in stored["classes"]]
        arrays = {s: (stored[f"{s}_x"], stored[f"{s}_y"]) for s in (train_split, test_split)}
    else:
        size = (image_size, image_size) if image_size else None
        decoded = _decode(root, size)
        for split in (train_split, test_split):
            if split not in decoded:
                raise FileNotFoundError(f"{root} has no '{split}/<class>/' images (found splits: {sorted(decoded)})")
        classes = sorted(decoded[train_split])
        arrays = {}
        for split in (train_split, test_split):
            xs, ys = [], []
            for label_index, label in enumerate(classes):
                images = decoded[split].get(label, [])
                xs.extend(images)
                ys.extend([label_index] * len(images))
            arrays[split] = (np.stack(xs).transpose(0, 3, 1, 2).copy(), np.asarray(ys, dtype=np.int64))
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
