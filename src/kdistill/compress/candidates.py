"""The models a prune stage tries, in order: one per ratio (structured channels, whole attention
heads, or unstructured weights), each reached from the previous candidate's model; or one pruned
in fine steps to a FLOPs or batch-1 latency target. The pipeline recovers and judges each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from kdistill.compress.prune import StructuredPruning, UnstructuredPruning, prune_to_target
from kdistill.compress.spec import PruneSpec
from kdistill.evaluate.profile import first_rows, flops


@dataclass
class Pruned:
    """What one pruning step leaves to do: finalise masks (unstructured), and a note for its row."""

    finalize: Callable[[], None] | None = None
    note: str = ""


Step = Callable[[nn.Module], Pruned]


def prune_candidates(spec: PruneSpec, start: nn.Module, sample: Any,
                     latency: Callable[[nn.Module], float]) -> Iterator[tuple[str, Step]]:
    """(label, function pruning a model in place) for each candidate, in order. `sample` is a batch
    of real inputs (graphs are traced on two rows, FLOPs counted on one); `latency` gives a model's
    batch-1 latency in ms, read by a latency target only; `start` is the model a target is a share of."""
    if spec.target_flops is not None or spec.target_latency is not None:
        yield to_target(spec, start, sample, latency)
        return
    two, previous = first_rows(sample, 2), 0.0
    for ratio in spec.ratios:
        relative = 1 - (1 - ratio) / (1 - previous)  # from the previous (already pruned) model
        if spec.kind == "structured":
            def structured(model: nn.Module, r: float = relative) -> Pruned:
                StructuredPruning(model, two, r, 1, spec.importance, spec.ignore).step()
                return Pruned()
            yield f"{ratio:.0%}", structured
        elif spec.kind == "heads":
            def heads(model: nn.Module, r: float = round(relative, 9)) -> Pruned:
                # rounded: 1 - 0.5 / 0.75 is 0.33333333333333337, and ceil of that times 3 heads is 2, not 1
                from kdistill.compress.heads import prune_attention_heads

                left = prune_attention_heads(model, two, r, spec.importance)
                return Pruned(note=f"heads left per layer: {sorted(set(left.values()))}")
            yield f"{ratio:.0%} of heads", heads
        else:
            def unstructured(model: nn.Module, r: float = ratio) -> Pruned:
                pruning = UnstructuredPruning(model, r, 1, spec.ignore)  # zeros so far are the smallest
                pruning.step()
                return Pruned(finalize=pruning.finalize)
            yield f"{ratio:.0%} of weights", unstructured
        previous = ratio


def to_target(spec: PruneSpec, start: nn.Module, sample: Any,
              latency: Callable[[nn.Module], float]) -> tuple[str, Step]:
    """The one candidate of a FLOPs or latency target: `start`'s measure times the share is the goal,
    reached in Torch-Pruning steps (`prune.prune_to_target`); its note says what was measured."""
    one = first_rows(sample, 1)
    if spec.target_flops is not None:
        share, what, unit = spec.target_flops, "FLOPs", ""

        def measure(model: nn.Module) -> float:
            return flops(model, one)
    else:
        share, what, unit, measure = spec.target_latency, "latency", " ms", latency
    goal = share * (begin := measure(start))

    def prune(model: nn.Module) -> Pruned:
        reached = prune_to_target(model, first_rows(sample, 2), measure, goal, spec.importance, spec.ignore)
        return Pruned(note=f"{what} {reached:.4g}{unit} at batch 1 (target {goal:.4g} = {share:.0%} of {begin:.4g})")
    return f"to {share:.0%} of {what}", prune
