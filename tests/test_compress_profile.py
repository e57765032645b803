"""Profiling: FLOPs against hand counts, latency statistics, peak memory, ONNX Runtime sessions."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from kdistill.compress.export import export_onnx
from kdistill.evaluate.profile import (
    PROFILE_HEADER,
    fixed_threads,
    flops,
    peak_memory_bytes,
    profile_cells,
    profile_model,
    profile_onnx,
    time_calls,
)


def test_flops_match_hand_counts():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 10))
    assert flops(mlp, torch.zeros(1, 1, 28, 28)) == 2 * (784 * 8 + 8 * 10)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert flops(conv, torch.zeros(1, 3, 8, 8)) == 2 * (3 * 9) * 4 * 64
    assert flops(mlp, torch.zeros(5, 1, 28, 28)) == 5 * 2 * (784 * 8 + 8 * 10)


def test_latency_is_a_median_with_its_spread():
    latency = time_calls(lambda: time.sleep(0.002), repeats=7, warmup=1)
    assert 2.0 <= latency.median_ms < 50
    assert latency.p10_ms <= latency.median_ms <= latency.p90_ms and latency.repeats == 7
    with pytest.raises(ValueError):
        time_calls(lambda: None, repeats=0)


def test_the_spread_of_few_repeats_stays_within_the_measured_times():
    # statistics.quantiles' default (exclusive) extrapolates below 9 points: 1 and 10 ms gave p10 -5.3
    from kdistill.evaluate.profile import time_calls

    durations = iter([0.001, 0.010])
    latency = time_calls(lambda: time.sleep(next(durations)), repeats=2, warmup=0)
    assert 0 < latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert latency.p90_ms < 60  # within the slowest call (10 ms, plus a loaded machine's slack)


def test_fixed_threads_restores_the_count():
    before = torch.get_num_threads()
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_peak_memory_grows_with_the_batch_and_covers_the_activations():
    model = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 10))
    small = peak_memory_bytes(model, torch.zeros(1, 256))
    large = peak_memory_bytes(model, torch.zeros(512, 256))
    if small is None:
        pytest.skip("this torch's profiler gives no memory timeline")
    assert large >= small + 512 * 2048 * 4 * 0.9  # at least the hidden activations of the larger batch


def test_profile_of_torch_and_onnx_models(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    sample = torch.randn(16, 1, 8, 8)
    record = profile_model(model, sample, batch_size=32, repeats=5, warmup=1).as_record()
    assert record["parameters"] == 64 * 32 + 32 + 32 * 10 + 10 == record["nonzero_parameters"]
    assert record["flops_per_sample"] == 2 * (64 * 32 + 32 * 10) and record["batch_size"] == 32
    assert record["latency_b1_p10_ms"] <= record["latency_b1_ms"] <= record["latency_b1_p90_ms"]
    path = export_onnx(model, sample, tmp_path / "m.onnx")
    onnx = profile_onnx(path, sample, batch_size=32, repeats=5, warmup=1)
    assert onnx["size_bytes"] == path.stat().st_size and onnx["latency_batch_ms"] > 0
    assert len(profile_cells(record)) == len(PROFILE_HEADER) == len(profile_cells(onnx))


def test_the_report_section_lists_profiled_rows_only():
    from kdistill.evaluate.profile_report import profile_section
    from kdistill.results import ModelResult

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    record = profile_model(model, torch.randn(4, 1, 8, 8), batch_size=8, repeats=3, warmup=0).as_record()
    rows = [ModelResult("teacher", 0.9, 650, 3000, 0.1), ModelResult("student", 0.8, 650, 3000, 0.1,
                                                                     extra={"profile": record})]
    lines = profile_section(rows)
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 2 and table[1].startswith("| student | 650 |") and "batch 8" in table[0]
    assert profile_section(rows[:1]) == []


def test_interleaved_latency_tells_a_slow_call_from_a_fast_one():
    from kdistill.evaluate.profile import interleaved_latency

    found = interleaved_latency({"slow": lambda: time.sleep(0.004), "fast": lambda: None}, repeats=5, warmup=1)
    assert found["slow"].median_ms >= 4.0 > found["fast"].median_ms and found["slow"].repeats == 5


class PairInput(nn.Module):
    """A model called with one tuple of two tensors (a two-view input)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, pair):
        first, second = pair
        return self.a(first) + self.b(second)


def test_batches_of_tuples_and_mappings_are_sliced_along_the_batch_axis():
    from collections import UserDict

    from kdistill.evaluate.profile import batch_of, first_rows

    rows = torch.arange(6.0).reshape(3, 2)
    sample = UserDict({"x": rows, "pair": (rows, [rows]), "scale": torch.tensor(2.0), "names": ["a", "b", "c"]})
    one = first_rows(sample, 1)
    assert torch.equal(one["x"], rows[:1]) and torch.equal(one["pair"][1][0], rows[:1])
    assert one["scale"].dim() == 0 and one["names"] == ["a", "b", "c"]  # not batched: passed through
    five = batch_of(sample, 5)
    assert torch.equal(five["pair"][0], rows[[0, 1, 2, 0, 1]]) and isinstance(five["pair"][1], list)
    # a tuple-input model is profiled like any other: FLOPs by hand (two 4 -> 3 layers per sample)
    pair = (torch.randn(3, 4), torch.randn(3, 4))
    record = profile_model(PairInput(), pair, batch_size=4, repeats=2, warmup=0).as_record()
    assert record["flops_per_sample"] == 2 * 2 * 4 * 3 and record["batch_size"] == 4


def test_a_run_row_keeps_accuracy_and_latency_when_its_profile_fails(monkeypatch, caplog):
    import types

    import kdistill.run.profiling as profiling
    from kdistill.data.transforms import Normalize

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, index):
            return (torch.randn(4), torch.randn(4)), index % 3

    bundle = types.SimpleNamespace(test=Pairs())
    row = profiling.profile_row("student", PairInput(), bundle, Normalize(None, None), None, accuracy=0.5)
    assert row.extra["profile"]["parameters"] == 30 and row.latency_ms > 0

    def broken(*_args, **_kwargs):
        raise RuntimeError("the profiler broke")

    monkeypatch.setattr(profiling, "profile_model", broken)
    row = profiling.profile_row("student", PairInput(), bundle, Normalize(None, None), None, accuracy=0.5)
    assert row.accuracy == 0.5 and row.latency_ms > 0 and row.extra == {}
    assert "no deployment profile for the student (RuntimeError: the profiler broke)" in caplog.text
