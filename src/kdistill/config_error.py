"""`ConfigError` alone, so the modules that read config files and `--set` overrides can raise it
without importing the schema (and the schema can import them without a cycle)."""

from __future__ import annotations

from kdistill.errors import BadInput


class ConfigError(BadInput):
    """A configuration that cannot run; `problems` are `field: message` lines."""
