"""Callbacks, gradient accumulation, periodic evaluation and checkpoints, the best checkpoint, early
stopping, top-5 accuracy and the EMA of the student: each works, and each resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import RequestStopAt, StepCounter, StopAtStep
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdistill import Callback, Distiller, OptimizerSettings, ScheduleSettings, TrainingInterrupted
from kdistill.config import ConfigError, validate
from kdistill.data.transforms import Augment
from kdistill.engine.checkpoint import load_checkpoint
from kdistill.engine.ema import EMASettings, ModelEMA
from kdistill.engine.evaluation import evaluate_model
from kdistill.engine.tracking import EarlyStopper, EarlyStoppingSettings, MetricGoal
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

# 1211 training samples: 19 batches of 64 an epoch (the last of 59)


def make(digits, run_dir=None, *, methods=None, batch_size=64, dropout=0.2, augment=True, momentum=0.9,
         weight_decay=5e-4, **kwargs):
    bundle, _, _ = digits
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32], "dropout": dropout})
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    methods = methods or [SoftTarget(weight=0.7, temperature=4.0), HardLabel(weight=0.3)]
    return Distiller(teacher, student, methods,
                     optimizer=OptimizerSettings(name="sgd", lr=0.05, momentum=momentum, weight_decay=weight_decay),
                     schedule=ScheduleSettings(name="cosine", warmup_epochs=1), batch_size=batch_size,
                     run_dir=run_dir, progress=False, augment=Augment(crop_padding=1 if augment else 0, seed=0),
                     student_normalization=(bundle.mean, bundle.std), teacher_normalization=(bundle.mean, bundle.std),
                     **kwargs)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name].cpu(), b[name].cpu()), f"{name} differs"


def interrupt_then_resume(digits, run_dir, epochs, stop_at, make_kwargs):
    """Stop at optimiser step `stop_at` (from a callback), then resume in a fresh Distiller."""
    _, train, val = digits
    extra = list(make_kwargs.pop("callbacks", []))
    interrupted = make(digits, run_dir, callbacks=[*extra, RequestStopAt(stop_at)], **make_kwargs)
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(train, val, epochs=epochs)
    resumed = make(digits, run_dir, callbacks=[*[type(c)() for c in extra], RequestStopAt(None)], **make_kwargs)
    resumed.fit(train, val, epochs=epochs, resume=True)
    return resumed


# callbacks ------------------------------------------------------------------------------------------
class Recorder(Callback):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_fit_start(self, distiller):
        self.log.append((self.name, "fit_start"))

    def on_step_end(self, distiller, step_info):
        self.log.append((self.name, "step", step_info.global_step))

    def on_evaluate(self, distiller, metrics):
        self.log.append((self.name, "evaluate", metrics["step"]))
        metrics["val/custom"] = float(metrics["step"])  # a callback's own metric, read by best_metric

    def on_epoch_end(self, distiller, record):
        self.log.append((self.name, "epoch_end", record["epoch"]))

    def on_fit_end(self, distiller):
        self.log.append((self.name, "fit_end"))


def test_callbacks_fire_in_a_defined_order(digits, tmp_path):
    _, train, val = digits
    log: list = []
    # batch 256: 5 steps an epoch; every 2 steps an evaluation, except at an epoch's last step (the epoch's own)
    distiller = make(digits, tmp_path / "run", batch_size=256, callbacks=[Recorder("a", log), Recorder("b", log)],
                     eval_every_steps=2, best_metric="val/custom")
    distiller.fit(train, val, epochs=2)
    events = [event[1:] for event in log if event[0] == "a"]
    expected = [("fit_start",)]
    for epoch in range(2):
        for step in range(5 * epoch + 1, 5 * epoch + 6):
            expected.append(("step", step))
            if step % 2 == 0 and step % 5:
                expected.append(("evaluate", step))
        expected += [("evaluate", 5 * epoch + 5), ("epoch_end", epoch + 1)]
    expected.append(("fit_end",))
    assert events == expected
    # each event calls a, then b
    assert [e[0] for e in log] == [n for _ in expected for n in ("a", "b")]
    assert [e[1:] for e in log[1::2]] == expected
    # metrics added by on_evaluate reach the epoch record and the best checkpoint
    assert distiller.history[-1]["val/custom"] == 10.0
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert best["metric"] == "val/custom" and best["value"] == 10.0 and best["step"] == 10
    # step evaluations are logged apart from the epoch records
    lines = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6, 8]
    assert [r["epoch"] for r in lines] == [2 / 5, 4 / 5, 1 + 1 / 5, 1 + 3 / 5]


def test_stateful_callback_survives_resume(digits, tmp_path):
    _, train, val = digits
    reference_counter = StepCounter()
    reference = make(digits, tmp_path / "ref", callbacks=[reference_counter], eval_every_steps=10)
    reference.fit(train, val, epochs=2)
    assert reference_counter.steps == 38 and reference_counter.evaluations == 2 + 3  # epoch ends; steps 10, 20, 30

    resumed = interrupt_then_resume(digits, tmp_path / "run", 2, 25, {"callbacks": [StepCounter()],
                                                                      "eval_every_steps": 10})
    counter = resumed.hooks.callbacks[0]
    assert counter.steps == reference_counter.steps
    assert counter.evaluations == reference_counter.evaluations
    assert torch.equal(counter.loss_sum, reference_counter.loss_sum)
    assert_same_weights(reference.student.model.state_dict(), resumed.student.model.state_dict())
    # a checkpoint with a callback's state refuses a run without that callback
    with pytest.raises(ValueError, match="callbacks"):
        make(digits, tmp_path / "run").fit(train, val, epochs=3, resume=True)


def test_callbacks_from_yaml_import_paths(digits):
    raw = {"student": {"name": "mlp"}, "teacher": {"name": "mlp"},
           "training": {"callbacks": ["helpers:StepCounter", {"name": "helpers:RequestStopAt", "stop_at": 3}],
                        "accumulate_steps": 2, "best_metric": "val/loss", "ema": 0.99,
                        "early_stopping": {"metric": "val/acc", "patience": 2}}}
    training = validate(raw).training
    assert training.best_metric == MetricGoal(metric="val/loss", mode="min")
    assert training.early_stopping.mode == "max" and training.ema.decay == 0.99
    from kdistill.experiment import distiller_kwargs

    kwargs = distiller_kwargs(validate(raw), training, None, None, "student", False)
    assert [type(c).__name__ for c in kwargs["callbacks"]] == ["StepCounter", "RequestStopAt"]
    assert kwargs["callbacks"][1].stop_at == 3 and kwargs["accumulate_steps"] == 2
    _, train, _ = digits
    distiller = make(digits, **{k: kwargs[k] for k in ("callbacks", "accumulate_steps", "ema")})
    with pytest.raises(TrainingInterrupted):
        distiller.fit(train, epochs=1)
    assert distiller.hooks.callbacks[0].steps == 3
    for bad, expected in [(["nosuch_module_xyz:Thing"], "cannot import module"),
                          (["helpers"], "package.module:attribute"),
                          ([{"name": "helpers:StepCounter", "every": 5}], "unexpected keyword argument 'every'")]:
        with pytest.raises(ConfigError) as error:
            validate({**raw, "training": {"callbacks": bad}})
        assert any(p.startswith("training.callbacks: [0]") and expected in p for p in error.value.problems), \
            error.value.problems


# gradient accumulation ------------------------------------------------------------------------------
def test_gradient_accumulation_equals_the_larger_batch(digits):
    """Batch 16 x 4 micro-batches vs batch 64: the same groups of samples (the order depends on the
    seed and epoch only), each step the same mean gradient; the last group (16+16+16+11) weighted by
    its samples as the last batch of 59. SGD without momentum and an MLP without dropout: exact
    up to float rounding (the difference is ~3e-8; weighting the last group 1/4 a batch gives ~1e-4)."""
    _, train, val = digits
    # clipping (0.25: about half the steps) acts on the group's gradient, as on the large batch's
    settings = {"dropout": 0.0, "augment": False, "momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.25}
    large = make(digits, batch_size=64, **settings)
    large.fit(train, val, epochs=2)
    accumulated = make(digits, batch_size=16, accumulate_steps=4, **settings)
    accumulated.fit(train, val, epochs=2)
    assert accumulated.steps_per_epoch == large.steps_per_epoch == 19
    assert accumulated.scheduler.last_epoch == large.scheduler.last_epoch == 38  # the schedule counts steps
    for name, value in large.student.model.state_dict().items():
        torch.testing.assert_close(accumulated.student.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    for a, b in zip(large.history, accumulated.history, strict=True):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
    # without accumulation, batch 16 takes other steps
    small = make(digits, batch_size=16, **settings)
    small.fit(train, epochs=1)
    assert not torch.allclose(small.student.model.head.weight, large.student.model.head.weight, atol=1e-4)


def test_accumulation_interrupt_saves_at_a_group_boundary_and_resumes_exactly(digits, tmp_path):
    _, train, val = digits
    reference = make(digits, tmp_path / "ref", batch_size=16, accumulate_steps=4)
    reference.fit(train, val, epochs=2)
    ref: list = []
    methods = [SoftTarget(weight=0.7, temperature=4.0), HardLabel(weight=0.3), StopAtStep(ref, 86)]
    interrupted = make(digits, tmp_path / "run", batch_size=16, accumulate_steps=4, methods=methods)
    ref.append(interrupted)
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(train, val, epochs=2)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    # asked at micro-batch 86 (epoch 2, its 10th: mid-group), stopped after the group's step
    assert (state["epoch"], state["step_in_epoch"], state["accumulate_steps"]) == (1, 12, 4)
    methods = [SoftTarget(weight=0.7, temperature=4.0), HardLabel(weight=0.3), StopAtStep([None], 10**9)]
    resumed = make(digits, tmp_path / "run", batch_size=16, accumulate_steps=4, methods=methods)
    resumed.fit(train, val, epochs=2, resume=True)
    assert_same_weights(reference.student.model.state_dict(), resumed.student.model.state_dict())
    with pytest.raises(ValueError, match="accumulate_steps"):
        make(digits, tmp_path / "run", batch_size=16, accumulate_steps=2, methods=methods).fit(train, epochs=3,
                                                                                               resume=True)


# periodic evaluation and checkpoints ---------------------------------------------------------------
class CrashAt(Callback):
    def __init__(self, at=None):
        self.at = at

    def on_step_end(self, distiller, step_info):
        if step_info.global_step == self.at:
            raise RuntimeError("simulated crash")


def test_periodic_checkpoint_resumes_after_a_crash(digits, tmp_path):
    _, train, val = digits
    options = {"eval_every_steps": 5, "checkpoint_every_steps": 7}
    reference = make(digits, tmp_path / "ref", **options)
    reference.fit(train, val, epochs=2)
    crashing = make(digits, tmp_path / "run", callbacks=[CrashAt(17)], **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit(train, val, epochs=2)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (0, 14)  # the periodic checkpoint before the crash
    resumed = make(digits, tmp_path / "run", callbacks=[CrashAt(None)], **options)
    resumed.fit(train, val, epochs=2, resume=True)
    assert_same_weights(reference.student.model.state_dict(), resumed.student.model.state_dict())
    read = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "ref" / "evaluations.jsonl").read_text().splitlines()]
    assert [r["step"] for r in read] == [r["step"] for r in expected] == [5, 10, 15, 20, 25, 30, 35]
    assert [r["val/acc"] for r in read] == [r["val/acc"] for r in expected]


# best checkpoint and early stopping ------------------------------------------------------------------
class EpochWeights(Callback):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, distiller, record):
        self.weights.append({k: v.clone() for k, v in distiller.student.model.state_dict().items()})


@pytest.mark.parametrize("goal", ["val/acc", {"metric": "val/loss", "mode": "max"}])  # the worst loss: an early epoch
def test_best_checkpoint_holds_the_best_epochs_weights(digits, tmp_path, goal):
    _, train, val = digits
    weights = EpochWeights()
    distiller = make(digits, tmp_path / "run", callbacks=[weights], best_metric=goal)
    distiller.fit(train, val, epochs=4)
    goal = MetricGoal.coerce(goal)
    values = [r[goal.metric] for r in distiller.history]
    chosen = max(values) if goal.mode == "max" else min(values)
    epoch = values.index(chosen)  # the first epoch with the best value: later ties are no improvement
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert (best["epoch"], best["value"], best["metric"]) == (epoch + 1, chosen, goal.metric)
    assert_same_weights(best["student"], weights.weights[epoch])
    assert distiller.hooks.best.best == chosen
    if goal.metric == "val/loss":
        assert epoch < 3  # not simply the last epoch


def test_best_value_is_restored_on_resume(digits, tmp_path):
    _, train, val = digits
    goal = {"metric": "val/loss", "mode": "max"}
    reference = make(digits, tmp_path / "ref", best_metric=goal, eval_every_steps=10)
    reference.fit(train, val, epochs=2)
    resumed = interrupt_then_resume(digits, tmp_path / "run", 2, 25, {"best_metric": goal, "eval_every_steps": 10})
    assert resumed.hooks.best.best == reference.hooks.best.best
    a = torch.load(tmp_path / "ref" / "checkpoints" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert (a["epoch"], a["value"]) == (b["epoch"], b["value"])
    assert_same_weights(a["student"], b["student"])


def test_early_stopping_counts_epochs_without_improvement():
    stopper = EarlyStopper(EarlyStoppingSettings(metric="val/loss", patience=2))
    assert stopper.settings.mode == "min"
    assert [stopper.update(v) for v in (1.0, 0.9, 0.95, 0.9)] == [False, False, False, True]  # 0.9 is no better
    stopper = EarlyStopper(EarlyStoppingSettings(metric="val/acc", patience=1, min_delta=0.05))
    assert [stopper.update(v) for v in (0.5, 0.6, 0.64)] == [False, False, True]


def test_early_stopping_stops_at_the_expected_epoch_also_after_resume(digits, tmp_path):
    _, train, val = digits
    # no improvement can exceed min_delta: epoch 1 sets the best, epochs 2 and 3 run out the patience
    stopping = {"metric": "val/loss", "patience": 2, "min_delta": 100.0}
    reference = make(digits, tmp_path / "ref", early_stopping=stopping)
    reference.fit(train, val, epochs=10)
    assert [r["epoch"] for r in reference.history] == [1, 2, 3]
    assert reference.history[-1]["early_stopped"] is True
    assert (tmp_path / "ref" / "student.pt").exists()

    resumed = interrupt_then_resume(digits, tmp_path / "run", 10, 30, {"early_stopping": stopping})
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.hooks.early.wait == 2 and resumed.hooks.early.stopped
    assert_same_weights(reference.student.model.state_dict(), resumed.student.model.state_dict())
    # resuming a stopped run trains no further
    again = make(digits, tmp_path / "run", early_stopping=stopping)
    again.fit(train, val, epochs=10, resume=True)
    assert len(again.history) == 3
    with pytest.raises(ValueError, match="needs a validation set"):
        make(digits, early_stopping=stopping).fit(train, epochs=1)


# EMA ------------------------------------------------------------------------------------------------
def test_ema_update_is_the_moving_average():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, EMASettings(decay=0.9))
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randn(4, 3))  # BatchNorm statistics move, and its step counter
    ema.update(model)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(ema.module.state_dict()[name], 0.9 * before[name] + 0.1 * value)
        else:
            assert torch.equal(ema.module.state_dict()[name], value)
    assert EMASettings.model_validate(0.99).decay == 0.99


def test_ema_is_evaluated_saved_as_the_student_and_resumes_exactly(digits, tmp_path):
    _, train, val = digits
    reference = make(digits, tmp_path / "ref", ema={"decay": 0.9})
    reference.fit(train, val, epochs=3)
    raw = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["student"]
    final = torch.load(tmp_path / "ref" / "student.pt", weights_only=True)
    assert_same_weights(final, reference.hooks.ema.module.state_dict())  # the final student is the EMA
    assert not torch.equal(final["head.weight"].cpu(), raw["head.weight"].cpu())  # which is not the raw weights
    assert_same_weights(final, reference.student.model.state_dict())
    assert reference.evaluate(val)["acc"] == reference.history[-1]["val/acc"]  # what was evaluated

    resumed = interrupt_then_resume(digits, tmp_path / "run", 3, 25, {"ema": {"decay": 0.9}})
    assert_same_weights(reference.student.model.state_dict(), resumed.student.model.state_dict())
    assert resumed.hooks.ema.updates == reference.hooks.ema.updates == 57
    assert resumed.history[-1]["val/acc"] == reference.history[-1]["val/acc"]


# top-5 ----------------------------------------------------------------------------------------------
def test_top5_accuracy_against_a_hand_count():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(53, 10, generator=generator)
    labels = torch.randint(0, 10, (53,), generator=generator)
    loader = DataLoader(TensorDataset(logits, labels), batch_size=8)
    metrics = evaluate_model(nn.Identity(), loader, torch.device("cpu"))
    top1 = top5 = 0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        above = sum(value > row[label] for value in row)  # classes scored above the label
        top1 += above == 0
        top5 += above < 5
    assert metrics["acc"] == top1 / 53 and metrics["acc_top5"] == top5 / 53
    assert top1 < top5 < 53
    few = evaluate_model(nn.Identity(), DataLoader(TensorDataset(logits[:, :5], labels % 5), batch_size=8),
                         torch.device("cpu"))
    assert "acc_top5" not in few  # 5 classes or fewer: top-5 says nothing


# DDP: accumulation under no_sync, the group's samples summed over processes, EMA ----------------------
DDP_SAMPLES = 18 * 64 + 3  # at global batch 32 x 2 micro-batches: 18 groups of 64, then one of 3 (2 + 1 per rank)


def ddp_case(run_dir, global_batch: int, accumulate_steps: int, stop_at: int | None = None,
             resume: bool = False) -> Distiller:
    from kdistill.data import load_digits_bundle, split_validation
    from kdistill.methods import Hint

    bundle = load_digits_bundle()
    train, val = split_validation(bundle.train, 0.1, seed=0)
    train = train.subset(torch.arange(DDP_SAMPLES))
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})  # no dropout, no batch norm
    handle: list = []
    methods = [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1),
               Hint(student_layer="hidden.0", teacher_layer="head:input", weight=1.0),  # an adapter: not DDP's
               StopAtStep(handle, stop_at if stop_at is not None else 10**9)]
    distiller = Distiller(teacher, student, methods, optimizer=OptimizerSettings(name="sgd", lr=0.1, momentum=0.9),
                          batch_size=global_batch, accumulate_steps=accumulate_steps, ema=0.9, device="cpu",
                          progress=False, run_dir=run_dir, student_normalization=(bundle.mean, bundle.std),
                          teacher_normalization=(bundle.mean, bundle.std))
    handle.append(distiller)
    distiller.fit(train, val, epochs=2, resume=resume)
    return distiller


def _torchrun(out_dir, mode: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(Path(__file__)), str(out_dir), mode], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_accumulating_equal_one_process_with_the_larger_batch(tmp_path):
    """2 processes x batch 16 x 2 micro-batches, interrupted mid-group and resumed = 1 process at batch 64."""
    reference = ddp_case(None, 64, 1)
    _torchrun(tmp_path, "interrupt")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (0, 26)  # asked at micro-batch 25, stopped after its group
    _torchrun(tmp_path, "resume")
    student = torch.load(tmp_path / "run" / "student.pt", weights_only=True)
    for name, value in reference.student.model.state_dict().items():  # both the EMA
        torch.testing.assert_close(student[name], value, rtol=1e-4, atol=1e-5, msg=name)


if __name__ == "__main__":  # under torchrun, from the test above
    import sys
    from pathlib import Path

    from kdistill.engine.distributed import exit_process, setup_from_env

    setup_from_env()
    torch.set_num_threads(1)
    mode = sys.argv[2]
    try:
        ddp_case(Path(sys.argv[1]) / "run", 32, 2, stop_at=25 if mode == "interrupt" else None,
                 resume=mode == "resume")
    except TrainingInterrupted:
        exit_process(0)
    exit_process(0)
