"""Models and settings that do not fit the data or each other, caught with the fix instead of a raw
torch error or a silently useless loss: normalisation channels, class counts, unattached taps, and
attention transfer on a 1x1 map."""

from __future__ import annotations

import pytest
import torch

from kdistill import DistillationLoss, Distiller, OptimizerSettings
from kdistill.data.base import InMemoryDataset
from kdistill.data.transforms import Normalize
from kdistill.errors import BadInput
from kdistill.methods import DIST, DKD, RKD, AttentionTransfer, HardLabel, Hint, SimilarityPreserving, SoftTarget
from kdistill.models import build_model
from kdistill.taps import LayerTaps, TapError

OPT = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9)


def _small(digits, n=128):
    _, train, _ = digits
    return InMemoryDataset(train.inputs[:n], train.labels[:n])


# normalisation ------------------------------------------------------------------------------------
def test_three_channel_normalisation_on_one_channel_images_is_refused():
    norm = Normalize([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    with pytest.raises(BadInput, match=r"3 channel values \(mean/std\) for inputs with 1 channel; give 1 value"):
        norm(torch.rand(4, 1, 8, 8))


def test_three_channel_normalisation_is_refused_in_a_run(digits):
    torch.manual_seed(0)
    student = build_model("mlp", 10, (1, 8, 8))
    distiller = Distiller(None, student, [HardLabel()], optimizer=OPT, batch_size=64, progress=False,
                          student_normalization=([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]))
    with pytest.raises(BadInput, match="3 channel values"):  # was: "mat1 and mat2 shapes cannot be multiplied"
        distiller.fit(_small(digits), epochs=1)


def test_one_value_or_one_per_channel_stays_valid():
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(Normalize([0.5], [0.25])(x), (x - 0.5) / 0.25)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.25, 2.0])
    torch.testing.assert_close(Normalize(mean.tolist(), std.tolist())(x), (x - mean.view(1, 3, 1, 1)) /
                               std.view(1, 3, 1, 1))
    features = torch.rand(4, 5)  # tabular: one value per feature
    Normalize([0.0] * 5, [1.0] * 5)(features)


# class counts -------------------------------------------------------------------------------------
def _pair(teacher_classes=5, student_classes=10):
    torch.manual_seed(0)
    return (build_model("cnn", teacher_classes, (1, 8, 8), {"channels": [8, 16]}),
            build_model("cnn", student_classes, (1, 8, 8), {"channels": [8, 16]}))


@pytest.mark.parametrize("method", [SoftTarget(), DKD(), DIST()], ids=["soft_target", "dkd", "dist"])
def test_logit_methods_refuse_teacher_and_student_of_other_class_counts(method):
    teacher, student = _pair()
    loss_fn = DistillationLoss(teacher, student, [method, HardLabel()])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))
    expected = rf"\['{method.name}'\].*teacher 0: 5 classes.*student: 10.*give both the data's class count\. Feature"
    with pytest.raises(BadInput, match=expected):
        loss_fn.build(x, y)


def test_class_count_mismatch_is_refused_by_the_distiller(digits):
    teacher, student = _pair(teacher_classes=5)
    distiller = Distiller(teacher, student, [SoftTarget(), HardLabel()], optimizer=OPT, batch_size=64, progress=False)
    with pytest.raises(BadInput, match="give both the data's class count"):
        distiller.fit(_small(digits), epochs=1)


def test_feature_methods_cross_label_spaces():
    teacher, student = _pair()
    loss_fn = DistillationLoss(teacher, student, [Hint(student_layer="pool", teacher_layer="pool"), HardLabel()])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss_fn.build(x, y)
    with loss_fn:
        assert torch.isfinite(loss_fn(x, y).loss)


def test_student_with_fewer_outputs_than_a_label_is_refused_at_build(digits):
    torch.manual_seed(0)
    student = build_model("mlp", 5, (1, 8, 8))
    distiller = Distiller(None, student, [HardLabel()], optimizer=OPT, batch_size=64, progress=False)
    # was: IndexError "Target 8 is out of bounds"
    with pytest.raises(BadInput, match=r"labels go up to \d+, but the student predicts 5 classes"):
        distiller.fit(_small(digits), epochs=1)


def test_probability_labels_of_another_width_are_refused_at_build():
    student = build_model("mlp", 10, (1, 8, 8))
    loss_fn = DistillationLoss(None, student, [HardLabel()])
    with pytest.raises(BadInput, match=r"7 columns.*student predicts 10 classes"):
        loss_fn.build(torch.randn(4, 1, 8, 8), torch.softmax(torch.randn(4, 7), dim=1))


# taps ---------------------------------------------------------------------------------------------
def test_unattached_taps_say_so():
    teacher, student = _pair(10, 10)
    loss_fn = DistillationLoss(teacher, student, [Hint(student_layer="pool", teacher_layer="pool")])
    x = torch.randn(8, 1, 8, 8)
    loss_fn.build(x)
    with pytest.raises(TapError, match=r"taps are not attached: call the loss inside `with loss_fn:`"):
        loss_fn(x)
    with loss_fn:  # attached: it works
        assert torch.isfinite(loss_fn(x).loss)


def test_layer_taps_read_before_attaching_say_so():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    taps = LayerTaps(model, ["0"])
    model(torch.randn(2, 4))  # the module ran, but no hook recorded it
    with pytest.raises(TapError, match=r"taps are not attached.*taps\.attach\(\)"):
        taps.collect()


# attention transfer -------------------------------------------------------------------------------
def test_attention_transfer_on_a_one_by_one_map_is_refused():
    teacher, student = _pair(10, 10)
    at = AttentionTransfer(student_layers=["features.1"], teacher_layers=["pool"])
    loss_fn = DistillationLoss(teacher, student, [at, HardLabel()])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    with pytest.raises(BadInput, match=r"teacher 0 tap 'pool'.*\(8, 16, 1, 1\).*tap an earlier layer"):
        loss_fn.build(x, y)


def test_attention_transfer_on_spatial_maps_builds():
    teacher, student = _pair(10, 10)
    at = AttentionTransfer(student_layers=["features.1"], teacher_layers=["features.0"])
    loss_fn = DistillationLoss(teacher, student, [at])
    x = torch.randn(8, 1, 8, 8)
    loss_fn.build(x)
    with loss_fn:
        assert loss_fn(x).loss.item() > 0


@pytest.mark.parametrize("method", [
    lambda: DIST(), lambda: SimilarityPreserving(student_layers=["features.1"], teacher_layers=["pool"]),
    lambda: RKD(student_layer="features.1", teacher_layer="pool")])
def test_methods_comparing_a_batchs_samples_refuse_a_batch_of_one(method):
    # their loss on one sample is a constant (0 for sp and rkd, 1 for dist's intra-class term): nothing learnt
    teacher, student = _pair(10, 10)
    x, y = torch.randn(1, 1, 8, 8), torch.randint(0, 10, (1,))
    with pytest.raises(BadInput, match=r"compare the samples of a batch with each other.*batch_size >= 2"):
        DistillationLoss(teacher, student, [method(), HardLabel()]).build(x, y)
    DistillationLoss(teacher, student, [method(), HardLabel()]).build(torch.randn(2, 1, 8, 8), y.repeat(2))


def test_a_dict_batch_without_an_input_key_says_its_keys_went_to_the_model_as_arguments(digits):
    _, train, _ = digits
    samples = [{"image": train.inputs[i].float(), "label": train.labels[i]} for i in range(64)]
    torch.manual_seed(0)
    run = Distiller(None, build_model("mlp", 10, (1, 8, 8)), [HardLabel()], progress=False, device="cpu")
    with pytest.raises(BadInput, match=r"MLP.forward does not take the batch's inputs \['image'\] as keyword"):
        run.fit(samples, epochs=1)
    renamed = [{"input": s["image"], "label": s["label"]} for s in samples]
    assert run.fit(renamed, epochs=1)


def test_an_embedding_student_taught_by_feature_methods_alone_is_not_held_to_the_classes(digits):
    # RKD is a metric-learning method: a 4-d embedding student on labelled data is valid
    _, train, _ = digits
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    run = Distiller(teacher, student, [RKD(student_layer="3", teacher_layer="3")], progress=False, device="cpu")
    assert torch.isfinite(torch.tensor(run.fit(train, epochs=1)[-1]["train/loss"]))


def test_a_type_error_inside_a_model_is_the_models_own_not_blamed_on_the_data():
    class Broken(torch.nn.Module):
        def forward(self, input_ids):
            return torch.zeros(len(input_ids), 10) + helper(input_ids)  # a bug: helper needs two arguments

    def helper(a, b):
        return 0

    from kdistill.engine.batch import call_model

    with pytest.raises(TypeError, match="helper\\(\\) missing 1 required positional argument") as error:
        call_model(Broken(), {"input_ids": torch.zeros(2, 3)})
    assert not isinstance(error.value, BadInput)
