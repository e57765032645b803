"""Model registry: built-in architectures by name, user models by `module:factory`.

A factory takes `num_classes` and `input_shape` (of one sample) when its signature names them, and
its own options as keyword arguments, and returns an `nn.Module`; the user's own is found by
`package.module:factory` (a module in the current directory included).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from kdistill.errors import BadInput, first_line
from kdistill.models.cnn import SmallCNN, cnn
from kdistill.models.loading import load_weights, read_weights
from kdistill.models.mlp import MLP, mlp
from kdistill.models.recommender import NeuMF, neumf
from kdistill.models.resnet_cifar import NARROW_DEPTHS, WIDE_DEPTHS, CifarResNet, _narrow, _wide
from kdistill.models.wrn import WideResNet, wrn
from kdistill.registry import Registry

# text models (hf-classifier, hf-student, hf-from-teacher, text-bilstm, text-cnn) register on the first lookup
MODELS: Registry = Registry("model", builtins=("kdistill.text.registrations",))
MODELS.register("mlp")(mlp)
MODELS.register("cnn", "small-cnn")(cnn)
MODELS.register("wrn", "wide-resnet")(wrn)
MODELS.register("neumf", "ncf")(neumf)
for _depth in NARROW_DEPTHS:
    MODELS.register(f"resnet{_depth}")(_narrow(_depth))
for _depth in WIDE_DEPTHS:
    MODELS.register(f"resnet{_depth}x4")(_wide(_depth))


class ModelFactoryError(BadInput):
    """A model factory that raised while building, or returned something that is not a module: the
    user's code, named, so that the message is not mistaken for a bad option."""


_WRN_NAME = re.compile(r"^wrn[-_](\d+)[-_](\d+)$")


def build_model(name: str, num_classes: int, input_shape: Sequence[int],
                options: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a registered model; `wrn-40-2` style names are understood too. `defaults` (what the
    data decides, `DataBundle.model_defaults`) fill the factory's parameters of those names that
    `options` leaves out."""
    options = dict(options or {})
    match = _WRN_NAME.match(name.lower())
    if match:
        factory: Any = wrn
        options = {"depth": int(match[1]), "width": int(match[2]), **options}
    else:
        factory = MODELS.get(name)
    if isinstance(factory, nn.Module):
        return factory
    if not callable(factory):
        raise ModelFactoryError(f"'{name}' is a {type(factory).__name__}, not a function or class that builds a model")
    accepted = inspect.signature(factory).parameters
    kwargs: dict[str, Any] = dict(options)
    if "num_classes" in accepted:
        kwargs["num_classes"] = num_classes
    if "input_shape" in accepted:
        kwargs["input_shape"] = tuple(input_shape)
    for key, value in (defaults or {}).items():
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:  # the options do not fit the factory's parameters
        raise TypeError(f"model '{name}': {error}") from error
    try:
        model = factory(**kwargs)
    except Exception as error:  # whatever a (user's) factory raises: named, one line
        raise ModelFactoryError(f"model factory '{name}' raised {type(error).__name__}: {first_line(error)}") from error
    if not isinstance(model, nn.Module):
        raise ModelFactoryError(f"model factory '{name}' returned {type(model).__name__}, not a torch.nn.Module; "
                                "return the model itself")
    return model


__all__ = [
    "MLP", "MODELS", "CifarResNet", "ModelFactoryError", "NeuMF", "SmallCNN", "WideResNet", "build_model", "cnn",
    "load_weights", "mlp", "neumf", "read_weights", "wrn",
]
