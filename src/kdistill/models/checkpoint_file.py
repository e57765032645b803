"""Reading a checkpoint file safely, and saying what is wrong with one that cannot be read.

`torch.load` reports a truncated zip as a miniz "central directory" failure, a text file as
`KeyError: 101` and a pickled model as a page about PyTorch 2.6's defaults. A user needs to know
which of three things happened: the file is damaged (copy it again), it is not a checkpoint at all
(wrong path), or it holds Python objects that are never unpickled here, because unpickling them
could run code (re-save the state dict). Loading always uses `weights_only=True`.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from kdistill.errors import UnreadableFile
from kdistill.file_checks import TORCH_LEGACY_MAGIC, is_safetensors, looks_like, read_head

RESAVE = "re-save it with torch.save(model.state_dict(), path)"


def read_checkpoint(path: str | Path) -> object:
    """What `torch.load(path, weights_only=True)` returns; any failure is an `UnreadableFile` (a
    `MissingFile`, also a FileNotFoundError, when the file does not exist)."""
    path = Path(path)
    head = read_head(path)
    if not head:
        raise UnreadableFile(path, f"empty file (0 bytes), not a PyTorch checkpoint; {RESAVE}")
    if is_safetensors(head):
        raise UnreadableFile(path, "a safetensors file, which kdistill does not read; convert it once: "
                             "torch.save(safetensors.torch.load_file(path), 'model.pt')")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise beside the real error
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UnreadableFile(path, diagnose(path, head, error)) from error


def diagnose(path: Path, head: bytes, error: Exception) -> str:
    """One line on why `torch.load` failed on `path`, from the file's bytes rather than torch's text."""
    refused = refused_global(error)
    if refused is not None:
        return (f"holds Python objects beyond tensors ({refused}), which kdistill never unpickles because "
                f"that could run code; where the file was made, {RESAVE}")
    if head.startswith(b"PK\x03\x04"):
        return _diagnose_zip(path)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return (f"truncated or damaged PyTorch checkpoint (legacy format; {type(error).__name__} after "
                f"{path.stat().st_size} bytes); copy it again or {RESAVE}")
    kind = looks_like(head)
    if kind == "a Python pickle":
        return f"a Python pickle not written by torch.save, so not a PyTorch checkpoint; {RESAVE}"
    if kind is not None:
        return f"not a PyTorch checkpoint (it looks like {kind}); give a file written by torch.save"
    return f"truncated or not a PyTorch checkpoint ({type(error).__name__}); {RESAVE}"


def refused_global(error: BaseException) -> str | None:
    """The Python object `weights_only` refused to unpickle ('posix.system', 'torch.nn...Linear')."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None


def _diagnose_zip(path: Path) -> str:
    """torch.save's format is a zip holding `<name>/data.pkl`: truncated, foreign, or corrupt inside."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("data.pkl") for name in names):
                return ("a zip archive but not a PyTorch checkpoint (no data.pkl inside); "
                        "give a file written by torch.save")
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return (f"truncated or not a PyTorch checkpoint (an incomplete zip archive of {size} bytes); "
                f"copy it again or {RESAVE}")
    if damaged is not None:
        return f"damaged PyTorch checkpoint ({damaged} fails its checksum); copy it again or {RESAVE}"
    return f"damaged PyTorch checkpoint (the zip archive reads but its contents do not); {RESAVE}"
