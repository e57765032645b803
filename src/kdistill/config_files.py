"""Reading an experiment file: every way the file itself can be wrong is named as such, with the fix.

A config problem found here is about the file (missing, binary, not UTF-8, a YAML syntax error at
line N, a list where sections belong, an unset `${VAR}`), not about a field: the user is told which
file and where, before the schema is ever consulted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from kdistill.config_error import ConfigError
from kdistill.errors import UnreadableFile

_ENV_REFERENCE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_environment(value: Any) -> Any:
    """`${NAME}` and `${NAME:-default}` in string values, so experiment files can point at data
    folders that live elsewhere on other machines (`root: ${KDISTILL_DATA:-../shared/data}/mnist`).
    An unset name without a default is left as written (`unset_references` finds it)."""
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(lambda m: os.environ.get(m[1], m[2] if m[2] is not None else m[0]), value)
    if isinstance(value, dict):
        return {k: expand_environment(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_environment(v) for v in value]
    return value


def unset_references(value: Any, where: str = "") -> list[tuple[str, str]]:
    """(field, NAME) for every `${NAME}` without a default whose NAME is not in the environment."""
    if isinstance(value, str):
        return [(where or "config", m[1]) for m in _ENV_REFERENCE.finditer(value)
                if m[2] is None and m[1] not in os.environ]
    if isinstance(value, dict):
        return [u for k, v in value.items() for u in unset_references(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [u for i, v in enumerate(value) for u in unset_references(v, f"{where}[{i}]")]
    return []


def read_text(path: Path, run_hints: bool = True) -> str:
    """The file as text; a binary or non-UTF-8 file is named as not a text file (not a YAML error).
    `run_hints`: the messages may point to `kdistill run`'s own ways (--resume for a run directory)."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        hint = " (to continue a run directory use --resume)" if run_hints else ""
        raise ConfigError([f"{path}: is a directory, not a config file; give the YAML file{hint}"]) from None
    except PermissionError:
        raise UnreadableFile(path, "permission denied reading the config file; check its permissions") from None
    if b"\x00" in data:
        raise UnreadableFile(path, "not a text file (binary data); give the experiment's YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(path, f"not a text file in UTF-8 (byte {error.start} is not UTF-8); save it as "
                                   "UTF-8") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a second `training:` section would
    silently replace the first, so a repeated key is an error naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark)
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, path: Path | str) -> dict[str, Any]:
    """The file's top-level mapping; a syntax error names its line and column."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError([f"{path}: {where}not valid YAML ({problem}); fix the syntax there"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (student:, teacher:, training: "
                           f"...), not a {type(raw).__name__}"])
    return raw


def read_config_file(path: str | Path, run_hints: bool = True) -> dict[str, Any]:
    """The raw mapping of an experiment file, `${VAR}` references expanded (an unset one is an error).
    `run_hints`: the messages may point to `kdistill run`'s demo and --resume (other commands: False)."""
    path = Path(path)
    if not path.exists():
        hint = " (or run without a file for the demo)" if run_hints else ""
        raise ConfigError([f"{path}: no such config file; check the path{hint}"])
    raw = parse_yaml(read_text(path, run_hints), path)
    unset = unset_references(raw)
    if unset:
        raise ConfigError([f"{path}: {field} uses ${{{name}}}, but {name} is unset; set it in the environment or "
                           f"give a default: ${{{name}:-default}}" for field, name in unset])
    return expand_environment(raw)
