"""A latency target for pruning: the selection logic with an injected latency measure (no timed
assertion), and one real timed run that completes and reports the latency it measured."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from kdistill.compress.pipeline import CompressionPipeline
from kdistill.compress.prune import MAX_TARGET_RATIO, TARGET_GRANULARITY, StructuredPruning
from kdistill.compress.spec import CompressSpec
from kdistill.data.transforms import Normalize
from kdistill.evaluate.profile import count_parameters
from kdistill.models import build_model

NOTE = re.compile(r"latency ([\d.e+-]+) ms at batch 1 \(target ([\d.e+-]+) = (\d+)% of ([\d.e+-]+)\)")


def mlp(bundle, hidden):
    torch.manual_seed(0)
    return build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": hidden}).eval()


def spec_for(share: float, repeats: int = 2) -> CompressSpec:
    return CompressSpec.model_validate({"stages": ["prune"], "prune": {"target_latency": share},
                                        "profile": {"repeats": repeats, "warmup": 0, "batch_size": 8}})


def test_the_first_step_of_the_schedule_under_the_target_is_chosen(digits, tmp_path):
    """A stand-in latency (1 ms per 1,000 parameters): the pipeline keeps pruning while it is above
    half the start's and stops at the first step under it, the step the schedule alone predicts."""
    bundle, train, val = digits
    model = mlp(bundle, [64, 64])
    calls = []

    def fake_ms(m):
        calls.append(count_parameters(m))
        return count_parameters(m) / 1000

    start = fake_ms(model)
    # the oracle: the same fine schedule by hand, stepping until the stand-in is at or under half
    oracle, sizes = copy.deepcopy(model), [count_parameters(model)]
    schedule = StructuredPruning(oracle, torch.zeros(2, *bundle.input_shape), MAX_TARGET_RATIO, TARGET_GRANULARITY)
    while sizes[-1] / 1000 > 0.5 * start:
        schedule.step()
        sizes.append(count_parameters(oracle))
    assert len(sizes) > 3  # several steps: the stop is a choice, not the first or last step

    calls.clear()
    result = CompressionPipeline(spec_for(0.5), copy.deepcopy(model), train, bundle.test, Normalize(bundle.mean,
                                 bundle.std), tmp_path, val=val, latency=fake_ms).run()
    pruned = result.rows[1]
    assert pruned.stage == "prune to 50% of latency"
    assert count_parameters(result.model) == sizes[-1] and sizes[-2] / 1000 > 0.5 * start
    # the start (for the goal), the candidate before its first step, then once after each step: every
    # selection read the injected measure
    assert calls == [sizes[0], *sizes]
    reached, target, share, begin = map(float, NOTE.search(pruned.note).groups())
    assert (reached, target, share, begin) == pytest.approx((sizes[-1] / 1000, 0.5 * start, 50, start), rel=1e-3)


def test_an_unreachable_latency_target_is_refused_with_the_fix(digits, tmp_path):
    from kdistill.errors import BadInput

    bundle, train, val = digits
    pipeline = CompressionPipeline(spec_for(0.01), mlp(bundle, [32]), train, bundle.test,
                                   Normalize(bundle.mean, bundle.std), tmp_path, val=val, latency=lambda m: 1.0)
    with pytest.raises(BadInput, match="out of reach .* ask for less"):
        pipeline.choose()


def test_a_real_latency_target_run_reports_what_it_measured(digits, tmp_path):
    """Timed on this CPU: no assertion on the times, only that the run completes and reports them."""
    bundle, train, val = digits
    result = CompressionPipeline(spec_for(0.7, repeats=10), mlp(bundle, [1024, 1024]), train, bundle.test,
                                 Normalize(bundle.mean, bundle.std), tmp_path, val=val).run()
    pruned = result.rows[1]
    reached, target, _, begin = map(float, NOTE.search(pruned.note).groups())
    assert reached <= target == pytest.approx(0.7 * begin, rel=1e-3)  # the loop's own guarantee
    assert pruned.profile["latency_b1_ms"] > 0 and 0 <= pruned.accuracy <= 1
