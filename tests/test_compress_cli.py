"""`kdistill compress`: a plan through the real CLI (the stop rule keeps the largest compression
within the budget) and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdistill.cli import main
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.data.transforms import Normalize
from kdistill.models import build_model


@pytest.fixture(scope="module")
def checkpoint(digits, tmp_path_factory):
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": [64]})
    recover(model, None, bundle.train, RecoverySettings(epochs=10, mode="finetune", lr=0.05),
            Normalize(bundle.mean, bundle.std))
    path = tmp_path_factory.mktemp("ckpt") / "mlp.pt"
    torch.save(model.state_dict(), path)
    return path


def write_plan(tmp_path, checkpoint, **compress) -> str:
    plan = {"name": "digits-mlp", "data": {"name": "digits"},
            "model": {"name": "mlp", "options": {"hidden": [64]}, "checkpoint": str(checkpoint),
                      "normalize": "dataset"},
            "compress": {"recover": {"epochs": 2}, "profile": {"repeats": 3, "warmup": 1}, **compress}}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def test_the_stop_rule_keeps_the_largest_pruning_within_the_budget(tmp_path, checkpoint, capsys):
    plan = write_plan(tmp_path, checkpoint, accuracy_budget=1.0, prune={"ratios": [0.5, 0.97]})
    out = tmp_path / "out"
    assert main(["compress", plan, "--out", str(out), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_stage = {row["stage"]: row for row in rows}
    start = by_stage["start"]["accuracy"]
    assert by_stage["recover 50%"]["accepted"] and by_stage["recover 50%"]["accuracy"] >= start - 0.01
    assert not by_stage["recover 97%"]["accepted"]  # 2 neurons left: outside the budget, so the search stops
    assert by_stage["prune 50%"]["profile"]["parameters"] < by_stage["start"]["profile"]["parameters"]
    weights = load_file(out / "model.safetensors")
    assert weights["hidden.0.0.weight"].shape == (32, 64)  # the deployed model is the 50 % one
    int8 = by_stage["quantize (dynamic int8)"]
    assert int8["artefact"] == "onnx int8" and int8["accepted"] and int8["accuracy"] >= start - 0.01
    assert "max abs diff" in by_stage["export (onnx float)"]["note"]
    assert {p.name for p in out.iterdir()} >= {"compress.md", "compress.json", "model.onnx", "model-int8.onnx",
                                               "model.safetensors"}


@pytest.mark.parametrize(("change", "expected"), [
    ("compress.stages=[prune,shrink]", "compress.stages: unknown stage 'shrink'"),
    ("compress.prune.ratios=[1.5]", "compress.prune.ratios[0]: Input should be less than 1"),
    ("compress.prune.ratios=[0]", "compress.prune.ratios[0]: Input should be greater than 0"),
    ("model.checkpoint=missing.pt", "model.checkpoint: file does not exist: missing.pt"),
    ("compress.stages=[export,prune]", "compress.stages: stages run in the order"),
    ("data.val_fraction=0", "data.val_fraction: compress makes its choices (accuracy budget, targets) on a validation"),
])
def test_bad_input_is_one_line(tmp_path, checkpoint, capsys, change, expected):
    plan = write_plan(tmp_path, checkpoint)
    assert main(["compress", plan, "--set", change, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and expected in error[0]
    assert not (tmp_path / "out").exists()


def test_the_installed_command_reports_a_missing_plan(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kdistill.cli", "compress", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"kdistill: {tmp_path / 'none.yaml'}: no such config file; check the "
                                                "path"]  # compress has no demo to run without a file


def test_an_experiment_file_or_a_misspelt_plan_key_is_named_against_the_plan(tmp_path, checkpoint, capsys):
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({"student": {"name": "mlp"}, "methods": [{"name": "soft_target"}]}))
    assert main(["compress", str(experiment)]) == 2
    assert "this is an experiment file (it has student / methods), not a compress plan" in capsys.readouterr().err
    plan = yaml.safe_load(Path(write_plan(tmp_path, checkpoint)).read_text())
    plan["modle"] = plan.pop("model")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(plan))
    assert main(["compress", str(tmp_path / "typo.yaml")]) == 2
    err = capsys.readouterr().err
    assert "modle: unknown key; remove it or check its spelling (did you mean 'model'?)" in err


def test_a_plan_without_data_is_refused_not_run_on_the_default_digits(tmp_path, checkpoint, capsys):
    plan = yaml.safe_load(Path(write_plan(tmp_path, checkpoint)).read_text())
    del plan["data"]
    (tmp_path / "nodata.yaml").write_text(yaml.safe_dump(plan))
    assert main(["compress", str(tmp_path / "nodata.yaml")]) == 2
    assert "data: required in a compress plan: the data the model was trained on" in capsys.readouterr().err


def test_a_missing_compress_extra_is_said_before_any_stage_runs(tmp_path, checkpoint, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["compress", write_plan(tmp_path, checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert 'need onnxscript, which is not installed: pip install "kdistill[compress]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
