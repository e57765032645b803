"""Method registry. Each method is an `nn.Module` returning named loss terms; see `base.Method`."""

from __future__ import annotations

import inspect
from typing import Any

from kdistill.methods.adapters import build_adapter
from kdistill.methods.base import Method, StepContext
from kdistill.methods.contrastive import CRD
from kdistill.methods.features import NST, PKT, RKD, AttentionTransfer, Hint, SimilarityPreserving
from kdistill.methods.logits import DIST, DKD, HardLabel, LogitMSE, SoftTarget
from kdistill.methods.token_level import ForwardKL, GeneralizedJSD, ReverseKL
from kdistill.methods.transformer import AttentionKL, EmbeddingMSE, HiddenStateMSE, MiniLM
from kdistill.registry import Registry

# the `mutual` method lives with its strategy (a cohort of peers); it registers itself when first needed
METHODS: Registry = Registry("method", builtins=("kdistill.strategies.mutual",))
for _method in (HardLabel, SoftTarget, LogitMSE, DKD, DIST, Hint, AttentionTransfer, SimilarityPreserving,
                RKD, PKT, NST, CRD, ForwardKL, ReverseKL, GeneralizedJSD):
    METHODS.register(_method.name)(_method)
METHODS.register("kd", "hinton")(SoftTarget)
METHODS.register("ce", "cross_entropy")(HardLabel)
METHODS.register("fitnets", "fitnet")(Hint)
METHODS.register("at", "attention")(AttentionTransfer)
METHODS.register("similarity_preserving")(SimilarityPreserving)
for _method in (HiddenStateMSE, EmbeddingMSE, AttentionKL, MiniLM):  # transformers (kdistill.methods.transformer)
    METHODS.register(_method.name)(_method)
METHODS.register("fkl")(ForwardKL)
METHODS.register("rkl")(ReverseKL)
METHODS.register("generalized_jsd", "gkd")(GeneralizedJSD)


def method_options(cls: type[Method]) -> dict[str, Any]:
    """Config keys a method accepts, with their defaults (from its constructor)."""
    return {
        name: (param.default if param.default is not inspect.Parameter.empty else "<required>")
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    }


COMMON_OPTIONS = ("start_epoch", "end_epoch")


def build_method(name: str, options: dict[str, Any]) -> Method:
    """Instantiate a method from config; unknown keys and bad values raise ValueError('key: why').

    Every method also takes `start_epoch` / `end_epoch`: the epochs [start, end) it is active in.
    """
    options = dict(options)
    window = {key: options.pop(key) for key in COMMON_OPTIONS if key in options}
    cls = METHODS.get(name)
    accepted = method_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{unknown[0]}: not an option of '{name}'; accepted: {', '.join(accepted)}")
    missing = [k for k, v in accepted.items() if v == "<required>" and k not in options]
    if missing:
        raise ValueError(f"{missing[0]}: required by '{name}'")
    try:
        method = cls(**options)
    except TypeError as error:
        raise ValueError(f"bad options for '{name}': {error}") from error
    if not isinstance(method, Method):
        raise ValueError(f"'{name}' did not produce a kdistill Method")
    start, end = window.get("start_epoch", 0), window.get("end_epoch")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start_epoch: must be an integer >= 0 (got {start!r})")
    if end is not None and (not isinstance(end, int) or end <= start):
        raise ValueError(f"end_epoch: must be an integer > start_epoch (got {end!r})")
    method.start_epoch, method.end_epoch = start, end
    return method


__all__ = ["CRD", "DIST", "DKD", "METHODS", "NST", "PKT", "RKD", "AttentionKL", "AttentionTransfer", "EmbeddingMSE",
           "ForwardKL", "GeneralizedJSD", "HiddenStateMSE", "MiniLM",
           "HardLabel", "Hint", "LogitMSE", "Method", "ReverseKL", "SimilarityPreserving", "SoftTarget", "StepContext",
           "build_adapter", "build_method", "method_options"]
