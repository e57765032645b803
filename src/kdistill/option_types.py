"""Checking config options against the type hints of the constructor that takes them.

A method's options arrive from YAML as plain values. Without a check, a string where a number
belongs reaches the method's own range check and surfaces as Python's "'>' not supported between
instances of 'str' and 'int'", which names neither the field nor the fix. Reading the hints of
`__init__` lets one generic check say `temperature: must be a number (got 'abc')` for every method,
a user's own included, without each method repeating it.

Hints this module does not understand are accepted: the constructor remains the last word.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any


def constructor_hints(cls: type) -> dict[str, Any]:
    """The parameter hints of `cls.__init__`; empty when they cannot be resolved (a user's class
    whose annotations name something not importable at run time)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # any failure to evaluate annotations just means "no check"
        return {}
    hints.pop("return", None)
    return hints


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matches(value: Any, hint: Any) -> bool:
    """Whether `value` fits `hint`; True for hints that are not understood."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is float:
        return _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if args == (str,) and isinstance(value, str):
            return True  # one layer name where a list of them is taken (the methods accept it)
        if not isinstance(value, list | tuple):
            return False
        element = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        return element is None or all(matches(v, element) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """What a value of `hint` is, in the words of a config file."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is None or hint is type(None):
        return "null"
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(describe(arg) for arg in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping"
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string", list: "a list"}
    return names.get(hint, f"a {getattr(hint, '__name__', str(hint))}")


def _plural(hint: Any) -> str:
    plurals = {float: "numbers", int: "integers", bool: "booleans", str: "strings"}
    return plurals.get(hint, describe(hint))


def _shown(value: Any) -> str:
    text = repr(value)
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return text
        # YAML 1.1 reads 1e-3 (no dot) as text: the commonest way a number arrives as a string
        return f"{text}, a string: YAML reads numbers like 1e-3 as text, write 1.0e-3"
    return text


def option_type_problems(cls: type, options: Mapping[str, Any]) -> list[str]:
    """`key: must be <type> (got <value>)` for each option whose value does not fit the constructor's hint."""
    hints = constructor_hints(cls)
    problems = []
    for key, value in options.items():
        if key in hints and not matches(value, hints[key]):
            problems.append(f"{key}: must be {describe(hints[key])} (got {_shown(value)})")
    return problems


__all__ = ["constructor_hints", "describe", "matches", "option_type_problems"]
