"""Export: ONNX (dynamic batch) equals PyTorch on real inputs; safetensors round trip; nothing of
distillation (taps, masks) left in an exported model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_model

from kdistill.compress.export import (
    DEFAULT_ATOL,
    ExportMismatch,
    check_clean,
    check_onnx,
    distillation_leftovers,
    export_onnx,
    save_safetensors,
)
from kdistill.compress.prune import StructuredPruning, UnstructuredPruning
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.data.transforms import Normalize, to_float
from kdistill.errors import BadInput
from kdistill.evaluate.profile import onnx_session
from kdistill.models import build_model
from kdistill.taps import LayerTaps


def real_inputs(bundle, count: int = 64) -> torch.Tensor:
    return Normalize(bundle.mean, bundle.std)(to_float(bundle.test.inputs[:count]))


@pytest.fixture(scope="module")
def cnn(digits):
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("cnn", bundle.num_classes, bundle.input_shape, {"channels": [8, 16]})
    recover(model, None, train, RecoverySettings(epochs=2, mode="finetune", lr=0.05),
            Normalize(bundle.mean, bundle.std))
    return model.eval()


@pytest.fixture(scope="module")
def cnn_onnx(cnn, digits, tmp_path_factory):
    return export_onnx(cnn, real_inputs(digits[0], 4), tmp_path_factory.mktemp("onnx") / "cnn.onnx")


def test_onnx_equals_pytorch_on_real_inputs_at_any_batch_size(cnn, cnn_onnx, digits):
    inputs = real_inputs(digits[0])
    path = cnn_onnx
    check = check_onnx(cnn, path, inputs, batch_sizes=(1, 7, 64))
    assert check.max_abs_diff <= DEFAULT_ATOL and check.argmax_agreement == 1.0
    session = onnx_session(path)
    assert session.get_inputs()[0].shape[0] not in (1, 4)  # the batch axis is symbolic


@pytest.mark.slow
def test_a_pruned_option_a_resnet_exports_and_matches(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet8", 10, (3, 32, 32)).eval()
    x = torch.randn(6, 3, 32, 32)
    StructuredPruning(model, x[:2], 0.5).step()
    path = export_onnx(model, x, tmp_path / "r8.onnx")
    assert check_onnx(model, path, x, batch_sizes=(1, 6)).max_abs_diff <= DEFAULT_ATOL


def test_check_onnx_refuses_a_different_model(cnn, cnn_onnx, digits):
    inputs = real_inputs(digits[0], 8)
    path = cnn_onnx
    with torch.no_grad():
        cnn.head.bias.add_(0.5)  # the PyTorch model moves away from the file
    try:
        with pytest.raises(ExportMismatch, match="differs"):
            check_onnx(cnn, path, inputs)
    finally:
        with torch.no_grad():
            cnn.head.bias.sub_(0.5)


def test_safetensors_round_trip(cnn, digits, tmp_path):
    path = save_safetensors(cnn, tmp_path / "cnn.safetensors")
    fresh = build_model("cnn", digits[0].num_classes, digits[0].input_shape, {"channels": [8, 16]}).eval()
    load_model(fresh, str(path))
    device = next(cnn.parameters()).device  # the GPU where the fixture was trained on one
    fresh.to(device)
    inputs = real_inputs(digits[0], 16).to(device)
    with torch.no_grad():
        assert torch.equal(fresh(inputs), cnn(inputs))


def test_models_holding_taps_or_masks_are_refused_and_recovery_leaves_none(digits):
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": [16]})
    with LayerTaps(model, ["hidden.0"]):
        assert distillation_leftovers(model)
        with pytest.raises(BadInput, match="hooks"):
            check_clean(model)
    pruning = UnstructuredPruning(model, 0.5)
    pruning.step()
    with pytest.raises(BadInput, match="pruning mask"):
        check_clean(model)
    teacher = build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": [32]}).eval()
    recover(model, teacher, train, RecoverySettings(epochs=1), Normalize(bundle.mean, bundle.std))
    pruning.finalize()
    assert distillation_leftovers(model) == [] and distillation_leftovers(teacher) == []


def test_the_pipeline_exports_its_own_model_over_an_older_file(cnn_onnx, digits, tmp_path):
    """A model.onnx left in the folder by another model is replaced, not reused (the check would fail)."""
    import shutil

    from kdistill.compress.pipeline import CompressionPipeline
    from kdistill.compress.spec import CompressSpec

    bundle, train, _ = digits
    shutil.copy(cnn_onnx, tmp_path / "model.onnx")
    torch.manual_seed(0)
    mlp = build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": [16]}).eval()
    spec = CompressSpec.model_validate({"stages": ["export"], "profile": {"repeats": 2, "warmup": 0}})
    result = CompressionPipeline(spec, mlp, train, bundle.test, Normalize(bundle.mean, bundle.std), tmp_path).run()
    assert result.rows[-1].stage == "export (onnx float)"
    assert result.rows[-1].accuracy == pytest.approx(result.rows[0].accuracy, abs=0.002)
