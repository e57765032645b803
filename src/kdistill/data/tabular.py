"""Tables from CSV files: numeric and categorical columns become one float vector per row.

What a tabular model needs from its data and what is easy to get wrong:
- **Categorical columns** (a protocol, a country) are one-hot encoded with the categories of the
  *training* file, in sorted order; a value the training file never had (common in a test set
  collected later) encodes as all zeros rather than failing or shifting the other columns.
- **Heavy-tailed counts** (bytes sent, durations) span many orders of magnitude; the columns named
  in `log1p` are replaced by log(1 + x) before anything else (they must be >= 0), so that one huge
  value does not flatten every other into 0 after standardisation.
- **Standardisation** is the models' job, as for images (`normalize: dataset`, the default for a
  model trained in the run): the bundle carries the training split's per-feature mean and std, one
  value per encoded feature (a constant feature gets std 1, not 0).
- **Labels** are names in the file; they become ids by the same rule as the text loaders (sorted,
  numerically when every name is an integer) unless `label_map` sends each raw name to a class
  name (e.g. forty attack names to "attack"), and a test label the training file lacks is refused.

A row that cannot be read is a `BadInput` naming the file, the line number, the column and the fix.
Files may be gzipped (`.gz`), with or without a header line.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kdistill.data.base import DataBundle, InMemoryDataset, label_order
from kdistill.errors import BadInput, UnreadableFile
from kdistill.file_checks import MissingFile


@dataclass
class Table:
    """The rows of one CSV file as strings, with the file line each came from."""

    path: Path
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


def read_table(path: str | Path, columns: Sequence[str] | None = None, delimiter: str = ",") -> Table:
    """Every non-blank row of a CSV file (gzipped or plain). Without `columns` the first line is the
    header; with them the file has none. Every row must have one value per column."""
    path = Path(path)
    if not path.exists():
        raise MissingFile(path, "file not found; check data.root and the file names in data.options")
    if path.is_dir():
        raise UnreadableFile(path, "a folder, not a CSV file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise UnreadableFile(path, f"damaged gzip file ({error}); copy it again") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UnreadableFile(path, f"line {line}: not UTF-8 text; save the file as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = list(columns) if columns is not None else None
    rows, lines = [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        row = [cell.strip() for cell in row]
        if header is None:
            header = row
            continue
        if len(row) != len(header):
            raise BadInput(f"{path}: line {reader.line_num}: {len(row)} values where the "
                           f"{'columns option' if columns is not None else 'header'} has {len(header)} columns; "
                           "every row needs one value per column")
        rows.append(row)
        lines.append(reader.line_num)
    if header is None or not rows:
        raise UnreadableFile(path, "no data rows; a CSV file with a header line (or data.options.columns) and rows")
    if len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise BadInput(f"{path}: column names repeated ({', '.join(twice)}); give every column its own name")
    return Table(path, header, rows, lines)


@dataclass
class TableEncoder:
    """How rows become vectors, decided on the training table alone and applied to every split."""

    numeric: list[str]
    categories: dict[str, list[str]]  # categorical column -> its training categories, sorted
    log1p: list[str]

    @classmethod
    def fit(cls, table: Table, features: Sequence[str], categorical: Sequence[str], log1p: Sequence[str]
            ) -> TableEncoder:
        categories = {name: sorted(set(table.column(name))) for name in categorical}
        numeric = [name for name in features if name not in categories]
        return cls(numeric, categories, list(log1p))

    @property
    def feature_names(self) -> list[str]:
        """One name per encoded feature: numeric columns, then `column=category` one-hot slots."""
        names = list(self.numeric)
        for column, values in self.categories.items():
            names += [f"{column}={value}" for value in values]
        return names

    def encode(self, table: Table) -> torch.Tensor:
        columns = [[self._number(table, i, name, value) for i, value in enumerate(table.column(name))]
                   for name in self.numeric]
        numeric = torch.tensor(columns, dtype=torch.float64).reshape(len(self.numeric), len(table.rows)).T
        parts = [numeric.float()]
        for column, values in self.categories.items():
            slot = {value: k for k, value in enumerate(values)}
            # a category the training file never had: all zeros
            slots = torch.tensor([slot.get(value, len(values)) for value in table.column(column)], dtype=torch.long)
            onehot = torch.zeros(len(table.rows), len(values) + 1).scatter_(1, slots[:, None], 1.0)
            parts.append(onehot[:, : len(values)])  # the extra last slot (unseen categories) is dropped
        return torch.cat(parts, dim=1)

    def _number(self, table: Table, row: int, name: str, value: str) -> float:
        where = f"{table.path}: line {table.lines[row]}: column '{name}'"
        try:
            number = float(value)
        except ValueError:
            raise BadInput(f"{where}: '{value[:30]}' is not a number; list the column in data.options.categorical "
                           "if it holds categories, or fix the row") from None
        if not math.isfinite(number):
            raise BadInput(f"{where}: {value} is not a finite number; fill or drop the row")
        if name in self.log1p:
            if number < 0:
                raise BadInput(f"{where}: {value} is negative, but the column is in data.options.log1p (log(1 + x) "
                               "needs x >= 0); remove it from log1p")
            number = math.log1p(number)
        return number


def label_ids(table: Table, label: str, names: list[str] | None, label_map: Callable[[str], str | None] | None
              ) -> tuple[torch.Tensor, list[str]]:
    """Label ids of a table's rows, and the class names (given, or decided here for the training table)."""
    raw = table.column(label)
    mapped = []
    for i, value in enumerate(raw):
        name = label_map(value) if label_map is not None else value
        if name is None:
            raise BadInput(f"{table.path}: line {table.lines[i]}: label '{value}' is not one the data set knows; "
                           "fix the row or extend the label mapping")
        mapped.append(name)
    names = names if names is not None else label_order(mapped)
    index = {name: k for k, name in enumerate(names)}
    for i, name in enumerate(mapped):
        if name not in index:
            raise BadInput(f"{table.path}: line {table.lines[i]}: label '{name}' is not one of the training labels "
                           f"({', '.join(names)}); the test file must use the training file's labels")
    return torch.tensor([index[name] for name in mapped], dtype=torch.long), names


def feature_statistics(inputs: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std of the training inputs (std 1 where a feature is constant)."""
    mean = inputs.double().mean(0)
    std = inputs.double().std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def table_bundle(name: str, train: Table, test: Table, label: str, categorical: Sequence[str] = (),
                 log1p: Sequence[str] = (), drop: Sequence[str] = (),
                 label_map: Callable[[str], str | None] | None = None, classes: list[str] | None = None
                 ) -> DataBundle:
    """A `DataBundle` of two tables: features encoded by the training table's rules, labels as ids."""
    for option, names in (("label", [label]), ("categorical", categorical), ("log1p", log1p), ("drop", drop)):
        for table in (train, test):
            unknown = [n for n in names if n not in table.columns]
            if unknown:
                raise BadInput(f"data.options.{option}: no column {', '.join(repr(n) for n in unknown)} in "
                               f"{table.path} (columns: {', '.join(table.columns)})")
    clash = sorted(set(categorical) & set(log1p))
    if clash:
        raise BadInput(f"data.options.log1p: {', '.join(clash)} also listed as categorical; log1p is for numbers")
    features = [c for c in train.columns if c != label and c not in drop]
    encoder = TableEncoder.fit(train, features, categorical, log1p)
    train_x, test_x = encoder.encode(train), encoder.encode(test)
    train_y, names = label_ids(train, label, classes, label_map)
    test_y, _ = label_ids(test, label, names, label_map)
    mean, std = feature_statistics(train_x)
    return DataBundle(name, InMemoryDataset(train_x, train_y, names), InMemoryDataset(test_x, test_y, names),
                      len(names), mean=mean, std=std, classes=names, features=encoder.feature_names)


def load_csv_table_bundle(root: str | Path, train: str = "train.csv", test: str = "test.csv", label: str = "label",
                          categorical: Sequence[str] = (), log1p: Sequence[str] = (), drop: Sequence[str] = (),
                          columns: Sequence[str] | None = None, delimiter: str = ",",
                          label_map: Mapping[str, str] | None = None) -> DataBundle:
    """`data: {name: csv-table, root: DIR, options: {train, test, label, categorical, log1p, drop, ...}}`.
    `label_map` sends raw label names to class names (a name it lacks is refused with its line)."""
    root = Path(root)
    tables = [read_table(root / name, columns, delimiter) for name in (train, test)]
    mapper = None if label_map is None else dict(label_map).get
    return table_bundle(f"csv-table:{root.name}", *tables, label=label, categorical=categorical, log1p=log1p,
                        drop=drop, label_map=mapper)


__all__ = ["Table", "TableEncoder", "feature_statistics", "label_ids", "load_csv_table_bundle", "read_table",
           "table_bundle"]
