"""Compression and deployment: pruning recovered by distillation, int8 quantization, ONNX /
safetensors export, and the pipeline that chains them with a per-stage table (`kdistill compress`).

Names are imported on first use: the experiment schema imports `compress.spec`, and that must not
pull in Torch-Pruning, ONNX or the training loop (nor `compress.plan`, which reads the schema).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "check_clean": "export", "check_onnx": "export", "export_onnx": "export", "save_safetensors": "export",
    "CompressionPipeline": "pipeline", "PipelineResult": "pipeline", "StageRow": "pipeline",
    "StructuredPruning": "prune", "UnstructuredPruning": "prune", "prune_to_target": "prune",
    "prune_attention_heads": "heads",
    "convert_qat": "quantize", "prepare_qat": "quantize", "quantize_dynamic_onnx": "quantize",
    "quantize_static_onnx": "quantize", "quantize_dynamic_torch": "quantize", "export_qat_onnx": "quantize",
    "RecoverySettings": "recover", "recover": "recover",
    "CompressSpec": "spec", "CompressPlan": "plan",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'kdistill.compress' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kdistill.compress.{_WHERE[name]}"), name)
