"""Language-model configs and runs given to the wrong command, and the LM's own misfits: each is
one line that names what is wrong and which command or setting fits (exit 2), not a message about
a built-in's return type, a silently ignored option, or torch's first line of a load failure."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from lm_fixtures import one_thread  # noqa: F401  (autouse: one thread)
from test_lm_command import write_config

from kdistill.cli import main
from kdistill.config import load_config
from kdistill.errors import EXIT_BAD_INPUT, BadInput

LM_CONFIG = "this is a language-model config (data kdistill.lm:text_corpus): use `kdistill lm CONFIG`"


def lm_run_dir(tmp_path, name: str = "lm-run"):
    """What `kdistill lm` leaves: its config and a results.json of perplexities (no training needed)."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    shutil.copy(write_config(tmp_path, baseline=False), run_dir / "config.yaml")
    (run_dir / "results.json").write_text(json.dumps([{"model": "teacher", "perplexity": 30.0, "nll": 3.4},
                                                      {"model": "student", "perplexity": 40.0, "nll": 3.7}]))
    return run_dir


def test_classification_commands_name_kdistill_lm_for_an_lm_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `pair` writes its work directory under runs/
    config = write_config(tmp_path)
    assert main(["run", config, "--output-dir", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert LM_CONFIG in err and "DataBundle" not in err
    assert main(["pair", config, "--students", "kdistill.lm:causal_lm"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert LM_CONFIG in err and "AttributeError" not in err
    assert not (tmp_path / "runs").exists()  # refused before its work directory is made
    assert main(["eval", "mlp", "--data", "kdistill.lm:text_corpus", "--data-root", str(tmp_path),
                 "--data-options", "{train: train.txt}"]) == EXIT_BAD_INPUT
    assert "--data: this is a language-model config" in capsys.readouterr().err


def test_eval_run_names_an_lm_run_and_where_its_perplexities_are(tmp_path, capsys):
    run_dir = lm_run_dir(tmp_path)
    assert main(["eval", "--run", str(run_dir)]) == EXIT_BAD_INPUT
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "a language-model run" in err and str(run_dir / "results.json") in err and "DataBundle" not in err


def test_is_lm_run_tells_lm_runs_from_classification_runs(tmp_path):
    from kdistill.lm.detect import is_lm_run

    run_dir = lm_run_dir(tmp_path)
    assert is_lm_run(run_dir) and is_lm_run(run_dir / "results.json")
    (run_dir / "config.yaml").unlink()  # the results alone tell it too
    assert is_lm_run(run_dir)
    other = tmp_path / "classification"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump({"name": "d", "data": {"name": "digits"}}))
    (other / "results.json").write_text(json.dumps({"rows": [{"model": "student", "acc": 0.9}]}))
    assert not is_lm_run(other) and not is_lm_run(other / "results.json")
    assert not is_lm_run(tmp_path / "absent") and not is_lm_run(tmp_path / "train.txt")


def test_report_and_compare_name_an_lm_run_as_one(tmp_path, capsys):
    # its results.json exists, in the lm's format: was "no results.json of a finished run"
    from kdistill.cli import main

    run_dir = lm_run_dir(tmp_path)
    for argv in (["report", str(run_dir)], ["compare", str(run_dir), str(run_dir)]):
        assert main(argv) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "a language-model run (kdistill lm" in err and "kdistill report / compare does not read" in err


def test_lm_refuses_a_classification_config_and_run(tmp_path, capsys):
    digits = tmp_path / "digits.yaml"
    digits.write_text(yaml.safe_dump({"name": "digits-demo", "data": {"name": "digits"}, "teacher": {"name": "mlp"},
                                      "student": {"name": "mlp"}, "methods": [{"name": "hard_label"}]}))
    assert main(["lm", str(digits), "--output-dir", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "'digits' is not a text corpus; kdistill lm needs data.name: kdistill.lm:text_corpus" in err
    assert "seed" not in err and not (tmp_path / "out").exists()
    run_dir = tmp_path / "classification-run"
    run_dir.mkdir()
    shutil.copy(digits, run_dir / "config.yaml")
    assert main(["lm", "--resume", str(run_dir)]) == EXIT_BAD_INPUT
    assert f"continue it with `kdistill run --resume {run_dir}`" in capsys.readouterr().err


def test_a_misspelt_model_option_is_refused_before_training(tmp_path, capsys):
    from kdistill.lm import causal_lm

    with pytest.raises(BadInput, match="'n_layers' is not a setting of a gpt2 model.*did you mean 'n_layer'"):
        causal_lm(50, (8,), n_layers=4)
    causal_lm(50, (8,), n_layer=1, n_embd=16, n_head=2, hidden_size=16, resid_pdrop=0.0)  # attribute_map names too
    out = tmp_path / "run"
    config = write_config(tmp_path)
    assert main(["lm", config, "--output-dir", str(out), "--set", "student.options.n_layers=4"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "student.options: 'n_layers' is not a setting" in err and "did you mean 'n_layer'" in err
    assert not out.exists()  # refused before the teacher trained: nothing to resume, nothing left


def test_a_run_into_a_used_directory_is_told_to_resume_with_kdistill_lm(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: x\n")
    assert main(["lm", write_config(tmp_path), "--output-dir", str(out)]) == EXIT_BAD_INPUT
    err = " ".join(capsys.readouterr().err.split())
    assert f"kdistill lm --resume {out}" in err and "kdistill run --resume" not in err


def test_resume_may_change_the_student_before_its_stage_starts(tmp_path, capsys):
    config = write_config(tmp_path, baseline=False)
    run_dir = tmp_path / "run"
    assert main(["lm", config, "--output-dir", str(run_dir), "--no-progress"]) == 0
    capsys.readouterr()
    # the student stage has started (here: finished): its settings are what it computed
    assert main(["lm", "--resume", str(run_dir), "--set", "student.options.n_head=1"]) == EXIT_BAD_INPUT
    assert "refused" in capsys.readouterr().err
    shutil.rmtree(run_dir / "student")  # as after a failure between the teacher's stage and the student's
    (run_dir / "results.json").unlink()
    # what the finished teacher computed still may not change
    assert main(["lm", "--resume", str(run_dir), "--set", "seed=3"]) == EXIT_BAD_INPUT
    assert main(["lm", "--resume", str(run_dir), "--set", "teacher.options.n_head=1"]) == EXIT_BAD_INPUT
    capsys.readouterr()
    assert main(["lm", "--resume", str(run_dir), "--set", "student.options.n_head=1", "--no-progress"]) == 0
    assert json.loads((run_dir / "student" / "config.json").read_text())["n_head"] == 1
    assert load_config(run_dir / "config.yaml").student.options["n_head"] == 1  # the run's config says so
    assert [row["model"] for row in json.loads((run_dir / "results.json").read_text())] == ["teacher", "student"]


def test_a_teacher_checkpoint_that_does_not_fit_is_named_as_kdistill_run_names_it(tmp_path, capsys):
    from kdistill.lm.experiment import build_lm, load_corpus
    from kdistill.lm.models import unwrap

    config_path = write_config(tmp_path, baseline=False)
    config = load_config(config_path)
    corpus, _ = load_corpus(config)
    teacher = build_lm(config.teacher, corpus, "teacher", seed=5)
    # the Hugging Face model's own state dict loads as kdistill's stage weights (`model.` keys) do
    for state in (unwrap(teacher).state_dict(), teacher.state_dict()):
        torch.save(state, tmp_path / "teacher.pt")
        spec = config.teacher.model_copy(update={"checkpoint": tmp_path / "teacher.pt"})
        loaded = build_lm(spec, corpus, "teacher", seed=0)
        torch.testing.assert_close(loaded.state_dict(), teacher.state_dict())
    out = tmp_path / "out"
    assert main(["lm", config_path, "--output-dir", str(out), "--set", f"teacher.checkpoint={tmp_path / 'teacher.pt'}",
                 "--set", "teacher.options.n_embd=16"]) == EXIT_BAD_INPUT
    err = " ".join(capsys.readouterr().err.split())
    assert "teacher.checkpoint:" in err and "does not fit this teacher (GPT2LMHeadModel" in err
    assert "checkpoint (300, 32) vs model (300, 16)" in err.replace(f"({corpus.vocab_size},", "(300,")
    assert "CausalLMScores" not in err
    assert main(["lm", config_path, "--output-dir", str(out), "--set", f"teacher.checkpoint={config_path}"]) == \
        EXIT_BAD_INPUT
    err = " ".join(capsys.readouterr().err.split())
    assert "not a PyTorch checkpoint (it looks like a text file)" in err and "Unpickling" not in err
    assert not out.exists()
