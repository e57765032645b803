"""int8: dynamic (ONNX Runtime) on MNIST within a stated accuracy of the float model; static
(calibrated) on a CNN; quantization-aware training distilled from the float model."""

from __future__ import annotations

import pytest
import torch
from conftest import require_shared
from torch import nn

from kdistill.compress.evaluation import onnx_accuracy, sample_inputs, torch_accuracy
from kdistill.compress.export import export_onnx
from kdistill.compress.quantize import convert_qat, prepare_qat, quantize_dynamic_onnx, quantize_static_onnx
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.data import load_mnist_bundle
from kdistill.data.base import limit_samples
from kdistill.data.transforms import Normalize
from kdistill.digest import model_digest
from kdistill.models import build_model

INT8_TOLERANCE = 0.01  # dynamic int8 stays within 1 accuracy point of float on MNIST
STATIC_TOLERANCE = 0.02
QAT_TOLERANCE = 0.03


def test_dynamic_int8_stays_within_one_point_of_float_on_mnist(tmp_path):
    bundle = load_mnist_bundle(require_shared("mnist"))
    train, test = limit_samples(bundle.train, 10000, 0), limit_samples(bundle.test, 2000, 0)
    norm = Normalize(None, None)
    torch.manual_seed(0)
    model = build_model("mlp", 10, (1, 28, 28), {"hidden": [256]})
    recover(model, None, train, RecoverySettings(epochs=1, mode="finetune", lr=0.05), norm)
    path = export_onnx(model, sample_inputs(test, norm, 4), tmp_path / "mlp.onnx")
    int8 = quantize_dynamic_onnx(path, tmp_path / "mlp-int8.onnx")
    float_acc = torch_accuracy(model, test, norm)
    assert float_acc > 0.85  # it has learnt (one epoch on 10,000 images)
    assert abs(onnx_accuracy(int8, test, norm) - float_acc) <= INT8_TOLERANCE
    assert int8.stat().st_size < 0.35 * path.stat().st_size  # 4-byte weights became 1-byte


@pytest.fixture(scope="module")
def cnn(digits):
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("cnn", bundle.num_classes, bundle.input_shape, {"channels": [8, 16]})
    norm = Normalize(bundle.mean, bundle.std)
    recover(model, None, train, RecoverySettings(epochs=8, mode="finetune", lr=0.1), norm)
    return model.eval(), norm


def test_static_int8_of_a_cnn_calibrated_on_real_inputs(cnn, digits, tmp_path):
    bundle, train, _ = digits
    model, norm = cnn
    path = export_onnx(model, sample_inputs(bundle.test, norm, 4), tmp_path / "cnn.onnx")
    int8 = quantize_static_onnx(path, tmp_path / "cnn-int8.onnx", sample_inputs(train, norm, 256))
    float_acc = torch_accuracy(model, bundle.test, norm)
    assert float_acc > 0.8
    assert abs(onnx_accuracy(int8, bundle.test, norm) - float_acc) <= STATIC_TOLERANCE
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # activations are quantised too (QDQ)


def test_quantization_aware_training_distils_from_the_float_model(digits):
    bundle, train, _ = digits
    norm = Normalize(bundle.mean, bundle.std)
    torch.manual_seed(0)
    teacher = build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": [64]})
    recover(teacher, None, train, RecoverySettings(epochs=10, mode="finetune", lr=0.05), norm)
    teacher.eval()
    digest = model_digest(teacher)
    prepared = prepare_qat(teacher, sample_inputs(train, norm, 64))
    assert model_digest(teacher) == digest  # a copy is prepared
    recover(prepared, teacher, train, RecoverySettings(epochs=2, lr=0.005), norm)
    int8 = convert_qat(prepared)
    assert any(".quantized." in type(m).__module__ for m in int8.modules())  # int8 kernels
    assert abs(torch_accuracy(int8, bundle.test, norm) - torch_accuracy(teacher, bundle.test, norm)) <= QAT_TOLERANCE
    assert model_digest(teacher) == digest
    assert not isinstance(int8, type(teacher)) and isinstance(int8, nn.Module)
