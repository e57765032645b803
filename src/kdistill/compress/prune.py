"""Pruning: structured (channels / neurons removed, the network really shrinks) through
Torch-Pruning's dependency graph, and unstructured magnitude pruning (weights zeroed).

Structured pruning is dependency-aware: channels joined by a residual sum, a concatenation or a
BatchNorm are removed together, so the pruned network still runs. The graph analysis is
Torch-Pruning's; kdistill adds only `compress.shortcuts` for the option-A CIFAR ResNet shortcut,
which Torch-Pruning 1.6 mis-traces. Both kinds go by a target ratio or a target measure (FLOPs,
latency: any `model -> number`), one-shot (`steps=1`) or iteratively (the caller recovers accuracy
between steps: see `compress.recover`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from kdistill.compress.shortcuts import ChannelShortcut, ChannelShortcutPruner, replace_pad_shortcuts
from kdistill.errors import BadInput

IMPORTANCES = {"l1": 1, "l2": 2}
MAX_TARGET_RATIO = 0.95  # a measure target never removes more than this share of any layer's channels
TARGET_GRANULARITY = 60  # steps of the fine schedule a measure target is reached by


def check_ratio(name: str, ratio: float) -> float:
    if not 0 < ratio < 1:
        raise BadInput(f"{name}: must be between 0 and 1, exclusive (got {ratio}); e.g. 0.5 removes half")
    return float(ratio)


def module_by_path(model: nn.Module, path: str) -> nn.Module:
    names = dict(model.named_modules())
    if path not in names:
        close = [n for n in names if n and (path in n or n in path)][:5]
        raise BadInput(f"prune.ignore: no module {path!r} in the model" + (f"; close: {close}" if close else ""))
    return names[path]


def classifier(model: nn.Module) -> list[nn.Module]:
    """The last Linear layer: its outputs are the classes, never pruned."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


class _Steps:
    """The step count both pruners share: `steps` steps, each taken once."""

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise BadInput(f"prune.steps: must be >= 1 (got {steps})")
        self.steps, self.done = steps, 0

    @property
    def finished(self) -> bool:
        return self.done >= self.steps

    def _next(self) -> None:
        if self.finished:
            raise RuntimeError(f"all {self.steps} pruning steps are done")


class StructuredPruning(_Steps):
    """Channel / neuron pruning of `model` in place, `steps` steps to `ratio` of each layer's
    prunable channels (Torch-Pruning's `MetaPruner`, magnitude importance).

    `example` is one batch of inputs the graph is traced on. `ignore` names modules whose outputs
    are kept whole (the classifier is always kept)."""

    def __init__(self, model: nn.Module, example: Any, ratio: float, steps: int = 1, importance: str = "l2",
                 ignore: Sequence[str] = (), global_ranking: bool = False) -> None:
        check_ratio("prune.ratio", ratio)
        super().__init__(steps)
        if importance not in IMPORTANCES:
            raise BadInput(f"prune.importance: must be one of {sorted(IMPORTANCES)} (got {importance!r})")
        self.model, self.example = model, example
        self.shortcuts_replaced = replace_pad_shortcuts(model)
        ignored = classifier(model) + [module_by_path(model, path) for path in ignore]
        self.pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=IMPORTANCES[importance]),
            pruning_ratio=ratio, iterative_steps=steps, ignored_layers=ignored, global_pruning=global_ranking,
            customized_pruners={ChannelShortcut: ChannelShortcutPruner()})

    def step(self) -> None:
        """Remove the next step's channels (in place; the optimiser of the old weights is stale)."""
        self._next()
        was_training = self.model.training
        self.model.eval()
        self.pruner.step()
        self.model.train(was_training)
        self.done += 1


def prune_to_target(model: nn.Module, example: Any, measure: Callable[[nn.Module], float], target: float,
                    importance: str = "l2", ignore: Sequence[str] = (), max_ratio: float = MAX_TARGET_RATIO,
                    granularity: int = TARGET_GRANULARITY) -> float:
    """Prune structurally in fine steps until `measure(model) <= target` (e.g. FLOPs or latency);
    returns the measure reached (each of the `granularity` steps removes `max_ratio / granularity` of
    every layer). Raises `BadInput` if even `max_ratio` of every layer does not reach it."""
    pruning = StructuredPruning(model, example, max_ratio, granularity, importance, ignore)
    value = measure(model)
    while value > target:
        if pruning.finished:
            raise BadInput(f"prune target: {target:g} is out of reach (pruning {max_ratio:.0%} of every layer "
                           f"gives {value:g}); ask for less")
        pruning.step()
        value = measure(model)
    return value


def prunable_weights(model: nn.Module, ignore: Sequence[str] = ()) -> list[tuple[nn.Module, str]]:
    """(module, "weight") of every Conv and Linear layer but the classifier and `ignore`."""
    skipped = {id(m) for m in classifier(model)} | {id(module_by_path(model, p)) for p in ignore}
    return [(m, "weight") for m in model.modules()
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear) and id(m) not in skipped]


class UnstructuredPruning(_Steps):
    """Global magnitude pruning (the smallest |w| over all prunable layers are zeroed), `steps`
    steps to a total `sparsity`. Masks stay attached while recovery trains (pruned weights stay
    zero); `finalize()` bakes the zeros into the weights and removes the masks and their hooks."""

    def __init__(self, model: nn.Module, sparsity: float, steps: int = 1, ignore: Sequence[str] = ()) -> None:
        check_ratio("prune.ratio", sparsity)
        super().__init__(steps)
        self.model, self.sparsity = model, sparsity
        self.weights = prunable_weights(model, ignore)

    def step(self) -> None:
        self._next()
        before = self.sparsity * self.done / self.steps
        after = self.sparsity * (self.done + 1) / self.steps
        # torch's amount is a share of the weights still unpruned
        torch_prune.global_unstructured(self.weights, pruning_method=torch_prune.L1Unstructured,
                                        amount=(after - before) / (1 - before))
        self.done += 1

    def finalize(self) -> None:
        for module, name in self.weights:
            if torch_prune.is_pruned(module):
                torch_prune.remove(module, name)


def baked_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with its pruning masks applied and removed: what it will be once finalised
    (profile this one: a masked model carries each weight twice, plus the mask)."""
    import copy

    def masked(module: nn.Module) -> list[str]:
        return [n.removesuffix("_orig") for n, _ in module.named_parameters(recurse=False) if n.endswith("_orig")]

    for module in model.modules():  # the masked weight is a non-leaf tensor, which deepcopy refuses; the
        for name in masked(module):  # mask's pre-hook recomputes it at the next forward anyway
            setattr(module, name, (getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")).detach())
    baked = copy.deepcopy(model)
    for module in baked.modules():
        for name in masked(module):
            torch_prune.remove(module, name)
    return baked


def sparsity(model: nn.Module, ignore: Sequence[str] = ()) -> float:
    """Share of zero weights over the prunable layers."""
    tensors = [getattr(m, n) for m, n in prunable_weights(model, ignore)]
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / total if total else 0.0


def residual_shapes_consistent(model: nn.Module, example: torch.Tensor) -> bool:
    """True when every residual block's main path and shortcut give the same shape on `example`
    (blocks with `conv1`/`shortcut`, as the CIFAR ResNets have)."""
    problems: list[str] = []

    def check(block: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0]
        main = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        if main.shape != block.shortcut(x).shape:
            problems.append(f"{type(block).__name__}: {tuple(main.shape)} vs {tuple(block.shortcut(x).shape)}")

    blocks = [m for m in model.modules() if all(hasattr(m, a) for a in ("conv1", "conv2", "bn1", "bn2", "shortcut"))]
    handles = [b.register_forward_hook(check) for b in blocks]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return bool(blocks) and not problems
