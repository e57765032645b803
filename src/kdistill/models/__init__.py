"""Model registry: built-in architectures by name, user models by `module:factory`.

A factory takes `num_classes` and `input_shape` (of one sample) and its own options.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from kdistill.models.cnn import SmallCNN, cnn
from kdistill.models.loading import load_weights, read_weights
from kdistill.models.mlp import MLP, mlp
from kdistill.models.resnet_cifar import NARROW_DEPTHS, WIDE_DEPTHS, CifarResNet, _narrow, _wide
from kdistill.models.wrn import WideResNet, wrn
from kdistill.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("mlp")(mlp)
MODELS.register("cnn", "small-cnn")(cnn)
MODELS.register("wrn", "wide-resnet")(wrn)
for _depth in NARROW_DEPTHS:
    MODELS.register(f"resnet{_depth}")(_narrow(_depth))
for _depth in WIDE_DEPTHS:
    MODELS.register(f"resnet{_depth}x4")(_wide(_depth))

_WRN_NAME = re.compile(r"^wrn[-_](\d+)[-_](\d+)$")


def build_model(name: str, num_classes: int, input_shape: Sequence[int],
                options: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a registered model; `wrn-40-2` style names are understood too."""
    options = dict(options or {})
    match = _WRN_NAME.match(name.lower())
    if match:
        factory: Any = wrn
        options = {"depth": int(match[1]), "width": int(match[2]), **options}
    else:
        factory = MODELS.get(name)
    if isinstance(factory, nn.Module):
        return factory
    accepted = inspect.signature(factory).parameters
    kwargs: dict[str, Any] = dict(options)
    if "num_classes" in accepted:
        kwargs["num_classes"] = num_classes
    if "input_shape" in accepted:
        kwargs["input_shape"] = tuple(input_shape)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory '{name}' returned {type(model).__name__}, not an nn.Module")
    return model


__all__ = [
    "MLP", "MODELS", "CifarResNet", "SmallCNN", "WideResNet", "build_model", "cnn", "load_weights", "mlp",
    "read_weights", "wrn",
]
