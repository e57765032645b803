"""Each kind of bad config gets one clear line naming the field; the CLI exits 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kdistill.cli import main
from kdistill.config import ConfigError, apply_override, load_config, load_raw, validate


def demo_raw() -> dict:
    return load_raw(None)


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        validate(raw)
    return error.value.problems


def test_demo_preset_is_valid():
    config = validate(demo_raw())
    assert config.data.name == "digits" and config.methods[0].name == "soft_target"


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["training"].update(epochz=3), "training.epochz: unknown key"),
    (lambda r: r["training"].update(epochs="many"), "training.epochs: Input should be a valid integer"),
    (lambda r: r["training"].update(epochs=0), "training.epochs: Input should be greater than 0"),
    (lambda r: r["methods"][0].update(temperature=-1), "methods[0].temperature: must be > 0"),
    (lambda r: r["methods"][1].update(name="hard_lable"),
     "methods[1].name: unknown method 'hard_lable'; did you mean"),
    (lambda r: r["student"].update(name="resnet21"), "student.name: unknown model 'resnet21'"),
    (lambda r: r["teacher"].update(checkpoint="/nonexistent/teacher.pt"), "teacher.checkpoint: file does not exist"),
    (lambda r: r["data"].update(root="/nonexistent/mnist"), "data.root: path does not exist"),
    (lambda r: r["data"].update(name="mnits"), "data.name: unknown dataset 'mnits'; did you mean 'mnist'"),
    (lambda r: r["training"]["optimizer"].update(name="adamx"),
     "training.optimizer.name: unknown optimizer 'adamx'; did you mean 'Adamax'? available (any case): "),
    (lambda r: r["training"]["optimizer"].update(name="adamw"),  # the demo's momentum: 0.9 is SGD's
     "training.optimizer.momentum: not an argument of torch.optim.AdamW"),
    (lambda r: r["teacher"]["training"]["schedule"].update(name="ExponentialLR"),
     "teacher.training.schedule.gamma: required by torch.optim.lr_scheduler.ExponentialLR"),
    (lambda r: r["teacher"].update(cache={"directory": "c", "dtype": "float8"}),
     "teacher.cache.dtype: Input should be 'float16' or 'float32'"),
    (lambda r: r.pop("student"), "student: required; add it"),
    (lambda r: r["methods"][0].update(start_epoch=-1), "methods[0].start_epoch: must be an integer >= 0"),
    (lambda r: r["methods"][0].update(temperature="hot"), "methods[0].temperature: must be a number (got 'hot')"),
    (lambda r: r["teacher"].update(normalize="imagenet"),
     "teacher.normalize: must be dataset, none or {mean: [...], std: [...]} (got 'imagenet')"),
    (lambda r: r["student"]["options"].update(dropuot=0.1), "student.options.dropuot: not an option of model 'mlp'"),
    (lambda r: r["teacher"].update(cache={"views": 0}), "teacher.cache.views: Input should be greater than 0"),
    (lambda r: (r["teacher"].update(cache=True), r["methods"].append(
        {"name": "hint", "student_layer": "hidden.0", "teacher_layer": "head:input"})),
     "teacher.cache: the cache holds logits only"),
    (lambda r: r.update(strategy={"name": "mutual"}, methods=[{"name": "soft_target", "temperature": 2}]),
     "methods: strategy mutual trains its peers with its own loss"),
    (lambda r: r.update(teacher=None, teachers=[r["teacher"], r["teacher"]],
                        strategy={"aggregate": {"name": "weighted", "weights": 0.5}}),
     "strategy.aggregate.weights: must be a list"),
    (lambda r: r.update(teacher=None, teachers=[r["teacher"], {**r["teacher"], "cache": True}],
                        strategy={"aggregate": {"name": "mean"}}),
     "teachers[1].cache: with several teachers the cache holds their mixture, so it is on for all of them or none"),
    (lambda r: r.update(teacher=None, teachers=[{**r["teacher"], "cache": True},
                                                {**r["teacher"], "cache": {"dtype": "float32"}}],
                        strategy={"aggregate": {"name": "mean"}}),
     "teachers[0].cache: with several teachers the cache holds their mixture, so it is on for all of them or none; "
     "give every teacher the same cache settings (now on for teachers [0, 1] of 2, with different settings)"),
    (lambda r: r.update(teacher=None, teachers=[{**r["teacher"], "cache": True}] * 2,
                        strategy={"aggregate": {"name": "confidence"}}),
     "strategy.aggregate: caching several teachers caches their mixture, which must be fixed per image"),
    (lambda r: (r.update(teacher=None, teachers=[{**r["teacher"], "cache": {"features": True}}] * 2,
                         strategy={"aggregate": {"name": "mean"}}),
                r["methods"].append({"name": "hint", "student_layer": "hidden.0", "teacher_layer": "head:input"})),
     "methods: hint read teachers' layers, which a cached mixture of several teachers does not hold"),
    (lambda r: r["methods"][0].update(start_epoch=60), "methods[0].start_epoch: 60 >= training.epochs 60, so "
                                                       "soft_target never runs; lower start_epoch or train longer"),
    (lambda r: [m.update(weight=0) for m in r["methods"]], "methods: every method has weight 0"),
    (lambda r: (r["teacher"].update(cache=True), r.update(strategy={"name": "born_again"})),
     "teacher.cache: strategy 'born_again' does not use the teacher cache"),
])
def test_each_bad_field_is_named(edit, expected):
    raw = demo_raw()
    edit(raw)
    problems = problems_of(raw)
    assert any(p.startswith(expected) for p in problems), problems


def test_overrides_reach_nested_fields_and_lists():
    raw = demo_raw()
    apply_override(raw, "training.epochs=5")
    apply_override(raw, "methods.0.temperature=8")
    apply_override(raw, "data.augment.crop_padding=2")
    config = validate(raw)
    assert config.training.epochs == 5
    assert config.methods[0].options()["temperature"] == 8
    assert config.data.augment.crop_padding == 2
    with pytest.raises(ConfigError, match="not an index"):
        apply_override(raw, "methods.7.weight=1")
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_override(raw, "training.epochs")
    with pytest.raises(ConfigError, match=r"--set training.epochs: the value is not valid YAML"):
        apply_override(raw, "training.epochs=[5")


def test_output_dir_is_taken_verbatim(tmp_path):
    config = load_config(None, values={"output_dir": str(tmp_path / "2024-01-01")})
    assert config.output_dir == tmp_path / "2024-01-01"


def test_teacher_checkpoint_of_wrong_class_count(tmp_path):
    import torch

    from kdistill.models import build_model

    path = tmp_path / "teacher.pt"
    torch.save(build_model("mlp", 7, (1, 8, 8), {"hidden": [16]}).state_dict(), path)
    raw = demo_raw()
    raw["teacher"] = {"name": "mlp", "options": {"hidden": [16]}, "checkpoint": str(path)}
    config = validate(raw)
    from kdistill.experiment import run_experiment

    with pytest.raises(ConfigError, match=r"teacher.checkpoint: .*head.weight: checkpoint \(7, 16\) vs model \(10, 16\)"
                       r".*10 classes"):
        run_experiment(config, tmp_path / "run", progress=False)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdistill.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    raw = demo_raw()
    raw["methods"][0]["temperature"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run_cli(["run", str(path), "--no-progress"], tmp_path)
    assert result.returncode == 2
    assert "methods[0].temperature: must be > 0" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    result = run_cli(["run", str(path), "--set", "methods.0.temperature=2", "--set", "training.epochz=1"], tmp_path)
    assert result.returncode == 2 and "training.epochz: unknown key" in result.stderr


def test_existing_run_directory_is_never_overwritten(tmp_path):
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    code = main(["run", "--output-dir", str(existing), "--no-progress"])
    assert code == 2
    assert (existing / "keep.txt").read_text() == "precious"
    assert not (existing / "config.yaml").exists()


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_device_flag_is_validated(tmp_path):
    result = run_cli(["run", "--device", "tpu", "--output-dir", str(tmp_path / "x")], tmp_path)
    assert result.returncode == 2 and "training.device: Value error" not in result.stderr
    assert "training.device: must be auto, cpu, cuda, cuda:N or mps" in result.stderr


def test_cuda_without_cuda_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="training.device: CUDA is not available"):
        load_config(None, ["training.device=cuda"])


def test_environment_references_in_paths(tmp_path, monkeypatch):
    from kdistill.config import expand_environment

    monkeypatch.setenv("KD_TEST_ROOT", str(tmp_path))
    monkeypatch.delenv("KD_TEST_UNSET", raising=False)
    assert expand_environment({"a": ["${KD_TEST_ROOT}/x", 3]}) == {"a": [f"{tmp_path}/x", 3]}
    assert expand_environment("${KD_TEST_UNSET:-../shared}/mnist") == "../shared/mnist"
    assert expand_environment("${KD_TEST_UNSET}/mnist") == "${KD_TEST_UNSET}/mnist"  # left for the path check


def test_a_misspelt_key_inside_a_union_field_is_one_line():
    """`teacher.cache` is a mapping or a bool: a misspelt key in the mapping is the problem, not "should be
    a valid boolean" from the union's other member."""
    raw = {"student": {"name": "mlp"}, "teacher": {"name": "cnn", "cache": {"dir": "x"}}}
    assert problems_of(raw) == [
        "teacher.cache.dir: unknown key; remove it or check its spelling (did you mean 'directory'?)"]


def test_an_unknown_key_is_matched_against_its_own_section():
    """The suggestion comes from the keys of the section the key sits in (`training.epoch` -> epochs,
    not some other section's field), and a key with no near spelling there lists what the section takes."""
    raw = demo_raw()
    raw["training"] = {**raw["training"], "epoch": 3}
    assert problems_of(raw) == ["training.epoch: unknown key; remove it or check its spelling (did you mean 'epochs'?)"]
    raw = demo_raw()
    raw["data"] = {**raw["data"], "batch-size": 3}  # a key that looks like one of pydantic's markers
    assert problems_of(raw) == [
        "data.batch-size: unknown key; remove it or check its spelling (did you mean 'batch_size'?)"]
    raw = {"student": {"name": "mlp"}, "teacher": {"name": "cnn", "cache": {"where": "x"}}}
    assert problems_of(raw) == ["teacher.cache.where: unknown key; remove it or check its spelling; this section "
                                "takes directory, dtype, enabled, extra_taps, features, temperature, top_k, views"]


def test_a_misspelt_key_suggests_the_field_and_schema_errors_quote_the_value(tmp_path):
    """`--set trainig.epochs=1` names the key it probably meant; pydantic's own range and type checks
    say which value they refused (kdistill's checks already do: "must be > 0 (got 0)")."""
    assert problems_of({**demo_raw(), "trainig": {"epochs": 1}}) == [
        "trainig: unknown key; remove it or check its spelling (did you mean 'training'?)"]
    (problem,) = problems_of({**demo_raw(), "zzz": 1})
    assert problem.startswith("zzz: unknown key; remove it or check its spelling; the top level takes baseline, ")
    raw = demo_raw()
    raw["data"] = {**raw["data"], "batch_size": 0}
    assert problems_of(raw) == ["data.batch_size: Input should be greater than 0 (got 0)"]
    raw = demo_raw()
    raw["data"] = {**raw["data"], "root": "no/such/folder"}
    (problem,) = problems_of(raw)
    assert problem.startswith("data.root: path does not exist: no/such/folder (a relative path is read from ")
    assert "KDISTILL_DATA" in problem


def test_test_limit_measures_every_model_on_the_same_seeded_subset(tmp_path):
    from kdistill.run.data import load_data

    full, _, _ = load_data(load_config(None))
    bundle, _, _ = load_data(load_config(None, ["data.test_limit=100"]))
    again, _, _ = load_data(load_config(None, ["data.test_limit=100"]))
    assert len(full.test) > 100 and len(bundle.test) == 100
    assert torch.equal(bundle.test.labels, again.test.labels)  # seeded: the same images each time
    rows = {tuple(x.flatten().tolist()) for x in full.test.inputs}
    assert all(tuple(x.flatten().tolist()) in rows for x in bundle.test.inputs)  # a subset of the test split
    with pytest.raises(ConfigError, match="data.test_limit"):
        load_config(None, ["data.test_limit=0"])
