"""`--set key=value`: one field of the experiment's raw YAML mapping, lists reached by index.

Keys are dotted paths whose list items are written as in the error messages the schema prints
(`methods[0].temperature`, `teachers[1].name`) or, equivalently, as a dotted index
(`methods.0.temperature`): a user copies the field name from an error and sets it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from kdistill.config_error import ConfigError

_PART = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


def parse_key(key: str, assignment: str) -> list[str | int]:
    """`methods[0].temperature` -> ['methods', 0, 'temperature'] (and `methods.0.temperature` alike)."""
    if not key:
        raise ConfigError([f"--set {assignment}: the key is empty; write key=value, e.g. --set training.epochs=5"])
    path: list[str | int] = []
    for part in key.split("."):
        match = _PART.fullmatch(part)
        if match is None:
            raise ConfigError([f"--set {key}: '{part}' is not a field name (write fields as a.b.c and list items "
                               "as name[0], e.g. methods[0].temperature)"])
        name = match[1]
        path.append(int(name) if name.isdigit() else name)
        path.extend(int(i) for i in _INDEX.findall(match[2]))
    return path


def _where(path: list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _step(node: Any, part: str | int, key: str, path: list[str | int], last: bool) -> Any:
    """The child `part` of `node` (a missing mapping key becomes a new section unless it is the last)."""
    where = _where(path)
    if isinstance(node, list):
        if not isinstance(part, int):
            raise ConfigError([f"--set {key}: '{_where(path[:-1])}' is a list; give an index, e.g. "
                               f"{_where(path[:-1])}[0]"])
        if part >= len(node):
            raise ConfigError([f"--set {key}: [{part}] is out of range, not an index of {_where(path[:-1])} (a "
                               f"list of {len(node)}: indexes 0 to {len(node) - 1}); add the item in the config file"])
        return node if last else node[part]
    if isinstance(part, int):
        kind = "not set in the config file" if node in (None, {}) else "not a list"
        raise ConfigError([f"--set {key}: '{_where(path[:-1])}' is {kind}, so it has no item [{part}]; add the "
                           "list in the config file"])
    if last:
        return node
    child = node.get(part)
    if child is None:
        child = node[part] = {}
    elif not isinstance(child, dict | list):
        raise ConfigError([f"--set {key}: '{where}' is a value, not a section"])
    return child


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Set one field of `raw` from `key=value`; the value is parsed as YAML (`5`, `true`, `[64, 32]`)."""
    if "=" not in assignment:
        raise ConfigError([f"--set {assignment}: expected key=value, e.g. --set {assignment or 'training.epochs'}=5"])
    key, _, text = assignment.partition("=")
    key = key.strip()
    path = parse_key(key, assignment)
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError as error:
        raise ConfigError([f"--set {key}: the value is not valid YAML ({str(error).splitlines()[0]}); quote it "
                           "or fix the brackets"]) from None
    node: Any = raw
    for depth, part in enumerate(path):
        node = _step(node, part, key, path[: depth + 1], depth == len(path) - 1)
    node[path[-1]] = value
