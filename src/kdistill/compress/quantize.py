"""int8 quantization: dynamic (weights int8, activations quantised on the fly: Linear / MatMul and
recurrent layers), static (activations calibrated on real inputs: CNNs) and quantization-aware
training in which a float teacher distils into the fake-quantised student.

Dynamic and static quantization run on the exported ONNX model with ONNX Runtime's tools
(`onnxruntime.quantization`): the deployed artefact is what gets quantised and measured, and
ONNX Runtime is maintained for this, where PyTorch's eager `torch.ao.quantization` is deprecated.
Models that do not export to one ONNX input (text models taking `input_ids` and `attention_mask`,
an LSTM over packed sequences) are quantised dynamically in PyTorch instead (`quantize_dynamic_torch`:
Linear, LSTM and GRU modules become torch.ao's dynamic int8 ones).
Quantization-aware training needs the model in PyTorch: it uses torch.ao's FX graph mode
(`prepare_qat_fx` / `convert_fx`, deprecated since torch 2.10 in favour of torchao, which is not
installed here), trained by kdistill's own `Distiller`. Its result goes to ONNX as a QDQ graph
(`export_qat_onnx`): torch.ao's decomposed reference model, whose quantize / dequantize ops the
ONNX exporter writes as QuantizeLinear / DequantizeLinear with the scales QAT learnt (the converted
int8 model's packed `quantized::` kernels and the fake-quantised model do not export).
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
        # sizing the observers must not train the copy: in train mode this pass would move every
        # BatchNorm's running statistics toward the statistics of `example` (a couple of samples),
        # which the int8 model then folds into its weights. Observers observe in eval mode too.
        with torch.no_grad():
            prepared.eval()(example)
        prepared.train()
    return prepared


def convert_qat(prepared: nn.Module) -> nn.Module:
    """The int8 PyTorch model (CPU, eval) from a trained `prepare_qat` model, which is left as it was
    (`convert_fx` rewrites the graph module it is given: `export_qat_onnx` needs it unconverted)."""
    import copy

    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet():
        return convert_fx(copy.deepcopy(prepared).cpu().eval())


def qat_output_step(prepared: nn.Module) -> float:
    """The int8 step (scale) of a `prepare_qat` model's output: one rounding flip of the output
    changes a logit by this much, the unit of the QAT ONNX check's tolerance."""
    output = next(node for node in prepared.graph.nodes if node.op == "output")
    source = output.args[0]
    quantizer = prepared.get_submodule(source.target) if getattr(source, "op", "") == "call_module" else None
    if quantizer is None or not hasattr(quantizer, "scale"):
        raise BadInput("quantize.qat: the model's output is not quantised, so there is no int8 step to check "
                       "the ONNX file against; export the float model instead")
    return float(quantizer.scale.max())


def export_qat_onnx(prepared: nn.Module, sample: torch.Tensor, path: str | Path) -> Path:
    """The trained `prepare_qat` model as an ONNX QDQ graph (dynamic batch axis) computing what
    `convert_qat` computes: int8 weights and activations at the scales QAT learnt. `prepared` is
    not changed (a copy is converted)."""
    import copy

    from torch.ao.quantization.quantize_fx import _convert_to_reference_decomposed_fx

    from kdistill.compress.export import export_onnx

    with _quiet():
        reference = _convert_to_reference_decomposed_fx(copy.deepcopy(prepared).cpu().eval())
    path = Path(path)
    raw = path.with_suffix(".float-weights.onnx")
    export_onnx(reference, sample, raw)
    try:
        fold_constants(raw, path)
    finally:
        raw.unlink(missing_ok=True)
    return path


def fold_constants(source: str | Path, target: str | Path) -> Path:
    """`source` with its constant sub-graphs computed (ONNX Runtime's basic, provider-independent
    graph optimisations, saved offline). The exporter writes each weight as a float initializer
    quantised at run time; folded, the file holds the int8 weights themselves (a quarter the bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return Path(target)


def quantize_dynamic_torch(model: nn.Module) -> nn.Module:
    """A copy of `model` whose Linear, LSTM and GRU modules hold int8 weights (activations
    quantised per call): torch.ao's dynamic quantization, for models ONNX cannot take (text
    models with several inputs, packed sequences). CPU, eval mode; `model` is not changed."""
    import copy

    from torch.ao.quantization import quantize_dynamic

    with _quiet():
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)
