"""Loading weights users already have: a checkpoint, a bare state dict, or a `module:factory`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "student", "net")


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
    raise ValueError(
        f"{source}: no state dict found; expected a mapping of tensors or a dict with one of "
        f"{', '.join(STATE_DICT_KEYS)}"
    )


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickled objects beyond tensors and containers
        raise ValueError(
            f"{path}: cannot be loaded with weights_only=True ({type(error).__name__}); save a state dict "
            "(torch.save(model.state_dict(), path)) or give the model as a 'module:factory'"
        ) from error
    return extract_state_dict(payload, str(path))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load `path` into `model` strictly; a mismatch names the missing and unexpected keys."""
    state = read_weights(path)
    own = model.state_dict()
    # checkpoints from before PyTorch 0.4.1 lack BatchNorm's step counter; it is never used in eval
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shape_errors = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shape_errors:
        problems = []
        if missing:
            problems.append(f"missing {missing[:5]}")
        if unexpected:
            problems.append(f"unexpected {unexpected[:5]}")
        problems.extend(shape_errors[:5])
        raise ValueError(f"{path} does not fit the model ({type(model).__name__}): " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    return model
