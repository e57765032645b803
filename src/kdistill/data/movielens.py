"""MovieLens ratings as a recommendation task: will this user like this movie?

MovieLens "latest-small" (Harper & Konstan 2015; `../shared/data/movielens-small`): 100,836
ratings (0.5-5 stars) by 610 users of 9,742 movies. Each sample is a (user, movie) pair, its input a
long tensor `[user index, movie index]`, its label `liked` when the rating is at least `threshold`
(4 stars by default: 48 % of the ratings) and `not liked` otherwise: pointwise preference
prediction, the task a recommender's scoring model solves before ranking.

The split is by time, per user, as a deployed recommender meets it: each user's ratings sorted by
timestamp, the last `test_fraction` of them (at least one) are the test set, so the models
predict a user's later tastes from their earlier ones. Indices come from the training split alone:
users and movies are numbered from 1 in the order of their ids, and a movie first rated in a
user's test period is index 0, the one "unseen" row every embedding model reserves (its
embedding is never trained on a real movie, as in deployment).

The sizes a model's embedding tables need are `USERS` and `MOVIES` of this module for the shipped
file (indices 0..610 and 0..8,246 with the default split); `movielens_sizes(bundle)` gives them
for any bundle this loader makes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch

from kdistill.data.base import DataBundle, InMemoryDataset
from kdistill.data.tabular import read_table
from kdistill.errors import BadInput
from kdistill.file_checks import MissingFile

FILES = ("ratings.csv.gz", "ratings.csv")
COLUMNS = ("userId", "movieId", "rating", "timestamp")
CLASSES = ["not liked", "liked"]
USERS, MOVIES = 611, 8247  # embedding rows for the shipped file and the default split (row 0: unseen)


def _ratings(root: Path) -> list[tuple[int, int, float, int, int]]:
    """(user, movie, rating, timestamp, file line) of every rating, checked."""
    path = next((root / name for name in FILES if (root / name).exists()), None)
    if path is None:
        raise MissingFile(root / FILES[0], f"MovieLens ratings missing; data.root must hold one of {', '.join(FILES)}")
    table = read_table(path)
    missing = [name for name in COLUMNS if name not in table.columns]
    if missing:
        raise BadInput(f"{path}: no column {', '.join(missing)} (columns: {', '.join(table.columns)}); a MovieLens "
                       "ratings file has userId,movieId,rating,timestamp")
    at = [table.columns.index(name) for name in COLUMNS]
    rows = []
    for row, line in zip(table.rows, table.lines, strict=True):
        try:
            user, movie, rating, stamp = int(row[at[0]]), int(row[at[1]]), float(row[at[2]]), int(row[at[3]])
        except ValueError:
            raise BadInput(f"{path}: line {line}: '{','.join(row)}' is not userId,movieId,rating,timestamp as "
                           "integers and a number; fix or drop the row") from None
        if not 0 < rating <= 5:
            raise BadInput(f"{path}: line {line}: rating {rating} outside MovieLens's 0.5-5 stars")
        rows.append((user, movie, rating, stamp, line))
    return rows


def load_movielens_bundle(root: str | Path, threshold: float = 4.0, test_fraction: float = 0.2) -> DataBundle:
    """`data: {name: movielens, root: .../movielens-small, options: {threshold: 4.0, test_fraction: 0.2}}`."""
    if not 0 < test_fraction < 1:
        raise BadInput(f"data.options.test_fraction: must be between 0 and 1 (got {test_fraction})")
    if not 0.5 < threshold <= 5:
        raise BadInput(f"data.options.threshold: a rating in (0.5, 5] (got {threshold})")
    by_user: dict[int, list[tuple[int, int, float, int, int]]] = defaultdict(list)
    for rating in _ratings(Path(root)):
        by_user[rating[0]].append(rating)
    train, test = [], []
    for user in sorted(by_user):
        history = sorted(by_user[user], key=lambda r: (r[3], r[1]))  # by time, ties by movie
        held = max(1, math.floor(test_fraction * len(history)))
        if held >= len(history):
            held = len(history) - 1  # a user with one rating keeps it for training
        train += history[: len(history) - held]
        test += history[len(history) - held:]
    users = {user: k + 1 for k, user in enumerate(sorted({r[0] for r in train}))}
    movies = {movie: k + 1 for k, movie in enumerate(sorted({r[1] for r in train}))}

    def dataset(rows: list[tuple[int, int, float, int, int]]) -> InMemoryDataset:
        inputs = torch.tensor([[users.get(r[0], 0), movies.get(r[1], 0)] for r in rows], dtype=torch.long)
        labels = torch.tensor([int(r[2] >= threshold) for r in rows], dtype=torch.long)
        return InMemoryDataset(inputs, labels, CLASSES)

    bundle = DataBundle("movielens", dataset(train), dataset(test), len(CLASSES), classes=list(CLASSES))
    users, items = movielens_sizes(bundle)
    bundle.model_defaults = {"users": users, "items": items}  # neumf's table sizes unless the config gives them
    return bundle


def movielens_sizes(bundle: DataBundle) -> tuple[int, int]:
    """Rows the user and movie embedding tables need for this bundle (index 0 included)."""
    largest = torch.cat([bundle.train.inputs, bundle.test.inputs]).max(0).values
    return int(largest[0]) + 1, int(largest[1]) + 1


__all__ = ["CLASSES", "MOVIES", "USERS", "load_movielens_bundle", "movielens_sizes"]
