"""`data.transfer_set` and `student.embedding_init` from an experiment YAML (`kdistill run`'s code
path): the perturbed copies reach the distilled stage alone, the student starts from the teacher's
projected embeddings, and the combinations that cannot work are refused in one line before training."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

pytest.importorskip("transformers")

from text_fixtures import model_dir, write_label_text  # noqa: E402

from kdistill.config import ConfigError, load_config, validate  # noqa: E402
from kdistill.digest import model_digest  # noqa: E402
from kdistill.engine.seed import derive_seed  # noqa: E402
from kdistill.errors import BadInput  # noqa: E402
from kdistill.experiment import run_experiment  # noqa: E402
from kdistill.run.data import load_data  # noqa: E402
from kdistill.text.augment import AugmentRules, transfer_set  # noqa: E402
from kdistill.text.datasets import TextBundle  # noqa: E402
from kdistill.text.embedding_init import init_embeddings_from_teacher  # noqa: E402
from kdistill.text.hf_models import hf_classifier, hf_student  # noqa: E402
from kdistill.tune.data import tuning_raw  # noqa: E402

TRAIN, VAL_FRACTION = 96, 0.25


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    model_dir(root, "teacher", layers=2, hidden=32, heads=4)
    write_label_text(root / "train.txt", TRAIN)
    write_label_text(root / "test.txt", 24, seed=1)
    return root


def experiment(assets, tmp_path, **changes) -> dict:
    """A tiny text experiment as a YAML mapping; `changes` replace top-level sections."""
    raw = {
        "name": "transfer",
        "data": {"name": "text-files", "root": str(assets), "batch_size": 16, "val_fraction": VAL_FRACTION,
                 "options": {"train": "train.txt", "test": "test.txt", "tokenizer": str(assets / "tokenizer"),
                             "max_length": 16},
                 "transfer_set": {"copies": 3, "seed": 5}},
        "teacher": {"name": "hf-classifier", "options": {"path": str(assets / "teacher")}, "cache": True,
                    "training": {"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.003}}},
        "student": {"name": "hf-student", "embedding_init": "teacher",
                    "options": {"base": str(assets / "teacher"), "layers": 1, "hidden": 16, "heads": 2}},
        "methods": [{"name": "soft_target", "weight": 1.0, "temperature": 2}],
        "training": {"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.003}},
        "baseline": True,
        "baselines_dir": str(tmp_path / "baselines"),
    }
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def load(raw: dict, tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def fit_record(run, stage: str) -> dict:
    return json.loads((run / stage / "fit.json").read_text())


def test_yaml_run_uses_the_transfer_set_in_the_distilled_stage_only(assets, tmp_path):
    config = load(experiment(assets, tmp_path), tmp_path)
    run = tmp_path / "run"
    run_experiment(config, run, progress=False)

    # the training split the run ends up with (after carving its validation split), drawn again by hand
    _, train, val = load_data(config)
    assert len(train) == TRAIN - round(TRAIN * VAL_FRACTION) and len(val) == round(TRAIN * VAL_FRACTION)
    expected = transfer_set(train.texts, 3, seed=5, rules=AugmentRules(mask_token="[MASK]"))
    assert len(expected) > 2 * len(train)  # copies were drawn (few repeat on these short sentences)

    # samples each stage trained on (fit.json records the training set's type and size)
    assert fit_record(run, "teacher")["data"] == ["TextDataset", len(train)]
    assert fit_record(run, "student-scratch")["data"] == ["TextDataset", len(train)]
    assert fit_record(run, "student-distilled")["data"] == ["TextDataset", len(expected)]
    stage = json.loads((run / "student-distilled" / "stage.json").read_text())
    assert stage["transfer_set"]["samples"] == len(expected) and stage["transfer_set"]["copies"] == 3
    # steps per epoch follow the sizes (batch 16): the distilled stage saw the copies, validated on val alone
    last = [json.loads(line) for line in (run / "student-distilled" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["train/soft_target"] > 0 and "val/acc" in last
    # soft targets alone is the transfer set's recipe (a label term is refused): no "add hard_label" note
    notes = run / "student-distilled" / "notes.json"
    assert not notes.exists() or "no label term" not in notes.read_text()

    # the distilled student started from the trained teacher's embeddings, projected by hand; the baseline did not
    teacher = hf_classifier(2, str(assets / "teacher"))
    teacher.load_state_dict(torch.load(run / "teacher" / "student.pt", weights_only=True))
    torch.manual_seed(derive_seed(config.seed, 2))
    by_hand = hf_student(2, str(assets / "teacher"), layers=1, hidden=16, heads=2)
    plain_digest = model_digest(by_hand)[:16]
    projection = init_embeddings_from_teacher(by_hand, teacher)
    assert fit_record(run, "student-distilled")["student"] == model_digest(by_hand)[:16]
    assert fit_record(run, "student-scratch")["student"] == plain_digest != model_digest(by_hand)[:16]
    # independent of the code under test: the word embeddings are the centred teacher rows on 16 orthonormal axes
    words = teacher.get_input_embeddings().weight.detach()
    basis = projection.basis
    assert torch.allclose(basis.T @ basis, torch.eye(16), atol=1e-5)
    assert torch.allclose(by_hand.get_input_embeddings().weight, (words - words.mean(0)) @ basis, atol=1e-5)


def test_transfer_set_is_the_training_split_plus_copies(assets, tmp_path):
    config = load(experiment(assets, tmp_path), tmp_path)
    bundle, train, val = load_data(config)
    transfer = bundle.transfer
    assert transfer.texts[:len(train)] == train.texts  # originals first, the validation split left out
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(assets / "tokenizer"))
    for row in (0, len(train) // 2, len(train) - 1):  # the kept texts are the rows' own, after the split
        ids = tokenizer(train.texts[row])["input_ids"]
        assert train.inputs[row, :len(ids)].tolist() == ids and int(train.lengths[row]) == len(ids)
    assert torch.equal(transfer.labels[:len(train)], train.labels)
    assert len(transfer) == len(transfer_set(train.texts, 3, seed=5))
    assert any("[MASK]" in text for text in transfer.texts[len(train):])  # the tokenizer's mask token
    assert not set(val.texts) & set(transfer.texts[:len(train)]) - set(train.texts)


def test_tuning_data_keeps_the_text_bundle_and_draws_the_transfer_set_from_its_training_split(assets, tmp_path):
    """`kdistill tune` / `pair` score on a validation split carved from training (`tune.data.held_out`):
    its bundle must stay a text bundle (tokenizer, max length), or a transfer set cannot be built."""
    raw = experiment(assets, tmp_path)
    bundle, train, val = load_data(load(raw, tmp_path))
    tuning, tune_train, tune_val = load_data(validate(tuning_raw(raw)))
    assert isinstance(tuning, TextBundle) and tuning.tokenizer_path == bundle.tokenizer_path
    assert tuning.max_length == bundle.max_length == 16
    assert tuning.test is tune_val  # the held-out part stands in as test: the real test split is never read
    # the same split as the run's: tuning trains on the run's training part and scores on its validation part
    assert tune_train.texts == train.texts and tune_val.texts == val.texts
    transfer = tuning.transfer
    assert transfer.texts[:len(tune_train)] == tune_train.texts
    assert len(transfer) == len(transfer_set(tune_train.texts, 3, seed=5))
    assert not set(tune_val.texts) & set(transfer.texts[:len(tune_train)])


def refusal(raw: dict, tmp_path) -> str:
    with pytest.raises(BadInput) as caught:
        run_experiment(load(raw, tmp_path), tmp_path / "run", progress=False)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("changes, expected", [
    ({"methods": [{"name": "soft_target"}, {"name": "hard_label", "weight": 0.1}]}, "methods that read labels"),
    ({"methods": [{"name": "dkd"}]}, "(dkd)"),
    ({"methods": [{"name": "soft_target"}, {"name": "crd", "student_layer": "bert.pooler",
                   "teacher_layer": "bert.pooler", "negatives": "other_classes"}]}, "(crd)"),
    ({"teacher": None, "strategy": {"name": "mutual"}, "methods": None}, "needs a teacher"),
    ({"strategy": {"name": "born_again", "generations": 2}}, "strategy standard only"),
    ({"data": "label_noise"}, "not with data.label_noise"),
])
def test_transfer_set_refusals(assets, tmp_path, changes, expected):
    noisy = changes.pop("data", None) == "label_noise"
    raw = experiment(assets, tmp_path, **changes)
    if noisy:
        raw["data"]["label_noise"] = {"rate": 0.2}
    raw["student"].pop("embedding_init")
    if ("strategy" in changes or expected == "(crd)") and "teacher" in raw:
        raw["teacher"]["cache"] = False  # the cache serves the standard strategy only, and logits only here
    assert expected in refusal(raw, tmp_path)
    assert not (tmp_path / "run" / "teacher").exists()  # refused before any training


def test_transfer_set_on_image_data_is_refused(tmp_path):
    raw = {"data": {"name": "digits", "transfer_set": {"copies": 2}}, "teacher": {"name": "mlp"},
           "student": {"name": "mlp"}, "methods": [{"name": "soft_target"}], "training": {"epochs": 1}}
    assert "needs a text data set" in refusal(raw, tmp_path)


@pytest.mark.parametrize("section, expected", [
    ({"copies": 0}, "data.transfer_set.copies"),
    ({"copies": 2, "mask_prob": 0.7, "replace_prob": 0.5}, "mask_prob + replace_prob"),
    ({"copies": 2, "typo": 1}, "data.transfer_set.typo"),
])
def test_transfer_set_config_errors(assets, tmp_path, section, expected):
    raw = experiment(assets, tmp_path)
    raw["data"]["transfer_set"] = section
    with pytest.raises(ConfigError, match=expected.replace("+", r"\+")):
        load(raw, tmp_path)


def test_embedding_init_refusals(assets, tmp_path):
    base = experiment(assets, tmp_path)
    base["data"].pop("transfer_set")
    cnn_teacher = {**base, "teacher": {"name": "text-cnn", "options": {"tokenizer": str(assets / "tokenizer")},
                                       "training": {"epochs": 1}}}
    assert "is not a Hugging Face text model" in refusal(cnn_teacher, tmp_path / "a")
    wider = {**base, "student": {**base["student"], "options": {**base["student"]["options"], "hidden": 64}}}
    assert "wider (64) than the teacher (32)" in refusal(wider, tmp_path / "b")
    alone = experiment(assets, tmp_path, teacher=None, strategy={"name": "mutual"}, methods=None)
    alone["data"].pop("transfer_set")
    assert "student.embedding_init: needs a teacher" in refusal(alone, tmp_path / "c")
    for case in "abc":
        assert not (tmp_path / case / "run" / "teacher").exists()
    raw = {**base, "student": {**base["student"], "embedding_init": "random"}}
    with pytest.raises(ConfigError, match="student.embedding_init"):
        load(raw, tmp_path)


@pytest.mark.parametrize("strategy, initialised", [
    ({"name": "born_again", "generations": 2}, ["generation-1", "generation-2"]),
    ({"name": "teacher_assistant", "assistants": [{"name": "hf-student", "options": {"base": "TEACHER", "layers": 1,
                                                                                       "hidden": 24, "heads": 2}}]},
     ["student"]),
])
def test_embedding_init_starts_every_student_of_a_chain_from_the_run_teacher(assets, tmp_path, monkeypatch,
                                                                            strategy, initialised):
    """Every model a chain builds from `student:` (each born-again generation, a chain's final student)
    starts from the projected embeddings of the run's teacher, not of the model before it in the chain;
    an assistant built from its own spec keeps its random embeddings."""
    import kdistill.text.student_init as student_init

    calls: list[tuple[int, str]] = []
    real = student_init.init_embeddings_from_teacher

    def recording(student, teacher):
        calls.append((student.get_input_embeddings().weight.shape[1], model_digest(teacher)))
        return real(student, teacher)

    monkeypatch.setattr(student_init, "init_embeddings_from_teacher", recording)
    raw = experiment(assets, tmp_path, strategy=json.loads(json.dumps(strategy).replace(
        "TEACHER", str(assets / "teacher"))), baseline=False)
    raw["data"].pop("transfer_set")
    raw["teacher"]["cache"] = False  # the cache serves the standard strategy only
    run = tmp_path / "run"
    run_experiment(load(raw, tmp_path), run, progress=False)

    teacher = hf_classifier(2, str(assets / "teacher"))
    teacher.load_state_dict(torch.load(run / "teacher" / "student.pt", weights_only=True))
    trained_teacher = model_digest(teacher)
    # the pre-flight dry run on a throw-away student (the teacher still untrained), then one call per
    # student-sized model the chain trains, each from the trained run teacher, at the student's width
    assert calls[0][1] != trained_teacher
    assert calls[1:] == [(16, trained_teacher)] * len(initialised)
