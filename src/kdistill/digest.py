"""Content digests of tensors: what caches and stage records use to tell one model or data set
from another (shape, dtype and bytes, in a stable order)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 hex digest of (name, tensor) pairs in the order given."""
    digest = hashlib.sha256()
    for name, value in named:
        tensor = value.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_digest(*models: nn.Module) -> str:
    """Digest of the models' state dicts (sorted keys): the same weights give the same digest."""
    return tensors_digest((f"{i}.{k}", v) for i, m in enumerate(models) for k, v in sorted(m.state_dict().items()))
