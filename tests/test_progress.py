"""Progress bars: evaluation shows one, and work inside a training run's live bar adds its task to
that bar (one display; rich 13, which the requirements allow, refuses a second live display)."""

from __future__ import annotations

import pytest
import torch
from rich.progress import Progress

from kdistill import Distiller
from kdistill.engine.cache import CacheSettings
from kdistill.engine.progress import length_of, progress_bar, progress_task
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model


@pytest.fixture
def tasks(monkeypatch) -> list[str]:
    """Descriptions of every task added to any rich bar (the output taken for a terminal)."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    added: list[str] = []
    add_task = Progress.add_task

    def spy(self, description, *args, **kwargs):
        added.append(description)
        return add_task(self, description, *args, **kwargs)

    monkeypatch.setattr(Progress, "add_task", spy)
    return added


def make(digits, progress: bool) -> Distiller:
    bundle, _, _ = digits
    torch.manual_seed(0)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    return Distiller(None, student, [HardLabel()], batch_size=64, progress=progress, seed=0,
                     student_normalization=(bundle.mean, bundle.std))


def test_validation_inside_a_run_uses_the_live_bar_and_scores_as_without_bars(digits, tasks):
    _, train, val = digits
    shown = make(digits, progress=True)
    history = shown.fit(train, val, epochs=2)
    assert tasks == ["train epoch 1/2", "evaluating the student", "train epoch 2/2", "evaluating the student"]
    quiet = make(digits, progress=False)
    assert [r["val/acc"] for r in quiet.fit(train, val, epochs=2)] == [r["val/acc"] for r in history]
    assert len(tasks) == 4  # bars off: no task at all


def test_evaluation_alone_opens_its_own_bar_and_clears_it(digits, tasks):
    _, _, val = digits
    distiller = make(digits, progress=True)
    metrics = distiller.evaluate(val)
    assert tasks == ["evaluating the student"]
    assert metrics == make(digits, progress=False).evaluate(val)
    with progress_bar(True) as bar:  # nothing left over from the evaluation: a fresh bar opens
        assert bar is not None and not bar.tasks


def test_no_bar_and_no_stray_line_when_the_output_is_not_a_terminal(digits, capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    _, _, val = digits
    make(digits, progress=True).evaluate(val)
    with progress_bar(True) as bar:
        assert bar is None
    assert capsys.readouterr().out == ""


def test_nested_tasks_share_the_outer_bar_and_leave_it_on_error(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    with progress_bar(True) as outer:
        with pytest.raises(RuntimeError), progress_task(True, "inner", 3) as advance:
            advance()
            assert [(t.description, t.completed) for t in outer.tasks] == [("inner", 1)]
            raise RuntimeError("stop")
        assert not outer.tasks
    with progress_task(False, "off", 3) as advance:
        advance()  # a no-op


def test_length_of_a_stream_is_unknown():
    assert length_of([1, 2, 3]) == 3
    assert length_of(iter([1, 2])) is None


class FailsAtCall(torch.nn.Module):
    """Wraps a model and raises on its `n`-th forward call: an error in the middle of a loop."""

    def __init__(self, model: torch.nn.Module, n: int) -> None:
        super().__init__()
        self.model, self.n, self.calls = model, n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("failed mid-loop")
        return self.model(x)


def test_an_error_in_an_epoch_or_a_cache_build_leaves_no_dead_task_on_an_outer_bar(digits, tasks, tmp_path):
    bundle, train, _ = digits
    torch.manual_seed(0)
    student = FailsAtCall(build_model("mlp", 10, (1, 8, 8), {"hidden": [32]}), n=4)  # call 1 builds, 2-3 train
    failing_epoch = Distiller(None, student, [HardLabel()], batch_size=64, progress=True, seed=0)
    teacher = FailsAtCall(build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), n=3)
    failing_cache = Distiller(teacher, build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}),
                              [SoftTarget(temperature=4.0)], batch_size=64, progress=True, seed=0,
                              teacher_cache=CacheSettings(tmp_path / "cache"))
    with progress_bar(True) as outer:
        for distiller, task in ((failing_epoch, "train epoch 1/1"), (failing_cache, "caching teacher outputs")):
            with pytest.raises(RuntimeError, match="failed mid-loop"):
                distiller.fit(train, epochs=1)
            assert task in tasks  # the task was shown ...
            assert not outer.tasks  # ... and left the bar with the error
