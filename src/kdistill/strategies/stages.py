"""A chain of named stages, each trained by distillation from the one before, each in its own folder.

Born-again networks (generation k+1 learns from generation k) and teacher-assistant chains
(teacher -> assistant(s) -> student) are both such chains; `run_chain` runs one with the same
`Distiller` loop as everything else, and makes it resumable:

    run_dir/
      <stage>/stage.json           who taught this stage (its teacher's stage name and a digest of
                                   the teacher's weights), epochs, methods, seed; written before training
      <stage>/metrics.jsonl        one line per epoch (the Distiller's)
      <stage>/checkpoints/last.pt  the resumable checkpoint (the Distiller's)
      <stage>/student.pt           the trained weights: the stage is done

Every stage of every strategy (the experiment's teachers, scratch baseline and students, chains,
mutual cohorts) goes through one function, `fit_or_load`, with one set of rules:

- without `resume`, a stage folder that already holds anything is an error (`StageExists`):
  nothing is overwritten silently;
- with `resume`, a stage whose `student.pt` exists is loaded, not retrained; an interrupted stage
  continues from its checkpoint (`Distiller.fit(resume=True)`); later stages start fresh;
- a stage whose `stage.json` disagrees with the current call (another teacher or teacher weights,
  other epochs, methods or seed) is an error (`StageMismatch`), for a finished stage as for an
  interrupted one: a stage is never loaded or resumed against another teacher.

A resumed chain ends with the same weights as an uninterrupted one: before each stage the global
RNG is re-seeded from (seed, stage index), so model initialisation and lazily built method parts
do not depend on whether the previous stage was trained or loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.collectives import barrier, broadcast_object, current_world
from kdistill.digest import model_digest
from kdistill.engine import Distiller
from kdistill.engine.checkpoint import atomic_write_text, checkpoint_position
from kdistill.engine.metrics_log import read_records, truncate_records
from kdistill.engine.seed import derive_seed
from kdistill.errors import BadInput, UnreadableFile
from kdistill.methods.base import Method

STAGE_FILE = "stage.json"
FINAL_WEIGHTS = "student.pt"
# Distiller arguments a chain sets itself for every stage
RESERVED = ("teacher", "student", "methods", "run_dir", "description", "teacher_normalization", "teacher_aggregator")
MethodsFactory = Callable[[int, bool], Sequence[Method]]


@dataclass
class ChainStage:
    """One stage: its folder name, how to build its (untrained) model, and for how many epochs."""

    name: str
    make_model: Callable[[], nn.Module]
    epochs: int


@dataclass
class StageResult:
    name: str
    model: nn.Module
    teacher: str | None  # the stage name of its teacher, `first_teacher_name`, or None (labels only)
    directory: Path
    history: list[dict[str, Any]]
    trained: bool  # False when a finished stage was loaded from its folder


@dataclass
class ChainResult:
    run_dir: Path
    stages: list[StageResult] = field(default_factory=list)

    @property
    def models(self) -> list[nn.Module]:
        return [s.model for s in self.stages]

    @property
    def teacher_of(self) -> list[str | None]:
        """For each stage, who taught it (a stage name, the first teacher's name, or None)."""
        return [s.teacher for s in self.stages]

    def __getitem__(self, name: str) -> StageResult:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage '{name}'; stages: {[s.name for s in self.stages]}")


def weights_digest(models: nn.Module | Sequence[nn.Module]) -> str:
    """SHA-256 (16 hex digits) of the models' state dicts: which teacher taught a stage."""
    models = list(models) if isinstance(models, list | tuple) else [models]
    return model_digest(*models)[:16]


def read_metrics(stage_dir: Path) -> list[dict[str, Any]]:
    return read_records(Path(stage_dir) / "metrics.jsonl")


def stage_done(stage_dir: Path) -> bool:
    return (Path(stage_dir) / FINAL_WEIGHTS).exists()


def stage_started(stage_dir: Path) -> bool:
    """The folder holds anything: a finished stage, an interrupted one, or its record."""
    stage_dir = Path(stage_dir)
    return stage_dir.is_dir() and any(stage_dir.iterdir())


class StageExists(FileExistsError):
    """A stage folder already holds a stage, and this call does not resume."""


class StageMismatch(ValueError):
    """A stage folder holds a stage started with another set-up (teacher, epochs, methods, seed)."""


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2))


def _record_problem(stage_dir: Path, record: dict[str, Any] | None) -> str | None:
    path = stage_dir / STAGE_FILE
    if record is None or not path.exists():
        return None
    try:
        previous = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnreadableFile(path, "not a stage record (truncated or edited); delete the stage folder to train "
                                   "this stage again") from None
    for key, value in json.loads(json.dumps(record)).items():  # compared as stored (tuples read back as lists)
        if previous.get(key) != value:
            return (f"{stage_dir}: this stage was started with {key}={previous.get(key)!r}, but this run asks for "
                    f"{key}={value!r}; use another run directory (or delete {stage_dir})")
    return None


def _verdict(stage_dir: Path, record: dict[str, Any] | None, resume: bool) -> tuple[str, str]:
    """('load' | 'resume' | 'fresh', '') or ('exists' | 'mismatch' | 'unreadable', message): the one rule for
    every stage, decided by rank 0 (a damaged stage record or checkpoint is named on every rank)."""
    if not resume:
        if stage_started(stage_dir):
            return "exists", (f"{stage_dir} already holds a stage; continue it with resume=True (kdistill run "
                              "--resume), or choose another run directory")
        return "fresh", ""
    try:
        problem = _record_problem(stage_dir, record)
        if problem is not None:
            return "mismatch", problem
        if stage_done(stage_dir):
            return "load", ""
        checkpoint = stage_dir / "checkpoints" / "last.pt"
        if not checkpoint.exists():
            return "fresh", ""
        checkpoint_position(checkpoint)  # a damaged checkpoint is named now, not after the Distiller is built
    except BadInput as error:
        return "unreadable", str(error)
    return "resume", ""


@dataclass
class StageOutcome:
    history: list[dict[str, Any]]
    trained: bool  # False when the finished stage was loaded from its folder
    distiller: Distiller | None  # None when loaded


def load_stage(stage_dir: Path, model: nn.Module) -> nn.Module:
    """Load a finished stage's weights (`student.pt`) into `model`."""
    model.load_state_dict(torch.load(Path(stage_dir) / FINAL_WEIGHTS, map_location="cpu", weights_only=True))
    return model


def fit_or_load(stage_dir: str | Path | None, model: nn.Module, make_distiller: Callable[[], Distiller], train: Any,
                val: Any, epochs: int, *, resume: bool = False, record: dict[str, Any] | None = None) -> StageOutcome:
    """This stage is done: load it into `model`; else train it, or resume it from its checkpoint.

    `make_distiller()` builds the stage's `Distiller` (training `model`, writing into `stage_dir`);
    it is called only when the stage trains. `record` (JSON values: who taught the stage and a
    digest of its weights, epochs, methods, seed, ...) is written to `stage.json` before training
    and must match on every later call (see the module's rules). Rank 0 inspects the folder and
    every rank follows its verdict. Without `stage_dir` the stage simply trains.
    """
    if stage_dir is None:
        distiller = make_distiller()
        return StageOutcome(list(distiller.fit(train, val, epochs=epochs)), True, distiller)
    stage_dir = Path(stage_dir)
    world = current_world()
    verdict, message = broadcast_object(_verdict(stage_dir, record, resume) if world.is_main else None)
    if verdict == "exists":
        raise StageExists(message)
    if verdict == "mismatch":
        raise StageMismatch(message)
    if verdict == "unreadable":
        raise BadInput(message)
    if verdict == "load":
        load_stage(stage_dir, model)
        return StageOutcome(read_metrics(stage_dir), False, None)
    if world.is_main:
        if verdict == "resume":
            epochs_done, _ = checkpoint_position(stage_dir / "checkpoints" / "last.pt")
            truncate_records(stage_dir, epochs_done)  # epochs logged after it are logged again
        if record is not None:
            _write_json(stage_dir / STAGE_FILE, record)
    barrier()
    distiller = make_distiller()
    history = distiller.fit(train, val, epochs=epochs, resume=verdict == "resume")
    return StageOutcome(list(history), True, distiller)


def check_distiller_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(set(kwargs) & set(RESERVED))
    if clash:
        raise ValueError(f"distiller_kwargs: {clash} are set by the strategy for each stage; pass the first "
                         "teacher's normalisation as teacher_normalization= to the strategy itself")
    return dict(kwargs)


def run_chain(
    stages: Sequence[ChainStage],
    train: Any,
    val: Any,
    run_dir: str | Path,
    methods_factory: MethodsFactory,
    *,
    first_teacher: nn.Module | Sequence[nn.Module] | None = None,
    first_teacher_name: str = "teacher",
    teacher_normalization: Any = None,
    teacher_aggregator: Callable | None = None,
    distiller_kwargs: dict[str, Any] | None = None,
    resume: bool = False,
    callback: Callable[[str, Distiller], None] | None = None,
) -> ChainResult:
    """Train `stages` in order; stage 0 learns from `first_teacher` (or labels), stage k from stage k-1.

    `methods_factory(index, has_teacher)` gives each stage its methods (fresh objects each call).
    `distiller_kwargs` go to every stage's `Distiller` (optimizer, schedule, batch_size, seed,
    augment, student_normalization, device, progress, ...); a stage's teacher is seen through
    `student_normalization` (all stages share the data), the first teacher through
    `teacher_normalization`. `callback(stage_name, distiller)` runs before each stage trains (callbacks
    given in `distiller_kwargs` are the same objects in every stage; a stage's own are set there).
    The returned models are in eval mode (each served as the next stage's teacher).
    """
    if not stages:
        raise ValueError("a chain needs at least one stage")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be distinct: {names}")
    kwargs = check_distiller_kwargs(distiller_kwargs or {})
    seed = int(kwargs.get("seed", 0))
    run_dir = Path(run_dir)
    if not resume:  # fail before training anything (`fit_or_load` refuses each stage too)
        started = [n for n in names if stage_started(run_dir / n)] if current_world().is_main else []
        started = broadcast_object(started)  # rank 0 decides (other ranks may already be writing stage 0)
        if started:
            raise StageExists(f"{run_dir} already holds stages {started}; continue them with resume=True, or "
                              "choose another run_dir")
    result = ChainResult(run_dir)
    teacher: nn.Module | Sequence[nn.Module] | None = first_teacher
    teacher_name: str | None = first_teacher_name if first_teacher is not None else None
    for index, stage in enumerate(stages):
        if not isinstance(stage.epochs, int) or isinstance(stage.epochs, bool) or stage.epochs < 1:
            raise ValueError(f"{stage.name}: epochs must be an integer >= 1 (got {stage.epochs!r})")
        stage_dir = run_dir / stage.name
        torch.manual_seed(derive_seed(seed, 1000 + index))
        model = stage.make_model()
        methods = list(methods_factory(index, teacher is not None))
        record = {
            "stage": stage.name,
            "index": index,
            "teacher": teacher_name,
            "teacher_dir": teacher_name if index > 0 else None,
            "teacher_weights": weights_digest(teacher) if teacher is not None else None,
            "epochs": stage.epochs,
            "methods": [m.name for m in methods],
            "seed": seed,
        }

        def make_distiller(stage=stage, model=model, methods=methods, teacher=teacher, first=index == 0,
                           stage_dir=stage_dir) -> Distiller:
            teacher_norm = teacher_normalization if first else kwargs.get("student_normalization")
            distiller = Distiller(teacher, model, methods, run_dir=stage_dir, description=stage.name,
                                  teacher_normalization=teacher_norm if teacher is not None else None,
                                  teacher_aggregator=teacher_aggregator if first else None, **kwargs)
            if callback is not None:
                callback(stage.name, distiller)
            return distiller

        outcome = fit_or_load(stage_dir, model, make_distiller, train, val, stage.epochs, resume=resume,
                              record=record)
        result.stages.append(StageResult(stage.name, model, teacher_name, stage_dir, outcome.history,
                                         trained=outcome.trained))
        model.eval()
        teacher, teacher_name = model, stage.name
    return result


__all__ = ["ChainResult", "ChainStage", "StageExists", "StageMismatch", "StageOutcome", "StageResult", "fit_or_load",
           "load_stage", "read_metrics", "run_chain", "stage_done", "stage_started", "weights_digest"]
