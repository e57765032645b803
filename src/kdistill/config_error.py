"""`ConfigError` (and the spelling hint of its messages) alone, so the modules that read config
files and `--set` overrides can raise it without importing the schema (and the schema can import
them without a cycle)."""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic import BaseModel

from kdistill.errors import BadInput


def field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Every field name of `model` and of the models nested in it (for spelling suggestions)."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for inner in _models_in(field.annotation):
            names |= field_names(inner, seen)
    return names


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def did_you_mean(key: str, schema: type[BaseModel]) -> str:
    """" (did you mean 'training'?)" for a misspelt key, the closest field name anywhere in `schema`."""
    close = difflib.get_close_matches(key, sorted(field_names(schema)), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


class ConfigError(BadInput):
    """A configuration that cannot run; `problems` are `field: message` lines."""
