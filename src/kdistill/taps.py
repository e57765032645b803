"""Reading intermediate outputs of any `nn.Module` by dotted path, through forward hooks.

Models are never edited: a tap is a forward hook that keeps the module's latest output. A tap is
written `path` or `path:selector`, where the selector narrows a tuple / dict / model-output object
(`encoder.layer.3:0`, `bert:last_hidden_state`). The selector `input` reads the module's first
input instead of its output: `linear:input` is the penultimate embedding of a classifier whose
pooling is functional.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class TapError(ValueError):
    """A tap that names no module, or whose module never ran."""


@dataclass(frozen=True)
class Tap:
    path: str
    selector: str | None = None

    @classmethod
    def parse(cls, text: str) -> Tap:
        path, _, selector = text.partition(":")
        return cls(path.strip(), selector.strip() or None)

    def __str__(self) -> str:
        return self.path if self.selector is None else f"{self.path}:{self.selector}"


def select(output: Any, selector: str | None, where: str) -> Any:
    """Narrow a module output: an int indexes a sequence, a name reads a key or an attribute."""
    if selector is None:
        return output
    if selector == "input":
        raise TapError(f"{where}: 'input' is read by the hook, not selected from the output")
    if selector.lstrip("-").isdigit() and isinstance(output, list | tuple):
        return output[int(selector)]
    if isinstance(output, dict) and selector in output:
        return output[selector]
    if hasattr(output, selector):
        return getattr(output, selector)
    raise TapError(f"{where}: output of type {type(output).__name__} has no element '{selector}'")


def module_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, path: str, owner: str = "model") -> nn.Module:
    """The module at `path`, or a TapError naming the closest existing paths."""
    if path == "":
        return model
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, list(modules), n=5, cutoff=0.4)
    children = ", ".join(n for n, _ in model.named_children())
    hint = f"closest: {', '.join(close)}" if close else f"top-level modules: {children}"
    raise TapError(
        f"{owner} ({type(model).__name__}) has no module '{path}'; {hint}. "
        "Run `kdistill layers MODEL` to list every path."
    )


class LayerTaps:
    """Forward hooks on one model; `collect()` returns this forward pass's outputs by tap."""

    def __init__(self, model: nn.Module, taps: Iterable[str | Tap], owner: str = "model") -> None:
        self.model = model
        self.owner = owner
        self.taps = list(dict.fromkeys(t if isinstance(t, Tap) else Tap.parse(t) for t in taps))
        self._modules = {tap: resolve_module(model, tap.path, owner) for tap in self.taps}
        self._outputs: dict[Tap, Any] = {}
        # the taps the last `collect` refused (none once one succeeds): after a successful collect
        # the outputs are cleared, so `missing()` alone cannot tell "did not run" from "already read"
        self.unrun: list[str] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook_for(self, tap: Tap):
        if tap.selector == "input":
            def hook(_module: nn.Module, inputs: Any, _output: Any) -> None:
                self._outputs[tap] = inputs[0]
        else:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                self._outputs[tap] = output

        return hook

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> LayerTaps:
        if not self._handles:
            for tap, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook_for(tap)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    def __enter__(self) -> LayerTaps:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def clear(self) -> None:
        self._outputs.clear()

    def missing(self) -> list[str]:
        """The taps whose module did not run in the last forward pass (a branch forward() never takes,
        a module held but unused): what `collect` refuses, for a caller that names them itself."""
        return [str(t) for t in self.taps if t not in self._outputs]

    def collect(self) -> dict[str, Any]:
        """Outputs of the last forward pass, keyed by tap text; a tap that never ran is an error."""
        missing = self.missing()
        self.unrun = missing
        if missing and not self.attached:  # the hooks were never registered: the modules may well have run
            raise TapError(f"{self.owner}: taps are not attached, so tapped module(s) {missing} recorded "
                           "nothing; attach them (`with taps:` or taps.attach()) before the forward pass")
        if missing:
            raise TapError(
                f"{self.owner}: tapped module(s) {missing} did not run during the forward pass; "
                "tap a module that forward() calls"
            )
        outputs = {str(t): self._outputs[t] if t.selector == "input"
                   else select(self._outputs[t], t.selector, f"{self.owner} tap '{t}'") for t in self.taps}
        self._outputs.clear()
        return outputs


def describe_layers(model: nn.Module, sample: Any) -> list[tuple[str, str, str]]:
    """(path, module type, output shape) for every module that runs on `sample`."""
    shapes: dict[str, str] = {}

    def shape_of(value: Any) -> str:
        if torch.is_tensor(value):
            return str(tuple(value.shape))
        if isinstance(value, list | tuple):
            return "(" + ", ".join(shape_of(v) for v in value) + ")"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {shape_of(v)}" for k, v in value.items()) + "}"
        return type(value).__name__

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:  # must return None
            shapes.setdefault(name, shape_of(output))

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in model.named_modules() if name]
    try:
        model.eval()
        with torch.inference_mode():
            model(**sample) if isinstance(sample, dict) else model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, type(m).__name__, shapes.get(name, "(not run)")) for name, m in model.named_modules() if name]
