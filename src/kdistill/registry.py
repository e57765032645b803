"""Name -> factory registries, with `package.module:attribute` plugins.

Everything a config names (a dataset, a model, a method) is looked up here, so nothing in the
toolkit is hard-wired to one data set or architecture, and a user's own code plugs in by import
path without registering anything.

A registry may name `builtins`: modules that register more entries and are imported on the first
lookup or listing, so what a registry holds never depends on which modules happened to be imported
first (the `mutual` method lives with its strategy, the strategies' runners in their own files).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A name that is neither registered nor an importable `module:attribute`."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _with_working_directory_on_path() -> None:
    """Put the current directory first on `sys.path`, as `python -m` does: the `kdistill` console
    script does not, and a user's `mymodels.py` beside their config must be found either way."""
    cwd = os.getcwd()
    if not any(entry in ("", cwd) or _same_directory(entry, cwd) for entry in sys.path):
        sys.path.insert(0, cwd)


def _same_directory(entry: str, cwd: str) -> bool:
    try:
        return os.path.samefile(entry, cwd)
    except OSError:
        return False


def _import_problem(error: BaseException) -> str:
    """One line from an import failure: the missing module, or the error raised while importing."""
    if isinstance(error, ModuleNotFoundError):
        return str(error)
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} ({Path(error.filename or '?').name}, line {error.lineno})"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__} while importing it" + (f": {lines[0]}" if lines else "")


def import_attribute(path: str) -> object:
    """Import `package.module:attribute` (attribute may be dotted), the module looked up also in
    the current directory."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise RegistryError(f"'{path}' is not of the form 'package.module:attribute'")
    _with_working_directory_on_path()
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as error:  # a user's module may raise anything at import time
        top = module_name.split(".")[0]
        itself = isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == top
        hint = "" if not itself else (
            f"; is '{module_name.replace('.', '/')}.py' in the current directory ({os.getcwd()}) "
            "or an installed package?")
        raise RegistryError(f"cannot import module '{module_name}' from '{path}': "
                            f"{_import_problem(error)}{hint}") from error
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(f"module '{module_name}' has no attribute '{attribute}' (from '{path}'){hint}")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """A case- and dash-insensitive mapping from names to factories."""

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins

    def _load_builtins(self) -> None:
        """Import the modules that register the built-in entries (once; they register on import)."""
        if self._loaded:
            return
        self._loaded = True  # before importing: those modules may look names up while they load
        for module in self._builtins:
            importlib.import_module(module)

    def register(self, *names: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            for name in names:
                key = normalise_name(name)
                if key in self._entries and self._entries[key] is not obj:
                    raise ValueError(f"{self.kind} '{name}' is already registered")
                self._entries[key] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        if ":" in name:
            return import_attribute(name)  # type: ignore[return-value]
        self._load_builtins()
        key = normalise_name(name)
        if key in self._entries:
            return self._entries[key]
        close = difflib.get_close_matches(key, self._entries, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise RegistryError(
            f"unknown {self.kind} '{name}'; {hint}known: {', '.join(sorted(self._entries))}; "
            "or give your own as 'package.module:attribute'"
        )

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return normalise_name(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(sorted(self._entries))

    def items(self) -> list[tuple[str, T]]:
        self._load_builtins()
        return sorted(self._entries.items())
