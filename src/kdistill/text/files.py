"""Labelled sentences from files: `LABEL TEXT` lines, CSV and JSON Lines with named columns.

Every reader returns `TextExamples` (texts, label ids, the label names in id order). Labels are
names in the files ("positive", "3"); they become ids by one mapping that the training split
decides (sorted names; numerically sorted when every name is an integer, so "0".."5" keep their
ids) and that the other splits must reuse, so a test file with a label the training file never had
is refused instead of silently shifting the classes. A row that cannot be read is a `BadInput`
naming the file, the line number and the fix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kdistill.data.base import label_order  # re-exported: the text loaders' label ids
from kdistill.errors import BadInput, UnreadableFile
from kdistill.file_checks import MissingFile

FORMATS = ("label-text", "csv", "jsonl")


@dataclass
class TextExamples:
    """Texts with their label ids; `label_names[i]` is the name of id i."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def _ids(path: Path, rows: list[tuple[int, str, str]], label_names: Sequence[str] | None) -> TextExamples:
    """(line, label name, text) rows -> TextExamples under `label_names` (or a mapping made here)."""
    if not rows:
        raise BadInput(f"{path}: no examples found; the file must hold one labelled text a row")
    names = list(label_names) if label_names is not None else label_order([label for _, label, _ in rows])
    index = {name: i for i, name in enumerate(names)}
    labels = []
    for line, label, _ in rows:
        if label not in index:
            raise BadInput(f"{path}: line {line}: label '{label}' is not one of the training labels "
                           f"({', '.join(names)}); fix the row or train on a file that has this label")
        labels.append(index[label])
    return TextExamples([text for _, _, text in rows], labels, names)


def read_label_text(path: Path, label_names: Sequence[str] | None = None, encoding: str = "utf-8") -> TextExamples:
    """`LABEL TEXT` a line (the label is the first whitespace-separated word); blank lines are skipped."""
    rows = []
    for line_number, line in enumerate(_lines(path, encoding), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2:
            raise BadInput(f"{path}: line {line_number}: '{line.strip()[:40]}' has a label but no text; "
                           "each line must be 'LABEL TEXT'")
        rows.append((line_number, parts[0], parts[1]))
    return _ids(path, rows, label_names)


def read_csv(path: Path, text_column: str, label_column: str, label_names: Sequence[str] | None = None,
             encoding: str = "utf-8") -> TextExamples:
    """A CSV file with a header row naming `text_column` and `label_column` (other columns ignored)."""
    reader = csv.DictReader(io.StringIO(_text(path, encoding), newline=""))  # quoted fields may hold newlines
    columns = reader.fieldnames or []
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in columns:
            raise BadInput(f"{path}: line 1: no column '{column}' for the {role}; the header has "
                           f"{', '.join(columns) or 'nothing'}; set data.options.{role}_column")
    rows = []
    for record in reader:
        line = reader.line_num
        value, label = record.get(text_column), record.get(label_column)
        if value is None or label is None or None in record:
            raise BadInput(f"{path}: line {line}: {len(columns)} columns expected, the row has another number; "
                           "quote fields that hold commas")
        if not value.strip() or not label.strip():
            raise BadInput(f"{path}: line {line}: empty {'text' if not value.strip() else 'label'}; "
                           "fill it in or remove the row")
        rows.append((line, label.strip(), value.strip()))
    return _ids(path, rows, label_names)


def read_jsonl(path: Path, text_column: str, label_column: str, label_names: Sequence[str] | None = None,
               encoding: str = "utf-8") -> TextExamples:
    """One JSON object a line with `text_column` and `label_column` keys; blank lines are skipped."""
    rows = []
    for line_number, line in enumerate(_lines(path, encoding), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadInput(f"{path}: line {line_number}: not JSON ({error.msg}); each line must be one "
                           "JSON object") from None
        if not isinstance(record, dict):
            raise BadInput(f"{path}: line {line_number}: a JSON {type(record).__name__}, not an object with "
                           f"'{text_column}' and '{label_column}'")
        for role, key in (("text", text_column), ("label", label_column)):
            if key not in record:
                raise BadInput(f"{path}: line {line_number}: no key '{key}' for the {role} (keys: "
                               f"{', '.join(record) or 'none'}); set data.options.{role}_column")
        value, label = record[text_column], record[label_column]
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"{path}: line {line_number}: '{text_column}' must be a non-empty string")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise BadInput(f"{path}: line {line_number}: '{label_column}' must be a string or an integer, "
                           f"not {type(label).__name__}")
        rows.append((line_number, str(label).strip(), value.strip()))
    return _ids(path, rows, label_names)


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    return _text(path, encoding).splitlines()


def _text(path: Path, encoding: str = "utf-8") -> str:
    if not path.exists():
        raise MissingFile(path, "file not found; check data.root and the file names in data.options")
    if path.is_dir():
        raise UnreadableFile(path, "a folder, not a text file")
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise UnreadableFile(path, f"line {line}: not {encoding} text (byte {error.object[error.start]:#04x}); "
                                   "save the file as UTF-8, or set data.options.encoding (e.g. latin-1)") from None
    except LookupError:
        raise BadInput(f"data.options.encoding: unknown text encoding '{encoding}'") from None


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}.get(suffix, "label-text")


def read_text_file(path: str | Path, format: str | None = None, text_column: str = "text",
                   label_column: str = "label", label_names: Sequence[str] | None = None,
                   encoding: str = "utf-8") -> TextExamples:
    """Read one split. `format`: label-text | csv | jsonl, guessed from the suffix when None
    (.csv, .jsonl / .json / .ndjson, anything else `LABEL TEXT`)."""
    path = Path(path)
    chosen = format or guess_format(path)
    if chosen not in FORMATS:
        raise BadInput(f"data.options.format: '{chosen}' is not one of {', '.join(FORMATS)}")
    if chosen == "label-text":
        return read_label_text(path, label_names, encoding)
    if chosen == "csv":
        return read_csv(path, text_column, label_column, label_names, encoding)
    return read_jsonl(path, text_column, label_column, label_names, encoding)


__all__ = ["FORMATS", "TextExamples", "guess_format", "label_order", "read_csv", "read_jsonl", "read_label_text",
           "read_text_file"]
