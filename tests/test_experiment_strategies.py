"""Strategies from YAML: several teachers, born-again, teacher assistants, mutual learning, transfer."""

from __future__ import annotations

import json

import pytest
import torch

from kdistill.config import ConfigError, load_config, validate
from kdistill.experiment import run_experiment
from kdistill.models import build_model

FAST = ["training.epochs=2", "data.batch_size=128"]
REMOVE = object()  # a key to drop from the config
SMALL_TEACHER = {"name": "mlp", "options": {"hidden": [32]}, "training": {"epochs": 2}}


def config_with(raw_edits: dict, overrides: list[str] = ()):
    config = load_config(None, [*FAST, *overrides])
    raw = config.model_dump(mode="json")
    raw.update(raw_edits)
    for key in [k for k, v in raw_edits.items() if v is REMOVE]:
        del raw[key]
    return validate(raw)


def roles(result):
    return [row.role for row in result.rows]


def test_two_teachers_with_confidence_aggregation(tmp_path):
    config = config_with({"teacher": None, "teachers": [SMALL_TEACHER, {**SMALL_TEACHER, "options": {"hidden": [48]}}],
                          "strategy": {"name": "standard", "aggregate": {"name": "confidence", "temperature": 4}}})
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert roles(result)[:2] == ["teacher 1 (mlp)", "teacher 2 (mlp)"]
    assert (tmp_path / "run" / "teacher-1" / "student.pt").exists()
    assert (tmp_path / "run" / "teacher-2" / "student.pt").exists()
    assert "student (distilled)" in roles(result)


def two_teachers(cache, aggregate, second=None):
    teachers = [{**SMALL_TEACHER, "cache": cache}, {**SMALL_TEACHER, "options": {"hidden": [48]}, "cache": cache,
                                                    **(second or {})}]
    return config_with({"teacher": None, "teachers": teachers, "baseline": False,
                        "strategy": {"name": "standard", "aggregate": aggregate}})


def test_two_teachers_with_the_cache_teach_through_their_cached_mixture_as_the_live_run_does(tmp_path):
    # the cache holds one model's outputs: the run caches the aggregator's mixture (a TeacherEnsemble)
    aggregate = {"name": "weighted", "weights": [1, 3], "temperature": 4}
    live = run_experiment(two_teachers(False, aggregate), tmp_path / "live", progress=False)
    cached = run_experiment(two_teachers({"dtype": "float32"}, aggregate), tmp_path / "cached", progress=False)
    entries = list((tmp_path / "cached" / "teacher-cache").rglob("*"))
    assert any(path.is_file() for path in entries), "the teachers' mixture was not cached"
    assert not (tmp_path / "live" / "teacher-cache").exists()
    state = {name: torch.load(tmp_path / run / "student-distilled" / "student.pt", weights_only=True)
             for name, run in (("live", "live"), ("cached", "cached"))}
    for key, value in state["live"].items():
        torch.testing.assert_close(state["cached"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert cached.by_role("student (distilled)").accuracy == live.by_role("student (distilled)").accuracy
    record = json.loads((tmp_path / "cached" / "student-distilled" / "stage.json").read_text())
    assert record["teacher"] == ["mlp", "mlp"]


def test_a_cached_mixture_of_teachers_seeing_other_inputs_is_refused_before_they_train(tmp_path):
    config = two_teachers(True, {"name": "mean"}, second={"normalize": "none"})
    with pytest.raises(ConfigError, match=r"teachers\[\*\]\.normalize: a cached mixture is one model"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "teacher-1").exists()


def test_born_again_generations_and_their_ensemble(tmp_path):
    config = config_with({"teacher": SMALL_TEACHER, "strategy": {"name": "born_again", "generations": 2}})
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert roles(result)[-3:] == ["born-again generation 1", "student (distilled)", "ensemble of 2 generations"]
    for k in (1, 2):
        assert (tmp_path / "run" / "born-again" / f"generation-{k}" / "student.pt").exists()
    record = json.loads((tmp_path / "run" / "born-again" / "generation-2" / "stage.json").read_text())
    assert record["teacher"] == "generation-1"
    first, second = (torch.load(tmp_path / "run" / "born-again" / f"generation-{k}" / "student.pt",
                                weights_only=True) for k in (1, 2))
    assert not torch.allclose(first["head.weight"], second["head.weight"], atol=1e-3)


@pytest.mark.parametrize("strategy", [{"name": "born_again", "generations": 2},
                                      {"name": "teacher_assistant", "assistants": [{"name": "mlp",
                                                                                    "options": {"hidden": [20]}}]}])
def test_each_chained_stage_has_callbacks_of_its_own(tmp_path, strategy):
    # shared ones carried a stage's state into the next, which a run resumed between stages does not
    from helpers import StageSteps

    StageSteps.log.clear()
    config = config_with({"teacher": SMALL_TEACHER, "baseline": False, "strategy": strategy},
                         ["training.callbacks=[helpers:StageSteps]"])
    run_experiment(config, tmp_path / "run", progress=False)
    chained = StageSteps.log[-2:]  # the teacher's own stage comes first
    assert len({identity for identity, _ in chained}) == 2
    assert chained[0][1] == chained[1][1], f"the second stage's callback saw the first's steps too: {chained}"


def test_teacher_assistant_chain(tmp_path):
    config = config_with({"teacher": SMALL_TEACHER, "strategy": {
        "name": "teacher_assistant", "assistants": [{"name": "mlp", "options": {"hidden": [20]}}]}})
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert "assistant 1 (mlp)" in roles(result) and roles(result)[-1] == "student (distilled)"
    assert (tmp_path / "run" / "teacher-assistant" / "assistant-1" / "student.pt").exists()


def test_mutual_learning_needs_no_teacher_and_peers_differ(tmp_path):
    config = config_with({"teacher": None, "methods": REMOVE, "strategy": {"name": "mutual", "peers": 2}})
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert roles(result) == ["student (scratch)", "student (distilled)", "mutual peer 2"]
    state = torch.load(tmp_path / "run" / "mutual" / "student.pt", weights_only=True)
    assert not torch.equal(state["peers.0.head.weight"], state["peers.1.head.weight"])
    # `--resume` reads the config the run wrote, which spells the default methods out: still a mutual config
    again = run_experiment(load_config(tmp_path / "run" / "config.yaml"), tmp_path / "run", resume=True,
                           progress=False)
    assert roles(again) == roles(result)


def test_transfer_teacher_of_other_classes(tmp_path):
    path = tmp_path / "teacher7.pt"
    torch.save(build_model("mlp", 7, (1, 8, 8), {"hidden": [32]}).state_dict(), path)
    teacher = {"name": "mlp", "options": {"hidden": [32]}, "checkpoint": str(path), "num_classes": 7}
    logit = config_with({"teacher": teacher})
    with pytest.raises(ConfigError, match="soft_target"):
        run_experiment(logit, tmp_path / "logit", progress=False)
    features = config_with({"teacher": teacher, "methods": [
        {"name": "hard_label", "weight": 1.0},
        {"name": "rkd", "student_layer": "hidden.0", "teacher_layer": "hidden.0"}]})
    result = run_experiment(features, tmp_path / "features", progress=False)
    assert result.by_role("student (distilled)").accuracy > 0.5


@pytest.mark.parametrize("edit, message", [
    ({"teachers": [SMALL_TEACHER, SMALL_TEACHER]}, "teachers: give either teacher (one) or teachers"),
    ({"teacher": None, "teachers": [SMALL_TEACHER, SMALL_TEACHER]}, "strategy.aggregate: several teachers need"),
    ({"teacher": None, "teachers": [SMALL_TEACHER, SMALL_TEACHER],
      "strategy": {"aggregate": {"name": "weighted", "weights": [1, 2, 3]}}}, "strategy.aggregate.weights: 3 weights"),
    ({"teacher": None}, "teacher: required"),
    ({"strategy": {"name": "teacher_assistant"}}, "strategy.assistants: teacher_assistant needs"),
    ({"strategy": {"name": "born_agian"}}, "strategy.name: unknown strategy 'born_agian'; did you mean 'born_again'?"),
    ({"strategy": {"name": "standard", "generatons": 2}}, "strategy.generatons: not an option of strategy 'standard'"),
    ({"strategy": {"name": "no_such_module_xyz:run"}}, "strategy.name: cannot import module 'no_such_module_xyz'"),
])
def test_strategy_config_errors(edit, message):
    config = load_config(None)
    raw = config.model_dump(mode="json")
    raw.update(edit)
    with pytest.raises(ConfigError) as error:
        validate(raw)
    assert any(p.startswith(message) for p in error.value.problems), error.value.problems
