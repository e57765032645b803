"""Loading weights users already have: a checkpoint, a bare state dict, or a `module:factory`.

Every failure is a `BadInput` naming the file: `UnreadableFile` when the file cannot be read as a
checkpoint (see `checkpoint_file.py`), a plain `BadInput` when it reads but does not fit the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from kdistill.errors import BadInput, UnreadableFile
from kdistill.models.checkpoint_file import RESAVE, read_checkpoint

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "student", "net")
ACCURACY_KEYS = ("best_acc1", "best_prec1", "best_acc", "acc", "accuracy", "test_acc")
SHOWN = 5  # keys named in a mismatch message before "..."


def extract_state_dict(payload: object, source: str) -> dict[str, torch.Tensor]:
    """Find the state dict in what `torch.load` returned, and strip DataParallel's `module.` prefix."""
    if isinstance(payload, nn.Module):
        payload = payload.state_dict()
    if isinstance(payload, Mapping):
        for key in STATE_DICT_KEYS:
            if key in payload and isinstance(payload[key], Mapping | nn.Module):
                return extract_state_dict(payload[key], source)
        if payload and all(torch.is_tensor(v) for v in payload.values()):
            return {k.removeprefix("module."): v for k, v in payload.items()}
    raise UnreadableFile(source, f"holds no state dict ({_contents(payload)}); expected a mapping of parameter "
                                 f"names to tensors, or a dict with one of {', '.join(STATE_DICT_KEYS)}; {RESAVE}")


def _contents(payload: object) -> str:
    if isinstance(payload, Mapping):
        if not payload:
            return "an empty dict"
        keys = [str(k) for k in payload]
        return "keys: " + ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
    return f"a {type(payload).__name__}"


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in the checkpoint at `path` (raises `UnreadableFile`; `MissingFile` if absent)."""
    return extract_state_dict(read_checkpoint(path), str(path))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load `path` into `model` strictly; a mismatch names the missing and unexpected keys and shapes."""
    state = read_weights(path)
    own = model.state_dict()
    # checkpoints from before PyTorch 0.4.1 lack BatchNorm's step counter; it is never used in eval; a
    # module's `optional_state` entries it fills itself when absent (a trimmed embedding's id table)
    optional = {f"{name}.{key}" if name else key for name, module in model.named_modules()
                for key in getattr(module, "optional_state", ())}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked") and k not in optional]
    unexpected = [k for k in state if k not in own]
    shape_errors = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shape_errors:
        raise BadInput(f"{path} does not fit the model ({type(model).__name__}): "
                       + "; ".join(mismatch_problems(missing, unexpected, shape_errors, own)))
    model.load_state_dict(state, strict=False)
    return model


def mismatch_problems(missing: list[str], unexpected: list[str], shape_errors: list[str],
                      own: Mapping[str, object]) -> list[str]:
    """The parts of a mismatch message: counts and the first few keys, and a prefix the user can strip."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    parts.extend(shape_errors[:SHOWN])
    if len(shape_errors) > SHOWN:
        parts.append(f"{len(shape_errors) - SHOWN} more shape mismatches")
    prefix = _extra_prefix(unexpected, own)
    if prefix:
        parts.append(f"the checkpoint's keys carry an extra '{prefix}' prefix: save the inner model's state_dict()")
    return parts


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (", ..." if len(keys) > SHOWN else "")


def _extra_prefix(unexpected: list[str], own: Mapping[str, object]) -> str | None:
    """'model.' when every unexpected key is a model key behind one extra prefix (a LightningModule's)."""
    if not unexpected or "." not in unexpected[0]:
        return None
    prefix = unexpected[0].split(".")[0] + "."
    if all(k.startswith(prefix) and k.removeprefix(prefix) in own for k in unexpected):
        return prefix
    return None


def recorded_accuracy(path: str | Path) -> float | None:
    """The accuracy a checkpoint records about itself (e.g. `best_prec1` beside its `state_dict`), as a
    fraction in [0, 1]; None when it records none. Lets a caller warn when a loaded teacher scores far
    below its own record (a different normalisation, a wrong architecture option)."""
    payload = read_checkpoint(path)
    if not isinstance(payload, Mapping):
        return None
    for key in ACCURACY_KEYS:
        if key in payload:
            value = _as_fraction(payload[key])
            if value is not None:
                return value
    return None


def _as_fraction(value: object) -> float | None:
    """0.918 stays, 91.8 (percent) becomes 0.918; anything not a number in [0, 100] is None."""
    if isinstance(value, bool):
        return None
    if torch.is_tensor(value):
        if value.numel() != 1 or value.is_complex():
            return None
        value = value.item()
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 100:
        return None
    return float(value) / 100 if value > 1 else float(value)
