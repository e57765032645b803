"""Running one experiment from its config: teacher, scratch baseline, distilled student.

The run directory holds one sub-directory per stage (`teacher/`, `student-scratch/`,
`student-distilled/`), each with its `metrics.jsonl`, `checkpoints/last.pt` and `student.pt`. A
stage whose `student.pt` exists is done; on `--resume` done stages are loaded, the interrupted
one continues from its checkpoint, and later ones start fresh.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.config import ConfigError, ExperimentConfig, ModelSpec, TrainingSpec, dump_config
from kdistill.data import DATASETS, DataBundle, InMemoryDataset, limit_samples, split_validation
from kdistill.data.transforms import Augment, Normalize
from kdistill.engine import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.engine.batch import split_batch
from kdistill.engine.cache import CacheSettings
from kdistill.engine.distributed import current_world
from kdistill.engine.seed import derive_seed
from kdistill.evaluate import count_parameters, cpu_latency_ms, size_on_disk_bytes
from kdistill.methods import HardLabel, build_method
from kdistill.models import build_model, load_weights

STAGE_SEEDS = {"teacher": 1, "student": 2}


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

    @property
    def gap_recovered(self) -> float | None:
        """(distilled - scratch) / (teacher - scratch): the share of the gap distillation closed."""
        roles = {r.role for r in self.rows}
        if not {"teacher", "student (scratch)", "student (distilled)"} <= roles:
            return None
        teacher = self.by_role("teacher").accuracy
        scratch = self.by_role("student (scratch)").accuracy
        distilled = self.by_role("student (distilled)").accuracy
        gap = teacher - scratch
        return (distilled - scratch) / gap if abs(gap) > 1e-12 else None


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


def build_participant(spec: ModelSpec, bundle: DataBundle, where: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    try:
        model = build_model(spec.name, bundle.num_classes, bundle.input_shape, spec.options)
    except TypeError as error:
        raise ConfigError([f"{where}.options: {error}"]) from error
    if spec.checkpoint is not None:
        try:
            load_weights(model, spec.checkpoint)
        except ValueError as error:
            raise ConfigError([f"{where}.checkpoint: {error} (the data has {bundle.num_classes} classes; "
                               f"do the architecture and its class count match the checkpoint?)"]) from error
    return model


def _distiller(config: ExperimentConfig, training: TrainingSpec, teacher: nn.Module | None, student: nn.Module,
               methods: list, bundle: DataBundle, stage_dir: Path, description: str, progress: bool) -> Distiller:
    teacher_norm = normalization_for(config.teacher, bundle) if teacher is not None else None
    cache = config.teacher.cache_spec() if teacher is not None else None
    cache_settings = None
    if cache is not None:
        directory = cache.directory or stage_dir.parent / "teacher-cache"
        cache_settings = CacheSettings(directory, cache.dtype, cache.top_k, cache.views, cache.temperature)
    return Distiller(
        teacher,
        student,
        methods,
        optimizer=OptimizerSettings(**training.optimizer.model_dump()),
        schedule=ScheduleSettings(**training.schedule.model_dump()),
        batch_size=config.data.batch_size,
        eval_batch_size=config.data.eval_batch_size,
        num_workers=config.data.num_workers,
        device=training.device,
        precision=training.precision,
        grad_clip=training.grad_clip,
        seed=config.seed,
        augment=Augment(config.data.augment.crop_padding, config.data.augment.horizontal_flip, config.seed),
        student_normalization=normalization_for(config.student if description != "teacher" else config.teacher,
                                                bundle),
        teacher_normalization=teacher_norm,
        run_dir=stage_dir,
        progress=progress,
        description=description,
        teacher_cache=cache_settings,
        channels_last=training.channels_last,
    )


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
    from kdistill.data.transforms import to_float

    if isinstance(data, InMemoryDataset):
        batch = data.__getitems__(list(range(min(batch_size, len(data)))))
    else:
        batch = torch.utils.data.default_collate([data[i] for i in range(min(batch_size, len(data)))])
    inputs, _, _ = split_batch(batch)
    return norm(to_float(inputs)) if torch.is_tensor(inputs) else inputs


def profile_row(role: str, model: nn.Module, distiller: Distiller, bundle: DataBundle, norm: Normalize,
                which: str | int = "student") -> ModelResult:
    metrics = distiller.evaluate(bundle.test, which)
    sample = _sample_batch(bundle.test, 64, norm.cpu())
    return ModelResult(role, metrics["acc"], count_parameters(model), size_on_disk_bytes(model),
                       cpu_latency_ms(model, sample))


def run_experiment(config: ExperimentConfig, run_dir: Path, resume: bool = False,
                   progress: bool = True) -> ExperimentResult:
    bundle, train, val = load_data(config)
    main_process = current_world().is_main
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run_dir / "config.yaml").write_text(dump_config(config))
    methods = [build_method(spec.name, spec.options()) for spec in config.methods]
    rows: list[ModelResult] = []

    # 1. the teacher: loaded, or trained on the labels
    teacher = build_participant(config.teacher, bundle, "teacher", derive_seed(config.seed, STAGE_SEEDS["teacher"]))
    teacher_training = config.teacher.training or config.training
    teacher_dir = run_dir / "teacher"
    if config.teacher.checkpoint is None:
        distiller = _distiller(config, teacher_training, None, teacher, [HardLabel()], bundle, teacher_dir,
                               "teacher", progress)
        run_stage(distiller, teacher_dir, train, val, teacher_training.epochs, resume)
    else:
        distiller = _distiller(config, teacher_training, None, teacher, [HardLabel()], bundle, teacher_dir,
                               "teacher", progress)
    rows.append(profile_row("teacher", teacher, distiller, bundle, normalization_for(config.teacher, bundle)))
    teacher.eval()

    # 2. the student from scratch, then 3. by distillation: same initial weights, epochs and seed
    student_seed = derive_seed(config.seed, STAGE_SEEDS["student"])
    stages = [("student-scratch", "student (scratch)", None, [HardLabel()])] if config.baseline else []
    stages.append(("student-distilled", "student (distilled)", teacher, methods))
    for directory, role, stage_teacher, stage_methods in stages:
        student = build_participant(config.student, bundle, "student", student_seed)
        stage_dir = run_dir / directory
        distiller = _distiller(config, config.training, stage_teacher, student, stage_methods, bundle, stage_dir,
                               directory, progress)
        run_stage(distiller, stage_dir, train, val, config.training.epochs, resume)
        rows.append(profile_row(role, student, distiller, bundle, normalization_for(config.student, bundle)))

    result = ExperimentResult(run_dir, rows)
    if main_process:
        write_results(result)
        from kdistill.report import write_report

        write_report(run_dir, config, result)
    return result


def write_results(result: ExperimentResult) -> None:
    payload = {
        "rows": [r.__dict__ for r in result.rows],
        "gap_recovered": result.gap_recovered,
    }
    (result.run_dir / "results.json").write_text(json.dumps(payload, indent=2))
