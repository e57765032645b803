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


def section_fields(schema: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys the mapping at `path` takes (`("teacher", "cache")` -> enabled, directory, ...), or []
    where the path leaves the schema's models (a free-form `options` mapping)."""
    models = [schema]
    for part in path:
        if isinstance(part, int):  # a list item: the list's models were taken one step up
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        models = [inner for field in fields for inner in _models_in(field.annotation)]
        if not models:
            return []
    return sorted({name for m in models for name in m.model_fields})


def unknown_key_hint(key: str, schema: type[BaseModel], section: tuple[Any, ...]) -> str:
    """What to write instead of `key`: a near spelling or an abbreviation (`dir` -> directory) of
    the section's own keys, else the keys the section takes, else a near key anywhere in the schema."""
    keys = section_fields(schema, section)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    starts = [name for name in keys if name.startswith(key) or key.startswith(name)]
    near = close or (starts if len(starts) == 1 else [])
    if near:
        return f" (did you mean '{near[0]}'?)"
    if keys and len(keys) <= 16:  # no near spelling here: what the section does take
        return f"; {'this section' if section else 'the top level'} takes {', '.join(keys)}"
    return did_you_mean(key, schema)


class ConfigError(BadInput):
    """A configuration that cannot run; `problems` are `field: message` lines."""
