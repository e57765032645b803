"""int8 quantization: dynamic (weights int8, activations quantised on the fly: Linear / MatMul and
recurrent layers), static (activations calibrated on real inputs: CNNs) and quantization-aware
training in which a float teacher distils into the fake-quantised student.

Dynamic and static quantization run on the exported ONNX model with ONNX Runtime's tools
(`onnxruntime.quantization`): the deployed artefact is what gets quantised and measured, and
ONNX Runtime is maintained for this, where PyTorch's eager `torch.ao.quantization` is deprecated.
Quantization-aware training needs the model in PyTorch: it uses torch.ao's FX graph mode
(`prepare_qat_fx` / `convert_fx`, deprecated since torch 2.10 in favour of torchao, which is not
installed here), trained by kdistill's own `Distiller`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.errors import BadInput

DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs every node it skips and torch.ao warns of its deprecation."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def quantize_dynamic_onnx(source: str | Path, target: str | Path, per_channel: bool = False) -> Path:
    """int8 weights for MatMul / Gemm / LSTM / GRU / Attention nodes; activations quantised per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(source), str(target), op_types_to_quantize=DYNAMIC_OPS, per_channel=per_channel,
                         weight_type=QuantType.QInt8)
    return Path(target)


class _Calibration:
    """ONNX Runtime's calibration reader over batches of real (normalised) inputs."""

    def __init__(self, name: str, batches: list[torch.Tensor]) -> None:
        self.feeds = iter([{name: b.detach().cpu().numpy()} for b in batches])

    def get_next(self) -> dict[str, Any] | None:
        return next(self.feeds, None)

    def rewind(self) -> None:  # pragma: no cover - only the entropy / percentile methods rewind
        raise NotImplementedError


def quantize_static_onnx(source: str | Path, target: str | Path, calibration: torch.Tensor,
                         batch_size: int = 32, per_channel: bool = True) -> Path:
    """int8 weights and activations (QDQ format), activation ranges from `calibration` (real inputs
    as the model sees them, a few hundred samples). Pre-processed (shape inference, graph
    optimisation) first, as ONNX Runtime recommends."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if calibration.shape[0] < 1:
        raise BadInput("quantize.calibration: needs at least one calibration sample")
    target = Path(target)
    prepared = target.with_suffix(".pre.onnx")
    with _quiet():
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        quantize_static(str(prepared), str(target), _Calibration(name, list(calibration.split(batch_size))),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    prepared.unlink(missing_ok=True)
    return target


def prepare_qat(model: nn.Module, example: torch.Tensor, backend: str = "x86") -> nn.Module:
    """A fake-quantised copy of `model` (FX graph mode): train it (e.g. distilled from the float
    model), then `convert_qat` gives the int8 model. `model` itself is not changed. `example`
    (real inputs) goes through once to size the observers: their buffers start empty and cannot
    be resized later under `torch.inference_mode`, where a training loop's first probe may run."""
    import copy

    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    example = example.detach().cpu()
    with _quiet():
        prepared = prepare_qat_fx(copy.deepcopy(model).cpu().train(), get_default_qat_qconfig_mapping(backend),
                                  (example,))
        with torch.no_grad():
            prepared(example)
    return prepared


def convert_qat(prepared: nn.Module) -> nn.Module:
    """The int8 PyTorch model (CPU, eval) from a trained `prepare_qat` model."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet():
        return convert_fx(prepared.cpu().eval())
