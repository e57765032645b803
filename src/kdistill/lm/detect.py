"""Telling language-model configs and run directories from classification ones, so that each
command that gets the other kind says which command takes it instead of failing inside.

A language-model config names `data: kdistill.lm:text_corpus` (a `TextCorpus`, not a
classification `DataBundle`) and runs under `kdistill lm`; a run directory of `kdistill lm` holds
that config and a `results.json` of held-out perplexities, one row per model (teacher,
student-scratch, student). Nothing here imports a model or reads a data set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LM_DATA = "kdistill.lm:text_corpus"
LM_DATA_NAMES = (LM_DATA, "kdistill.lm.data:text_corpus")


def is_text_corpus_loader(loader: Any) -> bool:
    """`loader` is kdistill's text-corpus loader (what `data.name: kdistill.lm:text_corpus` names)."""
    return getattr(loader, "__module__", None) == "kdistill.lm.data" and getattr(loader, "__name__", "") == \
        "text_corpus"


def is_text_corpus(value: Any) -> bool:
    """`value` is what the text-corpus loader returns (a `kdistill.lm.TextCorpus`)."""
    from kdistill.lm.data import TextCorpus

    return isinstance(value, TextCorpus)


def is_lm_data(name: str) -> bool:
    """The data set named `name` is a text corpus for `kdistill lm` (by name, else by its loader)."""
    if name in LM_DATA_NAMES:
        return True
    from kdistill.data import DATASETS

    try:
        return is_text_corpus_loader(DATASETS.get(name))
    except Exception:  # an unknown or broken name is for the caller's own check to name
        return False


def lm_config_problem(name: str, field: str = "data.name") -> str:
    """What a classification command says when given a language-model config."""
    return (f"{field}: this is a language-model config (data {name}): use `kdistill lm CONFIG` for it "
            "(held-out perplexity); kdistill run, eval, pair and tune take classification data")


def not_text_corpus_problem(name: str) -> str:
    """What `kdistill lm` says when given a classification config."""
    return (f"data.name: '{name}' is not a text corpus; kdistill lm needs data.name: {LM_DATA} "
            "(use kdistill run for classification data)")


def run_data_name(run_dir: str | Path) -> str | None:
    """The `data.name` of the run's `config.yaml`, read without validating it (None if unreadable)."""
    import yaml

    run_dir = Path(run_dir)

    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    data = raw.get("data") if isinstance(raw, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _perplexity_rows(path: Path) -> bool:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(rows, list) and bool(rows) and all(
        isinstance(row, dict) and "perplexity" in row and "model" in row for row in rows)


def is_lm_run(path: str | Path) -> bool:
    """`path` is a run directory of `kdistill lm` (or its `results.json`): its config names a text
    corpus, or its results are rows of held-out perplexity. False for anything unreadable."""
    path = Path(path)
    if path.is_file():
        return path.name == "results.json" and (_perplexity_rows(path) or is_lm_run(path.parent))
    if not path.is_dir():
        return False
    name = run_data_name(path)
    if name is not None and name in LM_DATA_NAMES:
        return True
    return _perplexity_rows(path / "results.json")


def lm_run_problem(run_dir: str | Path, command: str) -> str:
    """One line for a command that reads classification runs (`command`) given a `kdistill lm` run."""
    run_dir = Path(run_dir)
    return (f"{run_dir}: a language-model run (kdistill lm; data {run_data_name(run_dir) or LM_DATA}), which "
            f"{command} does not read: its held-out perplexities are in {run_dir / 'results.json'} (a row per "
            f"model); `kdistill lm --resume {run_dir}` prints them again")


__all__ = ["LM_DATA", "is_lm_data", "is_lm_run", "is_text_corpus", "is_text_corpus_loader", "lm_config_problem",
           "lm_run_problem", "not_text_corpus_problem", "run_data_name"]
