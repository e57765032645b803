"""Dynamic int8 of recurrent layers. In PyTorch: the BiLSTM text student's LSTM (and Linear) modules
become torch.ao's dynamic int8 ones, the model is smaller on disk, and on SST-2 its predictions stay
within a stated tolerance of the float model's; the same through the pipeline (`runtime: pytorch`).
In ONNX Runtime: an LSTM reading the digits row by row (a real sequence task) exports with an ONNX
LSTM node, which dynamic quantization turns into DynamicQuantizeLSTM, within tolerance too."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import require_shared
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from kdistill.compress.evaluation import normalized_batches, torch_accuracy
from kdistill.compress.pipeline import CompressionPipeline
from kdistill.compress.quantize import quantize_dynamic_torch
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.compress.spec import CompressSpec
from kdistill.data import split_validation
from kdistill.data.transforms import Normalize
from kdistill.evaluate.profile import size_on_disk_bytes

pytest.importorskip("transformers")

ACCURACY_TOLERANCE = 0.01  # int8 within 1 accuracy point of float on the SST-2 test set
AGREEMENT = 0.97  # and the same prediction on at least 97 % of its sentences
NONE = Normalize(None, None)


def word_tokenizer(root, folder):
    """A word-level tokenizer over SST-2's training sentences (lower-cased, space-separated), saved as
    a model folder: the test needs no pretrained tokenizer package."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    lines = [line.split(" ", 1)[1] for line in (root / "stsa.binary.train").read_text().splitlines() if " " in line]
    tokenizer.train_from_iterator(lines, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"], min_frequency=2))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    from kdistill.text.datasets import load_sst2_bundle
    from kdistill.text.simple_students import text_bilstm

    root = require_shared("sst2")
    folder = word_tokenizer(root, str(tmp_path_factory.mktemp("sst2-words")))
    bundle = load_sst2_bundle(root, tokenizer=folder, max_length=48)
    train, val = split_validation(bundle.train, 0.1, seed=0)
    torch.manual_seed(0)
    model = text_bilstm(bundle.num_classes, vocab_size=bundle.vocab_size, embed_dim=48, hidden=48)
    recover(model, None, train, RecoverySettings(epochs=1, mode="finetune", lr=0.01, optimizer="adam",
                                                 batch_size=64), NONE)
    return bundle, train, val, model.eval()


def predictions(model: nn.Module, data) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**inputs).argmax(1) for inputs, _ in normalized_batches(data, NONE)])


@pytest.mark.slow
def test_lstm_layers_become_dynamic_int8_and_stay_within_tolerance_on_sst2(sst2):
    bundle, _, _, model = sst2
    int8 = quantize_dynamic_torch(model)
    assert type(int8.lstm) is qdynamic.LSTM and int8.lstm.bidirectional
    assert all(type(m) is qdynamic.Linear for m in (int8.head[0], int8.head[2]))
    assert not any(type(m) in (nn.LSTM, nn.Linear) for m in int8.modules())
    assert type(model.lstm) is nn.LSTM  # the float model is left as it was
    # the LSTM's weights went from 4 bytes to 1 (+ packed-format overhead); the embedding stays float
    assert size_on_disk_bytes(int8.lstm) < 0.4 * size_on_disk_bytes(model.lstm)
    assert size_on_disk_bytes(int8) < size_on_disk_bytes(model) - 2 * size_on_disk_bytes(int8.lstm)
    float_acc = torch_accuracy(model, bundle.test, NONE)
    assert float_acc > 0.6  # it has learnt (chance is 0.5)
    assert abs(torch_accuracy(int8, bundle.test, NONE) - float_acc) <= ACCURACY_TOLERANCE
    agree = (predictions(int8, bundle.test) == predictions(model, bundle.test)).float().mean().item()
    assert agree >= AGREEMENT


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # torch.load of packed int8 weights
def test_the_pipeline_quantizes_a_text_lstm_in_pytorch(sst2, tmp_path):
    bundle, train, val, model = sst2
    spec = CompressSpec.model_validate({"stages": ["quantize"], "quantize": {"mode": "dynamic", "runtime": "pytorch"},
                                        "profile": {"repeats": 2, "warmup": 0, "batch_size": 8}})
    result = CompressionPipeline(spec, copy.deepcopy(model), train, bundle.test, NONE, tmp_path, val=val).run()
    start, int8 = result.rows
    assert (int8.stage, int8.artefact, int8.accepted) == ("quantize (dynamic int8)", "pytorch int8", True)
    assert abs(int8.accuracy - start.accuracy) <= ACCURACY_TOLERANCE
    assert int8.profile["size_bytes"] < start.profile["size_bytes"]
    saved = torch.load(result.files["int8"], weights_only=False)
    fresh = quantize_dynamic_torch(copy.deepcopy(model))
    fresh.load_state_dict(saved)
    inputs, _ = next(normalized_batches(bundle.test, NONE, 32))
    with torch.no_grad():
        assert torch.equal(fresh(**inputs), quantize_dynamic_torch(model)(**inputs))


class RowLSTM(nn.Module):
    """A digit image read as a sequence of its pixel rows by a bidirectional LSTM."""

    def __init__(self, rows: int = 8, hidden: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(rows, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(images.flatten(1, 2))  # (B, 1, H, W) -> H steps of W pixels
        return self.head(out[:, -1])


def test_onnx_dynamic_int8_quantizes_the_lstm_node_within_tolerance(digits, tmp_path):
    import onnx

    from kdistill.compress.evaluation import onnx_accuracy, sample_inputs
    from kdistill.compress.export import export_onnx
    from kdistill.compress.quantize import quantize_dynamic_onnx

    bundle, train, _ = digits
    norm = Normalize(bundle.mean, bundle.std)
    torch.manual_seed(0)
    model = RowLSTM()
    recover(model, None, train, RecoverySettings(epochs=6, mode="finetune", lr=0.02, optimizer="adam",
                                                 batch_size=64), norm)
    path = export_onnx(model.eval(), sample_inputs(train, norm, 4), tmp_path / "lstm.onnx")
    assert "LSTM" in {node.op_type for node in onnx.load(str(path)).graph.node}
    int8 = quantize_dynamic_onnx(path, tmp_path / "lstm-int8.onnx")
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    assert int8.stat().st_size < 0.6 * path.stat().st_size  # int8 weight matrices; biases and the graph stay
    float_acc = torch_accuracy(model, bundle.test, norm)
    assert float_acc > 0.85
    assert abs(onnx_accuracy(int8, bundle.test, norm) - float_acc) <= ACCURACY_TOLERANCE


def test_static_int8_is_not_offered_in_pytorch():
    with pytest.raises(ValueError, match="quantize.runtime: static quantization runs in onnxruntime"):
        CompressSpec.model_validate({"quantize": {"mode": "static", "runtime": "pytorch"}})
