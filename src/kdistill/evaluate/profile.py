"""What a deployment cares about: parameters, bytes on disk, FLOPs, CPU latency, peak memory.

Latency is measured the way a busy shared machine cannot fake: a fixed thread count, warm-up runs
that are thrown away, then repeats reported as the median with the spread (10th to 90th
percentile). A machine under load shows up as a wide spread instead of a wrong single number.
The same measurements exist for an ONNX Runtime session, so an exported (and quantised) model is
profiled exactly like the PyTorch one it came from.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.engine.batch import call_model
from kdistill.engine.device import move_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Parameters that are not exactly zero: what unstructured pruning reduces (dense size does not change)."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def size_on_disk_bytes(model: nn.Module) -> int:
    """Bytes of the serialised state dict (what `torch.save(model.state_dict())` writes)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, sample: Any, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass on `sample` (a batch) on the CPU, in milliseconds."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    move_model(model, "cpu")
    times = []
    for index in range(warmup + repeats):
        started = time.perf_counter()
        call_model(model, sample)
        if index >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    move_model(model, device)
    model.train(was_training)
    return statistics.median(times)


@dataclass(frozen=True)
class Latency:
    """Repeated wall times of one call: the median and the 10th-90th percentile spread, in ms."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    threads: int

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: near 0 on a quiet machine, large when other work interferes."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else float("nan")

    def __str__(self) -> str:
        return f"{self.median_ms:.3f} ms [{self.p10_ms:.3f}-{self.p90_ms:.3f}]"


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run the body with torch's intra-op thread count set to `threads`, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_calls(call: Callable[[], Any], repeats: int = 30, warmup: int = 5, threads: int = 1) -> Latency:
    """Time `call` `repeats` times after `warmup` discarded calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    times = []
    for index in range(warmup + repeats):
        started = time.perf_counter()
        call()
        if index >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return Latency(statistics.median(times), deciles[0], deciles[-1], repeats, threads)


def interleaved_latency(calls: dict[str, Callable[[], Any]], repeats: int = 100, warmup: int = 10,
                        threads: int = 1) -> dict[str, Latency]:
    """Latency of several calls measured in turns (a, b, a, b, ...), so that load from other work
    falls on all of them alike: the fair way to compare two models on a shared machine."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    with fixed_threads(threads):
        for index in range(warmup + repeats):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                if index >= warmup:
                    times[name].append((time.perf_counter() - started) * 1000)
    result = {}
    for name, values in times.items():
        deciles = statistics.quantiles(values, n=10, method="inclusive") if len(values) > 1 else [values[0]] * 9
        result[name] = Latency(statistics.median(values), deciles[0], deciles[-1], repeats, threads)
    return result


@contextlib.contextmanager
def cpu_eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode on the CPU for the body; its device and mode restored after."""
    was_training = model.training
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    move_model(model.eval(), "cpu")
    try:
        yield model
    finally:
        move_model(model, device)
        model.train(was_training)


def torch_latency(model: nn.Module, sample: Any, repeats: int = 30, warmup: int = 5, threads: int = 1) -> Latency:
    """CPU latency of one forward pass of `model` on `sample` at a fixed thread count."""
    with cpu_eval_mode(model), fixed_threads(threads), torch.inference_mode():
        return time_calls(lambda: call_model(model, sample), repeats, warmup, threads)


def flops(model: nn.Module, sample: Any) -> int:
    """Floating-point operations of one forward pass on `sample` (`torch.utils.flop_counter`: a
    multiply-add counts 2). Operators it has no formula for (e.g. element-wise ones) count 0."""
    from torch.utils.flop_counter import FlopCounterMode

    with cpu_eval_mode(model), torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            call_model(model, sample)
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for the body: the profiler's C++ side logs its start and stop there."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_bytes(model: nn.Module, sample: Any) -> int | None:
    """Peak bytes held by torch's CPU allocator during one forward pass (weights, activations and
    workspace), from the profiler's memory timeline. None where the profiler cannot say (its memory
    timeline is a private torch API: a torch release may change it)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with cpu_eval_mode(model), torch.no_grad():
            call_model(model, sample)  # allocations of a first call (lazy init) are not the model's
            with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                                          record_shapes=True, with_stack=True) as profiler:
                call_model(model, sample)
        _, sizes = MemoryProfileTimeline(profiler._memory_profile())._coalesce_timeline(torch.device("cpu"))
        return int(max(sum(row) for row in sizes)) if sizes else 0
    except Exception:  # noqa: BLE001 - a private API: any failure means "unknown", never a wrong number
        return None


def _rows_of(sample: Any, take: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`take` applied along the batch axis of every batched tensor in `sample` (a tensor, or a
    mapping / tuple / list of them, as `call_model` accepts); anything else (a 0-d tensor, a string,
    a flag) is passed through unchanged."""
    if torch.is_tensor(sample):
        return take(sample) if sample.dim() > 0 else sample
    if isinstance(sample, Mapping):
        return {key: _rows_of(value, take) for key, value in sample.items()}
    if isinstance(sample, (tuple, list)):
        return type(sample)(_rows_of(value, take) for value in sample)
    return sample


def first_rows(sample: Any, count: int) -> Any:
    """The first `count` rows of a batch: a tensor, or a dict of tensors (a text model's `input_ids`,
    `attention_mask`) or a tuple of them, each sliced along the batch axis."""
    return _rows_of(sample, lambda tensor: tensor[:count].contiguous())


def batch_of(sample: Any, batch_size: int) -> Any:
    """`batch_size` rows from `sample` (as `first_rows` takes it), repeating it when it has fewer."""

    def repeat(tensor: torch.Tensor) -> torch.Tensor:
        repeats = -(-batch_size // tensor.shape[0])
        return tensor.repeat(repeats, *([1] * (tensor.dim() - 1)))[:batch_size].contiguous()

    return _rows_of(sample, repeat)


@dataclass
class Profile:
    """One model's deployment columns. Latencies at batch 1 and at `batch_size`."""

    parameters: int
    nonzero_parameters: int
    size_bytes: int
    flops_per_sample: int | None
    latency_b1: Latency
    latency_batch: Latency
    batch_size: int
    peak_memory_bytes: int | None

    def as_record(self) -> dict[str, Any]:
        """A flat JSON-able dict (benchmark records, report rows)."""
        record = {k: v for k, v in asdict(self).items() if not k.startswith("latency")}
        for name, latency in (("b1", self.latency_b1), ("batch", self.latency_batch)):
            record.update({f"latency_{name}_ms": latency.median_ms, f"latency_{name}_p10_ms": latency.p10_ms,
                           f"latency_{name}_p90_ms": latency.p90_ms})
        record["threads"] = self.latency_b1.threads
        return record


def profile_model(model: nn.Module, sample: Any, batch_size: int = 64, threads: int = 1,
                  repeats: int = 30, warmup: int = 5) -> Profile:
    """Everything in `Profile` for a PyTorch model; `sample` is a batch of real (normalised) inputs:
    a tensor, or a dict of tensors for a model called with keywords (a Hugging Face text model)."""
    one, batch = first_rows(sample, 1), batch_of(sample, batch_size)
    return Profile(count_parameters(model), count_nonzero_parameters(model), size_on_disk_bytes(model),
                   flops(model, one), torch_latency(model, one, repeats, warmup, threads),
                   torch_latency(model, batch, repeats, warmup, threads), batch_size,
                   peak_memory_bytes(model, batch))


def onnx_session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with a fixed thread count (intra- and inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_latency(path: str | Path, sample: torch.Tensor, repeats: int = 30, warmup: int = 5,
                 threads: int = 1) -> Latency:
    """CPU latency of one ONNX Runtime run on `sample` at a fixed thread count."""
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    feed = {name: sample.detach().cpu().numpy()}
    return time_calls(lambda: session.run(None, feed), repeats, warmup, threads)


def onnx_peak_memory_bytes(path: str | Path, sample: torch.Tensor) -> int | None:
    """Resident memory an ONNX Runtime session adds to a fresh process by loading the model and
    running it once (VmHWM after minus VmRSS before, Linux /proc): the session's arena, weights and
    activations. Measured in a child process so that this process's memory does not count. None
    off Linux or when the child fails."""
    import subprocess
    import sys
    import tempfile

    import numpy as np

    if not Path("/proc/self/status").exists():
        return None
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "sample.npy"
        np.save(inputs, sample.detach().cpu().numpy())
        script = (
            "import sys, numpy as np, onnxruntime as ort\n"
            "def kb(key):\n"
            "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
            "x = np.load(sys.argv[2]); before = kb('VmRSS:')\n"
            "o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1\n"
            "s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
            "s.run(None, {s.get_inputs()[0].name: x}); print(1024 * (kb('VmHWM:') - before))\n")
        done = subprocess.run([sys.executable, "-c", script, str(path), str(inputs)], capture_output=True, text=True,
                              timeout=300)
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        return None
    return int(done.stdout.strip())


def profile_onnx(path: str | Path, sample: torch.Tensor, batch_size: int = 64, threads: int = 1,
                 repeats: int = 30, warmup: int = 5) -> dict[str, Any]:
    """The ONNX Runtime model's columns: size of the file, latency at batch 1 and `batch_size`, peak
    memory. (Parameters and FLOPs are those of the PyTorch model it was exported from.)"""
    one, batch = sample[:1].contiguous(), batch_of(sample, batch_size)
    b1 = onnx_latency(path, one, repeats, warmup, threads)
    big = onnx_latency(path, batch, repeats, warmup, threads)
    return {"size_bytes": Path(path).stat().st_size, "batch_size": batch_size, "threads": threads,
            "latency_b1_ms": b1.median_ms, "latency_b1_p10_ms": b1.p10_ms, "latency_b1_p90_ms": b1.p90_ms,
            "latency_batch_ms": big.median_ms, "latency_batch_p10_ms": big.p10_ms,
            "latency_batch_p90_ms": big.p90_ms, "peak_memory_bytes": onnx_peak_memory_bytes(path, batch)}


# the report's profiling columns: one header and one function, for the run report and `kdistill compress` alike
PROFILE_HEADER = ["params", "size", "MFLOPs / sample", "CPU ms batch 1 [p10-p90]", "CPU ms batch N [p10-p90]",
                  "peak memory"]


def _bytes(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def profile_cells(record: dict[str, Any]) -> list[str]:
    """`PROFILE_HEADER`'s cells for a `Profile.as_record()` (or `profile_onnx`) dict; "-" where unknown.
    Parameters show the non-zero count too when pruning zeroed some."""
    params = record.get("parameters")
    nonzero = record.get("nonzero_parameters")
    shown = "-" if params is None else f"{params:,}"
    if params is not None and nonzero is not None and nonzero < params:
        shown += f" ({nonzero:,} non-zero)"
    flop_count = record.get("flops_per_sample")

    def latency(name: str) -> str:
        if record.get(f"latency_{name}_ms") is None:
            return "-"
        return (f"{record[f'latency_{name}_ms']:.3f} [{record[f'latency_{name}_p10_ms']:.3f}-"
                f"{record[f'latency_{name}_p90_ms']:.3f}]")

    return [shown, _bytes(record.get("size_bytes")), "-" if not flop_count else f"{flop_count / 1e6:.3g}",
            latency("b1"), latency("batch"), _bytes(record.get("peak_memory_bytes"))]
