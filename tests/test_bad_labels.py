"""Labels as users give them: a (B, 1) column, int32 / uint8 / int16 ids, float ids (refused), and float
(B, C) rows of class probabilities (one-hot or soft), whose accuracy is against each row's argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdistill import DistillationLoss, Distiller, OptimizerSettings
from kdistill.data.base import InMemoryDataset
from kdistill.engine.batch import correct_count
from kdistill.engine.evaluation import evaluate_model
from kdistill.errors import BadInput
from kdistill.methods import CRD, DKD, HardLabel, SoftTarget
from kdistill.models import build_model
from kdistill.strategies.multi_teacher import ConfidenceAggregator

OPT = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9)


def _data(digits, n=256):
    bundle, train, _ = digits
    return bundle, InMemoryDataset(train.inputs[:n], train.labels[:n])


def _relabelled(data: InMemoryDataset, labels: torch.Tensor) -> InMemoryDataset:
    copy = InMemoryDataset(data.inputs, data.labels)
    copy.labels = labels  # as the user's data set holds them (InMemoryDataset itself casts to int64)
    return copy


def _distiller(bundle, methods, teacher=True):
    torch.manual_seed(0)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    teacher_model = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]}) if teacher else None
    return Distiller(teacher_model, student, methods, optimizer=OPT, batch_size=64, progress=False,
                     student_normalization=(bundle.mean, bundle.std), teacher_normalization=(bundle.mean, bundle.std))


def test_column_labels_train_with_hard_label(digits):
    bundle, data = _data(digits)
    records = _distiller(bundle, [SoftTarget(weight=0.5), HardLabel(weight=0.5)]).fit(
        _relabelled(data, data.labels.view(-1, 1)), epochs=1)  # was: "0D or 1D target tensor expected"
    assert 0.0 <= records[-1]["train/acc"] <= 1.0


def test_column_labels_give_a_true_accuracy_without_a_label_term(digits):
    bundle, data = _data(digits)
    plain = _distiller(bundle, [SoftTarget()]).fit(data, epochs=1)[-1]["train/acc"]
    column = _distiller(bundle, [SoftTarget()]).fit(_relabelled(data, data.labels.view(-1, 1)), epochs=1)
    assert column[-1]["train/acc"] == pytest.approx(plain)  # was 3.33: (B,) == (B, 1) broadcast to (B, B)
    assert column[-1]["train/acc"] <= 1.0


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
def test_integer_labels_of_any_dtype_train(digits, dtype):
    bundle, data = _data(digits)
    reference = _distiller(bundle, [HardLabel()]).fit(data, epochs=1)[-1]
    records = _distiller(bundle, [HardLabel()]).fit(_relabelled(data, data.labels.to(dtype)), epochs=1)
    assert records[-1]["train/acc"] == pytest.approx(reference["train/acc"])  # was: "expected ... Long"
    assert records[-1]["train/loss"] == pytest.approx(reference["train/loss"])


def test_float_class_ids_are_refused_with_the_fix(digits):
    bundle, data = _data(digits)
    with pytest.raises(BadInput, match=r"integer class indices.*probabilities.*\(B, C\)"):
        _distiller(bundle, [HardLabel()]).fit(_relabelled(data, data.labels.float()), epochs=1)


def test_float_class_ids_are_refused_in_a_user_loop():
    student = build_model("mlp", 10, (1, 8, 8))
    loss_fn = DistillationLoss(None, student, [HardLabel()])
    with pytest.raises(BadInput, match="integer class indices"):
        loss_fn(torch.randn(4, 1, 8, 8), torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_correct_count_reads_probability_rows_by_their_argmax():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [5.0, 1.0, 0.0]])
    one_hot = F.one_hot(torch.tensor([0, 1, 1]), 3).float()
    assert correct_count(logits, one_hot).item() == 2
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3]])
    assert correct_count(logits, soft).item() == 2
    assert correct_count(logits, torch.tensor([[0], [1], [1]], dtype=torch.int32)).item() == 2


def test_one_hot_labels_when_batch_equals_classes(digits):
    # B == C: (B,) == (B, C) broadcast silently to (B, B) before (accuracy 0.038)
    logits = torch.randn(10, 10)
    labels = torch.arange(10)
    expected = correct_count(logits, labels).item()
    assert correct_count(logits, F.one_hot(labels, 10).float()).item() == expected


def test_evaluation_of_one_hot_labels_equals_integer_labels(digits):
    bundle, data = _data(digits, n=100)
    torch.manual_seed(0)
    model = build_model("mlp", 10, (1, 8, 8))
    device = torch.device("cpu")
    loader = torch.utils.data.DataLoader(data, batch_size=10, collate_fn=lambda b: b)
    one_hot = _relabelled(data, F.one_hot(data.labels, 10).float())
    hot_loader = torch.utils.data.DataLoader(one_hot, batch_size=10, collate_fn=lambda b: b)
    reference = evaluate_model(model, loader, device)
    metrics = evaluate_model(model, hot_loader, device)
    for key in ("acc", "acc_top5", "loss"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6)
    column = _relabelled(data, data.labels.view(-1, 1).int())
    column_loader = torch.utils.data.DataLoader(column, batch_size=10, collate_fn=lambda b: b)
    assert evaluate_model(model, column_loader, device) == pytest.approx(reference)


def test_one_hot_labels_train_and_report_a_true_accuracy(digits):
    bundle, data = _data(digits)
    reference = _distiller(bundle, [SoftTarget(weight=0.5), HardLabel(weight=0.5)]).fit(data, epochs=1)[-1]
    hot = _relabelled(data, F.one_hot(data.labels, 10).float())
    records = _distiller(bundle, [SoftTarget(weight=0.5), HardLabel(weight=0.5)]).fit(hot, epochs=1)
    assert records[-1]["train/acc"] == pytest.approx(reference["train/acc"])
    assert records[-1]["train/loss"] == pytest.approx(reference["train/loss"], rel=1e-5)


def _models():
    torch.manual_seed(0)
    return build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]}), build_model("mlp", 10, (1, 8, 8))


def test_dkd_reads_one_hot_labels_as_their_argmax():
    teacher, student = _models()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss_fn = DistillationLoss(teacher, student, [DKD(warmup=0)])
    expected = loss_fn(x, y).terms
    got = loss_fn(x, F.one_hot(y, 10).float()).terms
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_confidence_aggregator_reads_probability_labels_as_a_cross_entropy():
    torch.manual_seed(0)
    logits = [torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 10)]
    y = torch.randint(0, 10, (6,))
    aggregator = ConfidenceAggregator(temperature=2.0)
    torch.testing.assert_close(aggregator(logits, F.one_hot(y, 10).float()), aggregator(logits, y))
    soft = torch.softmax(torch.randn(6, 10), dim=1)
    weights = aggregator.weights(logits, soft)
    losses = torch.stack([-(soft * F.log_softmax(z, 1)).sum(1) for z in logits], dim=1)
    torch.testing.assert_close(weights, (1 - F.softmax(losses, dim=1)) / 2)


def test_crd_other_class_negatives_refuse_probability_labels():
    teacher, student = _models()
    crd = CRD(student_layer="pool", teacher_layer="pool", memory="queue", num_negatives=16, negatives="other_classes")
    student = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    loss_fn = DistillationLoss(teacher, student, [crd])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    with pytest.raises(ValueError, match="integer class label per sample.*probabilit"), loss_fn:
        loss_fn.build(x, F.one_hot(y, 10).float())
        loss_fn(x, F.one_hot(y, 10).float())


def test_the_ensemble_and_the_diagnostics_read_one_hot_and_column_labels_as_class_ids(digits):
    from kdistill.evaluate.diagnostics import predict_logits
    from kdistill.strategies.born_again import evaluate_ensemble

    bundle, data = _data(digits, n=100)
    models = list(_models())
    forms = {"ids": data, "one-hot": _relabelled(data, F.one_hot(data.labels, 10).float()),
             "column": _relabelled(data, data.labels.view(-1, 1).int())}
    scores = {name: evaluate_ensemble(models, form) for name, form in forms.items()}
    assert scores["one-hot"] == pytest.approx(scores["ids"]) and scores["column"] == pytest.approx(scores["ids"])
    for name, form in forms.items():
        loader = torch.utils.data.DataLoader(form, batch_size=10, collate_fn=lambda b: b)
        _, labels = predict_logits(models[1], loader, torch.device("cpu"))
        assert torch.equal(labels, data.labels), name


class _PerPosition(torch.nn.Module):
    """(B, T) ids -> (B, V, T) scores, kdistill's convention for a language model's logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(11, 11)

    def forward(self, ids):
        return self.embedding(ids).transpose(1, 2)


@pytest.mark.parametrize("positions", [2, 1])
def test_per_position_labels_of_one_position_stay_per_position(positions):
    # a (B, 1) column is squeezed for (B, C) logits only: here it is one position of (B, V, 1) scores
    torch.manual_seed(0)
    ids, labels = torch.randint(0, 11, (4, positions)), torch.randint(0, 11, (4, positions))
    loss_fn = DistillationLoss(None, _PerPosition(), [HardLabel()])
    ctx = loss_fn.build(ids, labels)
    assert ctx.labels.shape == (4, positions)
    expected = F.cross_entropy(ctx.student_logits, labels)
    assert loss_fn.weighted_terms(ctx).loss.item() == pytest.approx(expected.item())
