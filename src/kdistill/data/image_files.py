"""Reading the images of an image-folder data set, from a folder or a tar archive, one error per fault.

A damaged archive, an archive of something else, a corrupt JPEG among fifty thousand or images
outside `split/class/` folders each stop the load with the archive (and the member inside it)
named, instead of a tarfile, zlib or PIL traceback, or a silently smaller data set.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdistill.errors import UnreadableFile
from kdistill.file_checks import MissingFile, described, looks_like, read_head

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LAYOUT = "<split>/<class>/<image> (e.g. train/cat/0001.jpg)"
# by_split[split][label] = [(name, pixels)], pixels uint8 (H, W, 3)
Decoded = dict[str, dict[str, list[tuple[str, np.ndarray]]]]


def iter_files(root: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (relative posix path, bytes) for every image under `root` (directory or tarball)."""
    if not root.exists():
        raise MissingFile(root, f"image folder not found; give a folder or a .tar/.tar.gz of {LAYOUT}")
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                yield path.relative_to(root).as_posix(), path.read_bytes()
        return
    yield from _iter_archive(root)


def _iter_archive(root: Path) -> Iterator[tuple[str, bytes]]:
    head = read_head(root)
    try:
        archive = tarfile.open(root, "r:*")  # noqa: SIM115 (closed by the `with archive` below)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if not head:
            raise UnreadableFile(root, "empty file (0 bytes), not a tar archive; give a folder or a .tar.gz of "
                                       f"{LAYOUT}") from error
        hint = "unpack it and give the folder" if head.startswith(b"PK") else f"give a folder or a .tar.gz of {LAYOUT}"
        raise UnreadableFile(root, f"not a tar archive{described(head)}; {hint}") from error
    last = "its first member"
    with archive:
        try:
            for member in archive:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    name = member.name.removeprefix("./")
                    payload = archive.extractfile(member).read()
                    yield name, payload
                    last = name
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise UnreadableFile(root, f"truncated or damaged archive: it breaks after {last} ({error}); "
                                       "copy or download it again") from error


def decode_image(root: Path, name: str, payload: bytes, size: tuple[int, int] | None) -> np.ndarray:
    """The image's RGB pixels, resized to `size` if given; a file PIL cannot read is named."""
    try:
        image = Image.open(io.BytesIO(payload))
        image = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        where = (root / name, "") if root.is_dir() else (root, f"member {name}: ")
        raise UnreadableFile(where[0], f"{where[1]}not a readable image: {_why(error, payload)}; "
                                       "remove or replace it") from error
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _why(error: Exception, payload: bytes) -> str:
    """PIL's 'cannot identify image file <_io.BytesIO ...>' made useful: what the bytes look like."""
    if not isinstance(error, UnidentifiedImageError):
        return str(error)
    kind = looks_like(payload[:512])
    if kind is not None and kind.endswith(" image"):
        return f"truncated or damaged ({kind[2:] if kind.startswith('a ') else kind})"
    return f"an unknown image format{described(payload[:512])}"


def decode_all(root: Path, size: tuple[int, int] | None, progress: Callable[[], None] | None = None
               ) -> tuple[Decoded, str | None]:
    """Every image under `root` by split and class, and the first image found outside a
    `split/class/` folder (skipped, as before; named when the splits asked for are missing)."""
    by_split: Decoded = defaultdict(lambda: defaultdict(list))
    stray = None
    for name, payload in iter_files(root):
        parts = name.split("/")
        if len(parts) < 3:
            stray = stray or name
            continue
        by_split[parts[-3]][parts[-2]].append((name, decode_image(root, name, payload, size)))
        if progress is not None:
            progress()
    if not by_split:
        found = f"; {stray} is outside a class folder" if stray else ""
        raise UnreadableFile(root, f"holds no images in class folders{found}; arrange them as {LAYOUT} "
                                   f"({', '.join(IMAGE_SUFFIXES)})")
    decoded = {split: {label: sorted(items, key=lambda item: item[0]) for label, items in classes.items()}
               for split, classes in by_split.items()}
    return decoded, stray
