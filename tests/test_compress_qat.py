"""Quantization-aware training: preparing leaves BatchNorm statistics alone, and the QAT int8 model
goes to ONNX (QDQ, int8 weights) where ONNX Runtime matches PyTorch's int8 model on real digits
within two output int8 steps; the same through the pipeline."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch
from onnx import TensorProto

from kdistill.compress.evaluation import onnx_accuracy, sample_inputs, torch_accuracy
from kdistill.compress.export import check_onnx, export_onnx
from kdistill.compress.pipeline import QAT_ONNX_STEPS, CompressionPipeline
from kdistill.compress.quantize import convert_qat, export_qat_onnx, prepare_qat, qat_output_step
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.compress.spec import CompressSpec
from kdistill.data.transforms import Normalize
from kdistill.models import build_model

ONNX_ACCURACY_TOLERANCE = 0.005  # ONNX Runtime's int8 model vs PyTorch's, test accuracy
AGREEMENT = 0.99  # same prediction on at least 99 % of the test digits


@pytest.fixture(scope="module")
def cnn(digits):
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("cnn", bundle.num_classes, bundle.input_shape, {"channels": [8, 16]})
    norm = Normalize(bundle.mean, bundle.std)
    recover(model, None, train, RecoverySettings(epochs=8, mode="finetune", lr=0.1), norm)
    return model.eval(), norm


def bn_statistics(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]


def test_preparing_for_qat_leaves_batchnorm_statistics_alone(cnn, digits):
    """The observers are sized on a couple of inputs; that pass must not move the BatchNorm running
    statistics (in train mode it moved them 10 % toward two samples' statistics)."""
    bundle, train, _ = digits
    model, norm = cnn
    prepared = prepare_qat(model, sample_inputs(train, norm, 2))
    before, after = bn_statistics(model), bn_statistics(prepared)
    assert len(after) == len(before) == 4  # two BatchNorms, fused into the QAT convolutions
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(after, before, strict=True))
    assert prepared.training  # ready to train
    with torch.inference_mode():  # the observers were sized: a probe under inference_mode works
        assert prepared.eval()(sample_inputs(bundle.test, norm, 4)).shape == (4, bundle.num_classes)


def test_the_qat_int8_model_exports_to_onnx_and_matches_pytorch(cnn, digits, tmp_path):
    bundle, train, _ = digits
    model, norm = cnn
    prepared = prepare_qat(model, sample_inputs(train, norm, 64))
    recover(prepared, model, train, RecoverySettings(epochs=1, lr=0.005), norm)
    int8 = convert_qat(prepared)
    path = export_qat_onnx(prepared, sample_inputs(train, norm, 8), tmp_path / "qat.onnx")
    graph = onnx.load(str(path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    matrices = [i.data_type for i in graph.initializer if len(i.dims) >= 2]  # weights, not scales or shapes
    assert matrices.count(TensorProto.INT8) == 3 and TensorProto.FLOAT not in matrices  # 2 convolutions, the head
    float_file = export_onnx(model, sample_inputs(train, norm, 8), tmp_path / "float.onnx")
    assert path.stat().st_size < 0.5 * float_file.stat().st_size
    step = qat_output_step(prepared)
    inputs = sample_inputs(bundle.test, norm, len(bundle.test))
    check = check_onnx(int8, path, inputs, atol=QAT_ONNX_STEPS * step, rtol=0.0, batch_sizes=(1, 7, 64))
    assert check.argmax_agreement >= AGREEMENT
    pytorch_acc = torch_accuracy(int8, bundle.test, norm)
    assert pytorch_acc > 0.85
    assert abs(onnx_accuracy(path, bundle.test, norm) - pytorch_acc) <= ONNX_ACCURACY_TOLERANCE


def test_the_pipeline_deploys_qat_as_onnx_int8(cnn, digits, tmp_path):
    bundle, train, val = digits
    model, norm = cnn
    spec = CompressSpec.model_validate({"stages": ["quantize"], "accuracy_budget": 3.0,
                                        "quantize": {"mode": "qat", "qat": {"epochs": 1, "lr": 0.005}},
                                        "profile": {"repeats": 2, "warmup": 0}})
    result = CompressionPipeline(spec, copy.deepcopy(model), train, bundle.test, norm, tmp_path, val=val).run()
    start, pytorch_int8, onnx_int8 = result.rows
    assert (pytorch_int8.artefact, onnx_int8.artefact) == ("pytorch int8", "onnx int8")
    assert onnx_int8.accepted and "QDQ; max abs diff to pytorch int8" in onnx_int8.note
    assert abs(onnx_int8.accuracy - pytorch_int8.accuracy) <= ONNX_ACCURACY_TOLERANCE
    assert result.files["onnx_int8"].endswith("model-int8-qat.onnx")
    assert start.accepted and pytorch_int8.profile["parameters"] == start.profile["parameters"]
