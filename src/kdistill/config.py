"""The schema of one experiment: load YAML, apply `--set` overrides, validate before any work.

Every problem becomes a `ConfigError` whose lines each name a field and the fix, e.g.
`methods[1].temperature: must be > 0 (got -1)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdistill.compress.spec import CompressSpec
from kdistill.config_error import ConfigError, unknown_key_hint
from kdistill.config_files import expand_environment, read_config_file
from kdistill.config_overrides import apply_override
from kdistill.data.label_noise import LabelNoiseSpec
from kdistill.engine.ema import EMASettings
from kdistill.engine.tracking import EarlyStoppingSettings, MetricGoal
from kdistill.registry import RegistryError
from kdistill.settings import CacheSettings, OptimizerSettings, ScheduleSettings
from kdistill.text.transfer_spec import TransferSetSpec
from kdistill.tune.spec import TuneSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NormalizeSpec(Strict):
    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> NormalizeSpec:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same number of channels")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class AugmentOpSpec(BaseModel):
    """One kornia.augmentation class by name, its keyword arguments beside it (checked here)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @model_validator(mode="after")
    def _builds(self) -> AugmentOpSpec:
        from kdistill.data.augment_pipeline import build_op

        try:
            build_op(self.name, self.model_extra or {})
        except ImportError as error:
            raise ValueError(str(error)) from None
        return self


class AugmentSpec(Strict):
    crop_padding: int = Field(0, ge=0)
    horizontal_flip: bool = False
    pipeline: list[AugmentOpSpec] = Field(default_factory=list)  # kornia ops after the crop and flip


class DataSpec(Strict):
    name: str = "digits"
    root: Path | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    train_limit: int | None = Field(None, gt=0)
    # a seeded random subset of the test split, for quick tries: every model of the run is measured on
    # the same images, fewer of them (the report names the count)
    test_limit: int | None = Field(None, gt=0)
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(512, gt=0)
    num_workers: int = Field(0, ge=0)
    drop_last: bool = False  # drop the last partial training batch each epoch
    # text: batch training samples of similar length together (less padding; about 2x faster on SST-2)
    group_by_length: bool = False
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    # corrupt a share of the training labels (never validation or test): kdistill.data.label_noise
    label_noise: LabelNoiseSpec | None = None
    # text data: the distilled student also trains on perturbed copies of the training sentences,
    # labelled by the teacher's logits alone (Tang et al. 2019): kdistill.text.transfer_data
    transfer_set: TransferSetSpec | None = None

    @field_validator("root")
    @classmethod
    def _root_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().exists():
            where = "" if value.expanduser().is_absolute() else f" (a relative path is read from {Path.cwd()})"
            raise ValueError(f"path does not exist: {value}{where}; the examples read shared data from "
                             "${KDISTILL_DATA:-../shared/data}: run them from the repository root or set KDISTILL_DATA")
        return value.expanduser() if value is not None else None


# the optimiser, schedule and cache settings are the engine's own models (one schema for YAML and Python)
OptimizerSpec = OptimizerSettings
ScheduleSpec = ScheduleSettings
CacheSpec = CacheSettings


class TrainingSpec(Strict):
    epochs: int = Field(20, gt=0)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)  # any torch.optim class, by name
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)  # built in, or torch.optim.lr_scheduler
    grad_clip: float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    channels_last: bool = False
    compile: bool = False  # torch.compile the student's training forward (inductor)
    deterministic: bool = False  # bit-repeatable GPU runs (deterministic kernels, slower); the run's value applies
    # the training features (engine/accumulation.py, hooks.py, tracking.py, ema.py, callbacks.py)
    accumulate_steps: int = Field(1, ge=1)  # optimiser step every N batches, each weighted by its share
    eval_every_steps: int | None = Field(None, gt=0)  # also evaluate every N optimiser steps (evaluations.jsonl)
    checkpoint_every_steps: int | None = Field(None, gt=0)  # also write checkpoints/last.pt every N optimiser steps
    best_metric: MetricGoal | None = None  # val/acc or {metric: val/loss, mode: min}: checkpoints/best.pt
    early_stopping: EarlyStoppingSettings | None = None  # {metric: val/loss, patience: 3, mode: min, min_delta: 0}
    ema: EMASettings | None = None  # {decay: 0.999}: evaluated, and the final student
    callbacks: list[str | dict[str, Any]] = Field(default_factory=list)  # package.module:Class, or {name: .., opts}

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "auto" and value.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("callbacks")
    @classmethod
    def _callbacks(cls, value: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        from kdistill.engine.callbacks import check_callback_spec

        for index, spec in enumerate(value):
            try:
                check_callback_spec(spec)
            except (RegistryError, ValueError) as error:
                raise ValueError(f"[{index}] {error}") from None
        return value


class ModelSpec(Strict):
    """An architecture by registry name or `module:factory`, with optional weights."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Path | None = None
    # "dataset": the data set's mean/std; "none"; or {mean, std}. Not given: "dataset" for models trained
    # in the run, "none" for a teacher loaded from a checkpoint (see kdistill.run.normalization)
    normalize: NormalizeSpec | Literal["dataset", "none"] | None = None

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize_form(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict | NormalizeSpec) or value in ("dataset", "none"):
            return value
        raise ValueError(f"must be dataset, none or {{mean: [...], std: [...]}} (got {value!r})")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"file does not exist: {value}")
        return value.expanduser() if value is not None else None


class StudentSpec(ModelSpec):
    """`embedding_init: teacher`: a Hugging Face student's word / position / type embeddings start
    from the teacher's, projected on their top principal directions (kdistill.text.embedding_init).

    `vocabulary: training`: a Hugging Face student keeps only the word embeddings of the tokens the
    training text uses (kdistill.text.vocabulary; the scratch baseline too: it is the same model),
    `vocabulary_size: N` only the N most frequent of them; it is saved with a trimmed tokenizer.
    `vocabulary_fallback`: a dropped token reads as [UNK] (`unk`), or as the kept token nearest to it
    in the student's own word embeddings as built (`nearest`: for a student whose embeddings are
    pretrained, e.g. cut from the teacher by `hf_from_teacher`, or loaded from a checkpoint).
    """

    embedding_init: Literal["teacher"] | None = None
    vocabulary: Literal["training"] | None = None
    vocabulary_size: int | None = Field(None, gt=0)
    vocabulary_fallback: Literal["unk", "nearest"] = "unk"

    @model_validator(mode="after")
    def _size_needs_trimming(self) -> StudentSpec:
        if self.vocabulary_size is not None and self.vocabulary is None:
            raise ValueError("vocabulary_size keeps the most frequent training tokens: set vocabulary: training too")
        if self.vocabulary_fallback == "nearest" and self.vocabulary is None:
            raise ValueError("vocabulary_fallback: nearest reads tokens a trimmed vocabulary dropped as their "
                             "neighbours: set vocabulary: training too")
        if self.vocabulary_fallback == "nearest" and self.embedding_init is not None:
            raise ValueError("vocabulary_fallback: nearest finds neighbours in the student's word embeddings as "
                             "built, which embedding_init: teacher replaces later (they are random when trimmed): "
                             "use a student cut from the teacher (hf_from_teacher) or loaded from a checkpoint, "
                             "or vocabulary_fallback: unk")
        if self.vocabulary_fallback == "nearest" and self.name == "hf_student" and self.checkpoint is None:
            raise ValueError("vocabulary_fallback: nearest finds neighbours in the student's word embeddings, which "
                             "hf_student starts at random: use a student cut from the teacher (hf_from_teacher), "
                             "one loaded from a checkpoint, or vocabulary_fallback: unk")
        return self


class TeacherSpec(ModelSpec):
    """Without a checkpoint the teacher is trained first, with `training` (default: the run's).

    `num_classes` differs from the data's only for a teacher of a related task (transfer): it then
    teaches through feature methods, and logit methods are refused.
    """

    training: TrainingSpec | None = None
    num_classes: int | None = Field(None, gt=1)
    cache: CacheSettings | bool = False  # true: the defaults; without a directory, <run dir>/teacher-cache

    def cache_spec(self) -> CacheSettings | None:
        if self.cache is True:
            return CacheSettings()
        if isinstance(self.cache, CacheSettings) and self.cache.enabled:
            return self.cache
        return None


class MethodSpec(BaseModel):
    """`name` plus the method's own options (checked against the method's constructor)."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AggregateSpec(BaseModel):
    """How several teachers' soft targets combine: `mean`, `weighted` (with `weights`), `confidence`."""

    model_config = ConfigDict(extra="allow")
    name: str = "mean"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StrategySpec(Strict):
    """Who teaches whom: a STRATEGIES name (standard: the teacher(s) teach the student once; born_again,
    mutual, teacher_assistant) or `package.module:attribute`; extra keys are a user strategy's options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "standard"
    aggregate: AggregateSpec | None = None  # with several teachers
    generations: int = Field(3, ge=1)  # born_again
    peers: int = Field(2, ge=2)  # mutual
    mutual_temperature: float = Field(1.0, gt=0)
    assistants: list[ModelSpec] = Field(default_factory=list)  # teacher_assistant, largest first

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def default_methods() -> list[MethodSpec]:
    return [MethodSpec(name="soft_target", weight=0.9, temperature=4.0),
            MethodSpec(name="hard_label", weight=0.1)]


class ExperimentConfig(Strict):
    name: str = "experiment"
    seed: int = 0
    output_dir: Path | None = None
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: TeacherSpec | None = None
    teachers: list[TeacherSpec] | None = Field(None, min_length=1)
    student: StudentSpec
    methods: list[MethodSpec] = Field(default_factory=default_methods, min_length=1)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    baseline: bool = False  # also train the student from scratch, same seed and epochs (reused when kept)
    baselines_dir: Path | None = None  # finished baselines by digest; default: .baselines beside the run dir
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    tune: TuneSpec | None = None  # what `kdistill tune` searches (kdistill.tune.spec); `run` ignores it
    compress: CompressSpec | None = None  # after the strategy: prune, recover, quantize, export (kdistill.compress)

    @model_validator(mode="after")
    def _teachers(self) -> ExperimentConfig:
        if self.teacher is not None and self.teachers is not None:
            raise ValueError("teachers: give either teacher (one) or teachers (a list), not both")
        for spec in self.teacher_specs():  # a teacher trained here runs where the run runs, unless it says
            if spec.training is not None and "device" not in spec.training.model_fields_set:
                spec.training.device = self.training.device
        return self

    def set_device(self, device: str) -> None:
        """`--device`: every stage this run trains, the teachers' own training included."""
        self.training.device = device
        for spec in self.teacher_specs():
            if spec.training is not None:
                spec.training.device = device

    def teacher_specs(self) -> list[TeacherSpec]:
        if self.teachers is not None:
            return list(self.teachers)
        return [self.teacher] if self.teacher is not None else []


# loading --------------------------------------------------------------------------------------------
def _field_location(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The field path without pydantic's union-member and validator markers: field names are
    snake_case (lower, or a torch argument such as T_max), markers are class names (CacheSettings)
    or types (bool, function-after[...])."""
    return tuple(p for p in loc if isinstance(p, int) or ((p[:1].islower() or "_" in p) and "-" not in p
                                                          and p not in ("bool", "int", "float", "str")))


def _format_location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "config"


def _pydantic_problems(error: ValidationError, schema: type[BaseModel] | None = None) -> list[str]:
    """Pydantic's errors as `field: fix` lines; unknown keys are matched against `schema`'s own keys
    (the experiment file's by default; a compress plan passes its own)."""
    schema = schema or ExperimentConfig
    problems = []
    items = [(_field_location(item["loc"]), item) for item in error.errors()]
    for loc, item in items:
        # a union such as `cache: CacheSettings | bool` fails once per member: when the mapping's own
        # problem is named deeper (teacher.cache.dir: unknown key), "should be a valid boolean" is noise
        if item["type"].endswith("_type") and any(other[:len(loc)] == loc and len(other) > len(loc)
                                                  for other, _ in items):
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            # the refused key itself may look like a marker (batch-size, BatchSize): keep it as written
            section, key = _field_location(item["loc"][:-1]), item["loc"][-1]
            loc = (*section, key)
            hint = unknown_key_hint(str(key), schema, section)
            message = f"unknown key; remove it or check its spelling{hint}"
        elif item["type"] == "missing":
            message = "required; add it"
        elif not item["type"].startswith("value_error") and isinstance(item.get("input"), (int, float, str)):
            message += f" (got {item['input']!r})"  # pydantic's own checks do not quote the value
        # a whole-model check (no location) already starts its message with the field it is about
        problems.append(f"{_format_location(loc)}: {message}" if loc else message)
    return problems


def load_raw(path: str | Path | None) -> dict[str, Any]:
    """The raw mapping of the experiment file (None: the built-in demo), file problems named as such."""
    if path is None:
        from importlib.resources import files

        return yaml.safe_load(files("kdistill.presets").joinpath("digits.yaml").read_text())
    return read_config_file(path)


def validate(raw: dict[str, Any]) -> ExperimentConfig:
    """Schema checks, then the checks that need the registries (names, method options)."""
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_pydantic_problems(error)) from None
    from kdistill.config_checks import semantic_problems  # they read the registries (models, methods, ...)

    problems = semantic_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load, apply `--set` overrides, then top-level `values` taken as they are (not parsed as YAML)."""
    raw = load_raw(path)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    raw.update(values or {})
    return validate(raw)


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


__all__ = ["ConfigError", "ExperimentConfig", "apply_override", "dump_config", "expand_environment", "load_config",
           "load_raw", "validate"]
