"""`kdistill lm --resume`: a run interrupted mid-epoch (teacher or student stage) and resumed ends
with the same weights and held-out perplexities as the same run uninterrupted."""

from __future__ import annotations

import json

import pytest
import torch
from lm_fixtures import one_thread  # noqa: F401  (autouse: one thread)
from test_lm_command import write_config

import kdistill.lm.experiment as experiment
from kdistill.cli import main
from kdistill.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED


def interrupt_at(monkeypatch, stage: str, step: int) -> None:
    """Stop (as Ctrl-C does) after `step` training steps of stage `stage` (its Distiller's description)."""
    original = experiment.Distiller

    class Interrupting(original):
        steps = 0

        def train_step(self, *args, **kwargs):
            out = super().train_step(*args, **kwargs)
            if self.description == stage:
                Interrupting.steps += 1
                if Interrupting.steps == step:
                    self.request_stop()
            return out

    monkeypatch.setattr(experiment, "Distiller", Interrupting)


def weights(run_dir, stage: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / stage / "student.pt", weights_only=True)


@pytest.mark.parametrize(("stage", "step"), [("teacher", 3), ("student", 10)])
def test_an_interrupted_lm_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, stage, step):
    config = write_config(tmp_path, baseline=False,
                          training={"epochs": 2, "optimizer": {"name": "adamw", "lr": 0.003}})
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["lm", config, "--output-dir", str(whole), "--no-progress"]) == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, stage, step)
        assert main(["lm", config, "--output-dir", str(cut), "--no-progress"]) == EXIT_INTERRUPTED
    checkpoint = torch.load(cut / stage / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["step_in_epoch"] > 0  # stopped mid-epoch: the hard case
    assert not (cut / stage / "student.pt").exists() and not (cut / "results.json").exists()
    assert main(["lm", "--resume", str(cut), "--no-progress"]) == 0
    for name in ("teacher", "student"):
        reference, resumed = weights(whole, name), weights(cut, name)
        for key, value in reference.items():
            torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
    rows = {r["model"]: r for r in json.loads((whole / "results.json").read_text())}
    again = {r["model"]: r for r in json.loads((cut / "results.json").read_text())}
    assert list(again) == list(rows) == ["teacher", "student"]
    for name, row in rows.items():
        assert again[name]["perplexity"] == pytest.approx(row["perplexity"], rel=1e-5)


def test_resume_refuses_changes_that_alter_finished_stages(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["lm", write_config(tmp_path, baseline=False), "--output-dir", str(run_dir), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["lm", "--resume", str(run_dir), "--set", "training.epochs=3"]) == EXIT_BAD_INPUT
    assert "refused" in capsys.readouterr().err
    assert main(["lm", "--resume", str(tmp_path / "absent")]) == EXIT_BAD_INPUT
    # a finished run resumed: every stage is loaded, nothing retrains, the results are the same
    before = json.loads((run_dir / "results.json").read_text())
    assert main(["lm", "--resume", str(run_dir), "--no-progress"]) == 0
    after = json.loads((run_dir / "results.json").read_text())
    assert [r["perplexity"] for r in after] == pytest.approx([r["perplexity"] for r in before], rel=1e-6)
    # the text changed under the run: its stages were trained on other blocks, refused by name
    (tmp_path / "train.txt").write_text((tmp_path / "train.txt").read_text() + "\none more line of text")
    assert main(["lm", "--resume", str(run_dir), "--no-progress"]) == EXIT_BAD_INPUT
    assert "started with data=" in capsys.readouterr().err
