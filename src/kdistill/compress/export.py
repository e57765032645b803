"""Export: ONNX with a dynamic batch axis (checked against PyTorch by running ONNX Runtime on real
inputs) and safetensors weights.

An exported model is the user's module alone: no distillation parts. kdistill's taps are forward
hooks and a pruning mask is a forward pre-hook, so `check_clean` refuses a model that still holds
any hook, a pruning mask (`weight_orig`) or a parametrization; the teacher, adapters and the
methods' parameters live outside the student and never reach it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdistill.errors import BadInput
from kdistill.evaluate.profile import cpu_eval_mode

DEFAULT_ATOL = 1e-4  # float32 ONNX Runtime vs PyTorch: kernels differ in summation order
DEFAULT_RTOL = 1e-3
OPSET = 18


class ExportMismatch(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the stated tolerance."""


def distillation_leftovers(model: nn.Module) -> list[str]:
    """What in `model` is not the bare network: hooks, pruning masks, parametrizations."""
    found = []
    for path, module in model.named_modules():
        name = path or "(root)"
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs"):
            if getattr(module, kind, None):
                found.append(f"{name}: {kind.strip('_').replace('_', ' ')}")
        if any(n.endswith("_orig") for n, _ in module.named_parameters(recurse=False)):
            found.append(f"{name}: pruning mask (finalize the pruning first)")
        if getattr(module, "parametrizations", None):
            found.append(f"{name}: parametrization")
    return found


def check_clean(model: nn.Module) -> None:
    """Raise `BadInput` naming every hook, mask or parametrization left in `model`."""
    left = distillation_leftovers(model)
    if left:
        raise BadInput(f"export: the model still holds distillation or pruning parts ({'; '.join(left[:5])}); "
                       "remove taps (DistillationLoss exit / Distiller.detach_taps) and finalize pruning first")


def save_safetensors(model: nn.Module, path: str | Path) -> Path:
    """The model's weights as safetensors (tied tensors stored once)."""
    from safetensors.torch import save_model

    check_clean(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path


def export_onnx(model: nn.Module, sample: torch.Tensor, path: str | Path, opset: int = OPSET) -> Path:
    """Write `model` (run in eval mode on the CPU, then left as it came) as one ONNX file whose first
    input axis (the batch) is dynamic. `sample` is a batch of real inputs (at least 2 rows, so the
    batch axis is not fixed to 1)."""
    check_clean(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = sample.detach().cpu()
    if sample.shape[0] < 2:
        sample = sample.repeat(2, *([1] * (sample.dim() - 1)))
    batch = torch.export.Dim("batch")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # the exporter prints its progress and warns of torch-internal deprecations
    with cpu_eval_mode(model), contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(model, (sample,), dynamo=True, dynamic_shapes=({0: batch},),
                                    input_names=["input"], output_names=["logits"], opset_version=opset,
                                    verbose=False)
    program.save(str(path), external_data=False)
    drop_intermediate_shapes(path)
    return path


def drop_intermediate_shapes(path: Path) -> None:
    """Remove the exporter's shapes of intermediate values (`value_info`): readers infer them again.
    Seen with torch 2.11's exporter and ONNX Runtime 1.30 (a GPU machine's stack): a recorded
    shape that disagreed with ONNX's own inference (784 vs 256 on a Linear's weight) made ONNX
    Runtime's quantiser refuse the file; the graph itself was right."""
    import onnx

    graph = onnx.load(str(path))
    if len(graph.graph.value_info):
        del graph.graph.value_info[:]
        onnx.save(graph, str(path))


@dataclass(frozen=True)
class OnnxCheck:
    """ONNX Runtime against PyTorch on the same inputs."""

    max_abs_diff: float
    atol: float
    rtol: float
    batch_sizes: tuple[int, ...]
    argmax_agreement: float


def check_onnx(model: nn.Module, path: str | Path, inputs: torch.Tensor, atol: float = DEFAULT_ATOL,
               rtol: float = DEFAULT_RTOL, batch_sizes: tuple[int, ...] = (1, 7)) -> OnnxCheck:
    """Run the ONNX file and the model on `inputs` (real data) split into batches of each size in
    `batch_sizes` (proving the batch axis is dynamic); raise `ExportMismatch` when any output
    differs by more than `atol + rtol * |pytorch|` (numpy's allclose rule)."""
    from kdistill.evaluate.profile import onnx_session

    session = onnx_session(path)
    name = session.get_inputs()[0].name
    worst, agree, total, close = 0.0, 0, 0, True
    with cpu_eval_mode(model):
        for size in batch_sizes:
            for chunk in inputs.detach().cpu().split(size):
                with torch.no_grad():
                    expected = model(chunk).numpy()
                got = session.run(None, {name: chunk.numpy()})[0]
                if got.shape != expected.shape:
                    raise ExportMismatch(f"ONNX output shape {got.shape} != PyTorch {expected.shape} at batch {size}")
                worst = max(worst, float(np.abs(got - expected).max()))
                close &= bool(np.allclose(got, expected, atol=atol, rtol=rtol))
                agree += int((got.argmax(1) == expected.argmax(1)).sum())
                total += len(chunk)
    if not close:
        raise ExportMismatch(f"ONNX Runtime differs from PyTorch by up to {worst:.3g} (tolerance atol {atol:g}, "
                             f"rtol {rtol:g})")
    return OnnxCheck(worst, atol, rtol, tuple(batch_sizes), agree / max(total, 1))
