"""User callbacks: one's own code at the ends of steps, evaluations, epochs and the fit.

    class PrintLoss(Callback):
        def on_epoch_end(self, distiller, record):
            print(record["epoch"], record["train/loss"])

    Distiller(teacher, student, methods, callbacks=[PrintLoss()])
    # YAML: training.callbacks: [mypkg.cb:PrintLoss, {name: mypkg.cb:EveryN, every: 5}]

Order. Each event calls the callbacks in list order, on every process (write files only where
`distiller.world.is_main`). In one `fit()`:

    on_fit_start(distiller)             after set-up and any resume, before the first step
    on_step_end(distiller, step_info)   after each optimiser step (and the EMA update)
    on_evaluate(distiller, metrics)     after each evaluation (every `eval_every_steps`, and each
                                        epoch end with a validation set); a callback may add
                                        metrics ("val/f1"), which the best checkpoint and early
                                        stopping then read, and the epoch record keeps
    on_epoch_end(distiller, record)     once the epoch's record is complete, before its checkpoint
    on_fit_end(distiller)               after the final student is saved; not after an interrupt

After an optimiser step: EMA update, on_step_end, [evaluation: on_evaluate, best checkpoint],
[periodic checkpoint], then a pending stop request (Ctrl-C, `distiller.request_stop()`). At an
epoch end: evaluation and on_evaluate, best checkpoint and early stopping, `metrics.jsonl`,
on_epoch_end, the checkpoint.

State. A callback with state implements `state_dict()` (tensors, numbers, strings, lists, dicts:
what `torch.load(weights_only=True)` reads) and `load_state_dict(state)`. That state is written in
every training checkpoint and restored on resume, so a resumed run's callbacks go on as if never
interrupted. Stateful callbacks are matched by class, in order; stateless ones may come and go.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from kdistill.registry import import_attribute

if TYPE_CHECKING:
    from kdistill.engine.distiller import Distiller

EVENTS = ("on_fit_start", "on_step_end", "on_evaluate", "on_epoch_end", "on_fit_end")


@dataclass
class StepInfo:
    """What `on_step_end` is told about the optimiser step just taken."""

    epoch: int  # 0-based epoch of the step
    global_step: int  # optimiser steps since the start of training (1 after the first)
    batch: int  # batches of this epoch done (micro-batches under gradient accumulation)
    batches: int  # batches per epoch
    samples: int  # samples in this step on this process (all its micro-batches)
    terms: dict[str, torch.Tensor]  # the step's loss terms ("loss" among them) on the device: float() syncs
    lr: float  # learning rate of the first parameter group, as used by this step


class Callback:
    """Base class of user callbacks; override the events wanted (see the module's docstring)."""

    def on_fit_start(self, distiller: Distiller) -> None:
        pass

    def on_step_end(self, distiller: Distiller, step_info: StepInfo) -> None:
        pass

    def on_evaluate(self, distiller: Distiller, metrics: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, distiller: Distiller, record: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, distiller: Distiller) -> None:
        pass


def is_callback(obj: object) -> bool:
    return isinstance(obj, Callback) or (not isinstance(obj, type) and any(hasattr(obj, e) for e in EVENTS))


def fire(callbacks: list[Any], event: str, distiller: Distiller, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, event, None)
        if method is not None:
            method(distiller, *args)


# from YAML: "package.module:attribute" or {name: "package.module:attribute", option: value, ...} -----
def _resolve(spec: str | dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    if isinstance(spec, str):
        path, options = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
        options = dict(spec)
        path = options.pop("name")
    else:
        raise ValueError(f"{spec!r}: give 'package.module:attribute', or a mapping with name: and its options")
    if ":" not in path:
        raise ValueError(f"'{path}' is not of the form 'package.module:attribute'")
    target = import_attribute(path)
    if not (is_callback(target) or callable(target)):
        raise ValueError(f"'{path}' is neither a callback nor a class or factory making one")
    if is_callback(target) and options:
        raise ValueError(f"'{path}' is a callback object, which takes no options: {sorted(options)}")
    return path, target, options


def check_callback_spec(spec: str | dict[str, Any]) -> None:
    """Import the callback and check its options against its signature, without making it."""
    path, target, options = _resolve(spec)
    if not is_callback(target):
        try:
            inspect.signature(target).bind(**options)
        except TypeError as error:
            raise ValueError(f"'{path}': {error}") from None
        except ValueError:  # no signature to read (a builtin): building it will tell
            pass


def build_callback(spec: str | dict[str, Any]) -> Any:
    path, target, options = _resolve(spec)
    callback = target if is_callback(target) else target(**options)
    if not is_callback(callback):
        raise TypeError(f"'{path}' made a {type(callback).__name__}, which has none of the events {EVENTS}")
    return callback


def build_callbacks(specs: list[str | dict[str, Any]]) -> list[Any]:
    return [build_callback(spec) for spec in specs]


# checkpoint state ----------------------------------------------------------------------------------
def _stateful(callbacks: list[Any]) -> list[Any]:
    return [c for c in callbacks if callable(getattr(c, "state_dict", None))]


def callbacks_state(callbacks: list[Any]) -> list[dict[str, Any]]:
    return [{"class": type(c).__qualname__, "state": c.state_dict()} for c in _stateful(callbacks)]


def load_callbacks_state(callbacks: list[Any], saved: list[dict[str, Any]]) -> None:
    stateful = _stateful(callbacks)
    names, saved_names = [type(c).__qualname__ for c in stateful], [s["class"] for s in saved]
    if names != saved_names:
        raise ValueError(f"the checkpoint holds the state of callbacks {saved_names}, but this run's stateful "
                         f"callbacks are {names}; resume with the callbacks it was started with")
    for callback, entry in zip(stateful, saved, strict=True):
        callback.load_state_dict(entry["state"])


__all__ = ["EVENTS", "Callback", "StepInfo", "build_callback", "build_callbacks", "callbacks_state",
           "check_callback_spec", "fire", "is_callback", "load_callbacks_state"]
