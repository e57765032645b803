"""What a file that is not what it claims to be actually is, so its error can say so.

A user who points `checkpoint:` at a PNG, or `data.root:` at an HTML error page saved by a failed
download, gains more from "it looks like an HTML page" than from a parser's complaint about byte
0x3c. Shared by the checkpoint loader (`models/loading.py`) and the data loaders (`data/`).
"""

from __future__ import annotations

from pathlib import Path

from kdistill.errors import UnreadableFile

# leading bytes of formats users plausibly mix up with checkpoints, archives and IDX files
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip file"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras?)"),
    (b"%PDF", "a PDF document"),
    (b"\x08\x01\x12", "a protobuf (ONNX or TensorFlow?)"),
)
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # torch.save before 1.6
HEAD_BYTES = 512


class MissingFile(UnreadableFile, FileNotFoundError):
    """A file that is not there: a BadInput for the CLI, still a FileNotFoundError for callers."""

    def __init__(self, path: object, what: str = "file not found; check the path") -> None:
        super().__init__(path, what)


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first bytes of `path`; a missing, directory or unreadable path is named as such."""
    if not path.exists():
        raise MissingFile(path)
    if path.is_dir():
        raise UnreadableFile(path, "is a directory, not a file; give the file inside it")
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError as error:
        raise UnreadableFile(path, f"cannot be read ({error.strerror or error}); check its permissions") from error


def looks_like(head: bytes) -> str | None:
    """A short description of the format `head` starts with, or None when nothing is recognised."""
    if not head:
        return "an empty file (0 bytes)"
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    if is_safetensors(head):
        return "a safetensors file"
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "a PyTorch checkpoint (legacy format)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return "an HTML or XML page (a failed download?)"
    if stripped[:1] in (b"{", b"["):
        return "a JSON file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "a text file"
    return None


def is_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length < 100_000_000


def described(head: bytes) -> str:
    """' (it looks like a PNG image)', or '' when the format is not recognised."""
    what = looks_like(head)
    return f" (it looks like {what})" if what else ""
