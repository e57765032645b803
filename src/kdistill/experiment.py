"""Running one experiment from its config: teacher(s), scratch baseline, the strategy's students.

The run directory holds one sub-directory per stage (`teacher/` or `teacher-k/`,
`student-scratch/`, then the strategy's: `student-distilled/`, `born-again/generation-k/`,
`teacher-assistant/assistant-k/` + `student/`, or `mutual/`), each with its `metrics.jsonl`,
`checkpoints/last.pt` and `student.pt`. A stage whose `student.pt` exists is done; on `--resume`
done stages are loaded, the interrupted one continues from its checkpoint, later ones start fresh.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.config import ConfigError, ExperimentConfig, ModelSpec, TeacherSpec, TrainingSpec, dump_config
from kdistill.data import DATASETS, DataBundle, InMemoryDataset, limit_samples, split_validation
from kdistill.data.transforms import Augment, Normalize, to_float
from kdistill.engine import Distiller
from kdistill.engine.batch import split_batch
from kdistill.engine.distributed import current_world
from kdistill.engine.seed import derive_seed
from kdistill.evaluate import count_parameters, cpu_latency_ms, size_on_disk_bytes
from kdistill.methods import HardLabel, build_method
from kdistill.models import build_model, load_weights
from kdistill.settings import CacheSettings

STAGE_SEEDS = {"teacher": 1, "student": 2}
DISTILLED = "student (distilled)"


@dataclass
class ModelResult:
    role: str
    accuracy: float
    parameters: int
    size_bytes: int
    latency_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    run_dir: Path
    rows: list[ModelResult]

    def by_role(self, role: str) -> ModelResult:
        return next(r for r in self.rows if r.role == role)

    def _gap_parts(self) -> tuple[float, float, float] | None:
        """(best teacher, scratch, distilled) accuracies, where the run has all three."""
        roles = {r.role for r in self.rows}
        if not {"student (scratch)", DISTILLED} <= roles:
            return None
        teachers = [r.accuracy for r in self.rows if r.role.startswith("teacher") and not math.isnan(r.accuracy)]
        if not teachers:
            return None
        return max(teachers), self.by_role("student (scratch)").accuracy, self.by_role(DISTILLED).accuracy

    @property
    def gap_recovered(self) -> float | None:
        """(distilled - scratch) / (teacher - scratch): the share of the gap distillation closed.

        None where it means nothing: no teacher, scratch or distilled row, or a teacher that is
        not better than the scratch student (then there is no gap; a ratio would read as nonsense
        such as "138 %" for a student that lost accuracy)."""
        parts = self._gap_parts()
        if parts is None:
            return None
        teacher, scratch, distilled = parts
        gap = teacher - scratch
        return (distilled - scratch) / gap if gap > 1e-12 else None

    def gap_summary(self) -> str:
        """The gap in words, with a flag where distillation made the student worse."""
        parts = self._gap_parts()
        if parts is None:
            return "Gap recovered: n/a (needs a teacher, a scratch student and a distilled student)."
        teacher, scratch, distilled = (100 * p for p in parts)
        change = f"{distilled - scratch:+.2f} points against scratch"
        if teacher - scratch <= 1e-10:
            text = (f"No gap to recover: the teacher ({teacher:.2f} %) is not better than the student trained "
                    f"from scratch ({scratch:.2f} %); the distilled student is at {distilled:.2f} % ({change}).")
        else:
            text = (f"Distillation recovered {100 * self.gap_recovered:.1f} % of the teacher-student accuracy gap "
                    f"({scratch:.2f} % scratch, {distilled:.2f} % distilled, {teacher:.2f} % teacher).")
        if distilled < scratch:
            text += f" WARNING: the distilled student is worse than the one trained from scratch ({change})."
        return text

def new_run_dir(config: ExperimentConfig) -> Path:
    """The configured output directory, which must not exist yet; or a fresh timestamped one."""
    if config.output_dir is not None:
        path = config.output_dir
        if path.exists() and any(path.iterdir()):
            raise ConfigError([f"output_dir: {path} already exists and is not empty; continue it with "
                               f"`kdistill run --resume {path}`, or choose another output_dir"])
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{config.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{config.name}-{stamp}-{suffix}"
    return path


def load_data(config: ExperimentConfig) -> tuple[DataBundle, Any, Any]:
    """The bundle, and the (train, val) sets after the validation split and any limit."""
    loader = DATASETS.get(config.data.name)
    kwargs = dict(config.data.options)
    params = inspect.signature(loader).parameters
    if "root" in params:
        if config.data.root is None and params["root"].default is inspect.Parameter.empty:
            raise ConfigError([f"data.root: required by dataset '{config.data.name}'; give the path to its files"])
        if config.data.root is not None:
            kwargs["root"] = config.data.root
    elif config.data.root is not None:
        raise ConfigError([f"data.root: dataset '{config.data.name}' takes no root; remove it"])
    try:
        bundle = loader(**kwargs)
    except TypeError as error:
        raise ConfigError([f"data.options: {error}"]) from error
    except FileNotFoundError as error:
        raise ConfigError([f"data.root: {error}"]) from error
    if not isinstance(bundle, DataBundle):
        raise ConfigError([f"data.name: '{config.data.name}' returned {type(bundle).__name__}, not a DataBundle"])
    train, val = bundle.train, bundle.val
    if isinstance(train, InMemoryDataset):
        if config.data.train_limit:
            train = limit_samples(train, config.data.train_limit, config.seed)
        if val is None and config.data.val_fraction > 0:
            train, val = split_validation(train, config.data.val_fraction, seed=0)
    return bundle, train, val


def normalization_for(spec: ModelSpec, bundle: DataBundle) -> Normalize:
    if spec.normalize is not None:
        return Normalize(spec.normalize.mean, spec.normalize.std)
    return Normalize(bundle.mean, bundle.std)


def build_participant(spec: ModelSpec, bundle: DataBundle, where: str, seed: int | None,
                      num_classes: int | None = None) -> nn.Module:
    """Build (and load) a model; seeded from `seed` unless None (the caller seeded already)."""
    if seed is not None:
        torch.manual_seed(seed)
    classes = num_classes or bundle.num_classes
    try:
        model = build_model(spec.name, classes, bundle.input_shape, spec.options)
    except (TypeError, ValueError) as error:
        raise ConfigError([f"{where}.options: {error}"]) from error
    if spec.checkpoint is not None:
        try:
            load_weights(model, spec.checkpoint)
        except ValueError as error:
            raise ConfigError([f"{where}.checkpoint: {error} (the model was built for {classes} classes; "
                               f"do the architecture and its class count match the checkpoint?)"]) from error
    return model


def distiller_kwargs(config: ExperimentConfig, training: TrainingSpec, normalize: Normalize, stage_dir: Path | None,
                     description: str, progress: bool) -> dict[str, Any]:
    """What every stage's Distiller shares: optimisation, data handling, precision, seed."""
    return {
        "optimizer": training.optimizer,
        "schedule": training.schedule,
        "batch_size": config.data.batch_size,
        "eval_batch_size": config.data.eval_batch_size,
        "num_workers": config.data.num_workers,
        "drop_last": config.data.drop_last,
        "device": training.device,
        "precision": training.precision,
        "grad_clip": training.grad_clip,
        "seed": config.seed,
        "augment": Augment(config.data.augment.crop_padding, config.data.augment.horizontal_flip, config.seed),
        "student_normalization": normalize,
        "run_dir": stage_dir,
        "progress": progress,
        "description": description,
        "channels_last": training.channels_last,
        "compile": training.compile,
    }


@dataclass
class Teachers:
    """The loaded (or trained) teachers with their specs and input normalisations."""

    specs: list[TeacherSpec]
    models: list[nn.Module]
    norms: list[Normalize]
    aggregator: Any = None

    @property
    def teacher(self) -> nn.Module | list[nn.Module]:
        return self.models[0] if len(self.models) == 1 else self.models

    @property
    def normalization(self) -> Normalize | list[Normalize]:
        return self.norms[0] if len(self.norms) == 1 else self.norms


def run_stage(distiller: Distiller, stage_dir: Path, train: Any, val: Any, epochs: int, resume: bool) -> None:
    """Train one stage, or load its result if it already finished."""
    final = stage_dir / "student.pt"
    if final.exists():
        distiller.student.model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
        distiller.detach_taps()
        return
    has_checkpoint = (stage_dir / "checkpoints" / "last.pt").exists()
    distiller.fit(train, val, epochs=epochs, resume=resume and has_checkpoint)


def _sample_batch(data: Any, batch_size: int, norm: Normalize) -> Any:
    if isinstance(data, InMemoryDataset):
        batch = data.__getitems__(list(range(min(batch_size, len(data)))))
    else:
        batch = torch.utils.data.default_collate([data[i] for i in range(min(batch_size, len(data)))])
    inputs, _, _ = split_batch(batch)
    return norm(to_float(inputs)) if torch.is_tensor(inputs) else inputs


def profile_row(role: str, model: nn.Module, bundle: DataBundle, norm: Normalize, config: ExperimentConfig,
                accuracy: float | None = None) -> ModelResult:
    if accuracy is None:
        evaluator = Distiller(None, model, progress=False, device=config.training.device,
                              eval_batch_size=config.data.eval_batch_size, student_normalization=norm)
        accuracy = evaluator.evaluate(bundle.test)["acc"]
    sample = _sample_batch(bundle.test, 64, norm.cpu())
    latency = cpu_latency_ms(model, sample)
    return ModelResult(role, accuracy, count_parameters(model), size_on_disk_bytes(model), latency)


def prepare_teachers(config: ExperimentConfig, bundle: DataBundle, train: Any, val: Any, run_dir: Path, resume: bool,
                     progress: bool) -> Teachers:
    specs = config.teacher_specs()
    many = len(specs) > 1
    models, norms = [], []
    for index, spec in enumerate(specs):
        where = f"teachers[{index}]" if config.teachers else "teacher"
        seed = derive_seed(config.seed, STAGE_SEEDS["teacher"], index)
        model = build_participant(spec, bundle, where, seed, spec.num_classes)
        norm = normalization_for(spec, bundle)
        if spec.checkpoint is None:
            if spec.num_classes not in (None, bundle.num_classes):
                raise ConfigError([f"{where}.num_classes: a teacher of another task must come with its checkpoint"])
            training = spec.training or config.training
            stage_dir = run_dir / (f"teacher-{index + 1}" if many else "teacher")
            distiller = Distiller(None, model, [HardLabel()], **distiller_kwargs(
                config, training, norm, stage_dir, stage_dir.name, progress))
            run_stage(distiller, stage_dir, train, val, training.epochs, resume)
        model.eval()
        models.append(model)
        norms.append(norm)
    teachers = Teachers(specs, models, norms)
    if config.strategy.aggregate is not None:
        from kdistill.strategies import build_aggregator

        options = config.strategy.aggregate.options()
        if "temperature" not in options:  # the mixture at the temperature the logit methods read it
            temperatures = [float(m.temperature) for m in build_methods(config) if hasattr(m, "temperature")]
            options["temperature"] = max(temperatures, default=1.0)
        teachers.aggregator = build_aggregator(config.strategy.aggregate.name, options)
    return teachers


def build_methods(config: ExperimentConfig) -> list:
    return [build_method(spec.name, spec.options()) for spec in config.methods]


def run_experiment(config: ExperimentConfig, run_dir: Path, resume: bool = False,
                   progress: bool = True) -> ExperimentResult:
    bundle, train, val = load_data(config)
    main_process = current_world().is_main
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run_dir / "config.yaml").write_text(dump_config(config))
    methods = build_methods(config)
    teachers = prepare_teachers(config, bundle, train, val, run_dir, resume, progress)
    if teachers.models:
        from kdistill.strategies import check_label_spaces

        classes = [spec.num_classes or bundle.num_classes for spec in teachers.specs]
        try:
            check_label_spaces(methods, classes, bundle.num_classes)
        except ValueError as error:
            raise ConfigError([f"methods: {error}"]) from error
    rows: list[ModelResult] = []
    if main_process:
        for index, (model, norm) in enumerate(zip(teachers.models, teachers.norms, strict=True)):
            role = "teacher" if len(teachers.models) == 1 else f"teacher {index + 1} ({teachers.specs[index].name})"
            other_task = teachers.specs[index].num_classes not in (None, bundle.num_classes)
            # a teacher of another task has no accuracy on this one
            rows.append(profile_row(role, model, bundle, norm, config, math.nan if other_task else None))

    student_norm = normalization_for(config.student, bundle)
    student_seed = derive_seed(config.seed, STAGE_SEEDS["student"])
    if config.baseline:
        student = build_participant(config.student, bundle, "student", student_seed)
        stage_dir = run_dir / "student-scratch"
        distiller = Distiller(None, student, [HardLabel()], **distiller_kwargs(
            config, config.training, student_norm, stage_dir, stage_dir.name, progress))
        run_stage(distiller, stage_dir, train, val, config.training.epochs, resume)
        if main_process:
            rows.append(profile_row("student (scratch)", student, bundle, student_norm, config))

    strategy = STRATEGY_RUNNERS[config.strategy.name]
    new_rows = strategy(config, bundle, train, val, run_dir, resume, progress, methods, teachers, student_norm,
                        student_seed)
    if main_process:
        rows.extend(new_rows)
    result = ExperimentResult(run_dir, rows)
    if main_process:
        write_results(result)
        from kdistill.report import write_report

        write_report(run_dir, config, result)
    return result


# strategies -----------------------------------------------------------------------------------------
def _cache_settings(config: ExperimentConfig, teachers: Teachers, run_dir: Path) -> CacheSettings | None:
    if len(teachers.specs) != 1:
        return None
    cache = teachers.specs[0].cache_spec()
    if cache is None or cache.directory is not None:
        return cache
    return cache.model_copy(update={"directory": run_dir / "teacher-cache"})


def run_standard(config, bundle, train, val, run_dir, resume, progress, methods, teachers, student_norm,
                 student_seed) -> list[ModelResult]:
    student = build_participant(config.student, bundle, "student", student_seed)
    stage_dir = run_dir / "student-distilled"
    cache = _cache_settings(config, teachers, run_dir)
    distiller = Distiller(teachers.teacher, student, methods, teacher_normalization=teachers.normalization,
                          teacher_aggregator=teachers.aggregator, teacher_cache=cache,
                          **distiller_kwargs(config, config.training, student_norm, stage_dir, stage_dir.name,
                                             progress))
    run_stage(distiller, stage_dir, train, val, config.training.epochs, resume)
    return [profile_row(DISTILLED, student, bundle, student_norm, config)] if current_world().is_main else []


def _factory(config: ExperimentConfig, spec: ModelSpec, bundle: DataBundle, where: str, seed: int | None):
    def make() -> nn.Module:
        return build_participant(spec, bundle, where, seed)

    return make


def _chain_methods(methods: list):
    """Every distillation stage uses the config's methods (fresh copies); a stage without teacher, labels."""

    def factory(_index: int, has_teacher: bool) -> list:
        return [copy.deepcopy(m) for m in methods] if has_teacher else [HardLabel()]

    return factory


def _chain_kwargs(config: ExperimentConfig, student_norm: Normalize, progress: bool) -> dict[str, Any]:
    """Distiller settings for chained stages: the chain names each stage and gives its directory."""
    kwargs = distiller_kwargs(config, config.training, student_norm, None, "", progress)
    del kwargs["run_dir"], kwargs["description"]
    return kwargs


def run_born_again(config, bundle, train, val, run_dir, resume, progress, methods, teachers, student_norm,
                   student_seed) -> list[ModelResult]:
    from kdistill.strategies import born_again

    kwargs = _chain_kwargs(config, student_norm, progress)
    # seed None: each generation starts from its own seeded initialisation (set by the chain)
    result = born_again(_factory(config, config.student, bundle, "student", None), train, val,
                        config.strategy.generations, run_dir / "born-again", epochs=config.training.epochs,
                        initial_teacher=teachers.teacher if teachers.models else None,
                        teacher_normalization=teachers.normalization if teachers.models else None,
                        teacher_aggregator=teachers.aggregator, methods_factory=_chain_methods(methods),
                        distiller_kwargs=kwargs, resume=resume)
    if not current_world().is_main:
        return []
    generations = result.generations
    rows = [profile_row(DISTILLED if k == len(generations) else f"born-again generation {k}", model, bundle,
                        student_norm, config) for k, model in enumerate(generations, start=1)]
    accuracy = result.evaluate_ensemble(bundle.test, student_norm)["acc"]
    rows.append(ModelResult(f"ensemble of {len(generations)} generations", accuracy,
                            sum(r.parameters for r in rows), sum(r.size_bytes for r in rows),
                            sum(r.latency_ms for r in rows)))
    return rows


def run_teacher_assistant(config, bundle, train, val, run_dir, resume, progress, methods, teachers, student_norm,
                          student_seed) -> list[ModelResult]:
    from kdistill.strategies import teacher_assistant_chain

    kwargs = _chain_kwargs(config, student_norm, progress)
    assistants = [_factory(config, spec, bundle, f"strategy.assistants[{i}]", None)
                  for i, spec in enumerate(config.strategy.assistants)]
    result = teacher_assistant_chain(teachers.teacher, assistants,
                                     _factory(config, config.student, bundle, "student", None), train, val,
                                     run_dir / "teacher-assistant", epochs=config.training.epochs,
                                     teacher_normalization=teachers.normalization,
                                     teacher_aggregator=teachers.aggregator, methods_factory=_chain_methods(methods),
                                     distiller_kwargs=kwargs, resume=resume)
    if not current_world().is_main:
        return []
    rows = [profile_row(f"assistant {k} ({spec.name})", model, bundle, student_norm, config)
            for k, (spec, model) in enumerate(zip(config.strategy.assistants, result.assistants, strict=True), start=1)]
    rows.append(profile_row(DISTILLED, result.student, bundle, student_norm, config))
    return rows


def run_mutual(config, bundle, train, val, run_dir, resume, progress, methods, teachers, student_norm,
               student_seed) -> list[ModelResult]:
    from kdistill.strategies import mutual_learning

    kwargs = distiller_kwargs(config, config.training, student_norm, None, "mutual", progress)
    kwargs.pop("run_dir")
    # seed None: mutual_learning seeds each peer from (seed, peer index), so peers start different
    cohort, distiller = mutual_learning(_factory(config, config.student, bundle, "student", None), train, val,
                                        config.training.epochs, peers=config.strategy.peers,
                                        temperature=config.strategy.mutual_temperature, run_dir=run_dir / "mutual",
                                        resume=resume, distiller_kwargs=kwargs)
    if not current_world().is_main:
        return []
    rows = [profile_row(DISTILLED if k == 0 else f"mutual peer {k + 1}", peer, bundle, student_norm, config)
            for k, peer in enumerate(cohort.peers)]
    return rows


STRATEGY_RUNNERS = {
    "standard": run_standard,
    "born_again": run_born_again,
    "teacher_assistant": run_teacher_assistant,
    "mutual": run_mutual,
}


def write_results(result: ExperimentResult) -> None:
    payload = {
        "rows": [r.__dict__ for r in result.rows],
        "gap_recovered": result.gap_recovered,
    }
    (result.run_dir / "results.json").write_text(json.dumps(payload, indent=2))
