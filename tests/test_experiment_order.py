"""A run measures its teachers and scratch baseline on the test set after every stage has trained.

Measuring first cost minutes before a resumed run could go on training (SST-2: about 2.5 minutes
of test-set evaluation and timing on each resume), so a run stopped and resumed in short slots
made almost no progress."""

from __future__ import annotations

import kdistill.experiment as experiment
import kdistill.run.context as context
from kdistill.config import load_config
from kdistill.engine import Distiller
from kdistill.experiment import run_experiment


def test_teacher_and_scratch_rows_are_measured_after_the_last_stage_trains(tmp_path, monkeypatch):
    events: list[str] = []
    fit, profile_row = Distiller.fit, experiment.profile_row

    def logged_fit(self, *args, **kwargs):
        events.append(f"fit {self.description or 'stage'}")
        return fit(self, *args, **kwargs)

    def logged_profile(role, *args, **kwargs):
        events.append(f"measure {role}")
        return profile_row(role, *args, **kwargs)

    monkeypatch.setattr(Distiller, "fit", logged_fit)
    monkeypatch.setattr(experiment, "profile_row", logged_profile)
    monkeypatch.setattr(context, "profile_row", logged_profile)
    config = load_config(None, ["teacher.training.epochs=1", "training.epochs=1", f"output_dir={tmp_path}"])
    result = run_experiment(config, tmp_path / "run", progress=False)

    fits = [i for i, e in enumerate(events) if e.startswith("fit")]
    assert len(fits) == 3, events  # teacher, scratch, distilled
    measured = {e.removeprefix("measure "): i for i, e in enumerate(events) if e.startswith("measure")}
    assert measured["teacher"] > fits[-1] and measured["student (scratch)"] > fits[-1], events
    # the table keeps its order: teacher, scratch, then the strategy's rows
    assert [r.role for r in result.rows] == ["teacher", "student (scratch)", "student (distilled)"]
