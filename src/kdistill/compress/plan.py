"""The file `kdistill compress PLAN.yaml` reads: the model to compress (or the student the distil
stage trains from `teacher`), its data (as in an experiment file) and the `compress:` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from kdistill.compress.spec import CompressSpec, Strict, extra_problem
from kdistill.config import DataSpec, ModelSpec, _pydantic_problems
from kdistill.config_error import ConfigError


class CompressPlan(Strict):
    """What `kdistill compress PLAN.yaml` reads. `model`: the model to compress (with its trained
    checkpoint), or the student the distil stage trains from `teacher`."""

    name: str = "compress"
    seed: int = 0
    output_dir: Path | None = None
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec
    teacher: ModelSpec | None = None
    compress: CompressSpec = Field(default_factory=CompressSpec)

    @model_validator(mode="after")
    def _inputs(self) -> CompressPlan:
        distil = "distil" in self.compress.stages
        if distil and (self.teacher is None or self.teacher.checkpoint is None):
            raise ValueError("teacher.checkpoint: the distil stage needs a trained teacher; give teacher: {name: .., "
                             "checkpoint: ..}")
        if not distil and self.model.checkpoint is None:
            raise ValueError("model.checkpoint: required (the trained weights to compress), unless the stages "
                             "start with distil")
        return self


def validate_plan(raw: dict[str, Any]) -> CompressPlan:
    """The plan, or every problem as a `field: fix` line: an experiment file given instead is named as
    one, and the `compress` extra's packages the stages need are checked before any stage runs."""
    if isinstance(raw, dict) and "model" not in raw and ("student" in raw or "methods" in raw):
        raise ConfigError(["this is an experiment file (it has student / methods), not a compress plan: give it a "
                           "compress: section and run it with kdistill run, or write a plan with model: {name, "
                           "checkpoint} (see kdistill compress --help)"])
    if isinstance(raw, dict) and "data" not in raw:  # the schema's default (digits) fits few checkpoints
        raise ConfigError(["data: required in a compress plan: the data the model was trained on (its validation "
                           "split makes every choice), e.g. data: {name: image-folder, root: cifar10.tar.gz}"])
    try:
        plan = CompressPlan.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_pydantic_problems(error, CompressPlan)) from None
    problem = extra_problem(plan.compress)
    if problem:
        raise ConfigError([problem])
    return plan
