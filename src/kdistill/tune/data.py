"""The data a tuning trial sees: the training set split into train and validation, and no test set.

Structural, not a promise: a trial's experiment names `kdistill.tune.data:held_out` as its data set.
That function calls the experiment's own data loader, keeps its training split (and its own
validation split, when it has one) and never touches the test split: the bundle it returns has the
validation split where the test split would be. So everything a run scores on "the test set"
(results rows, the report) is validation accuracy inside a trial, and a search cannot select on the
test set even by accident. The split is the one `kdistill run` holds out for the same config
(`train_limit` first, then `val_fraction`, seeded alike), so the best config's run validates on the
same samples the search scored.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path
from typing import Any

from kdistill.data import DATASETS, DataBundle, InMemoryDataset, limit_samples, split_validation
from kdistill.errors import BadInput

HELD_OUT = "kdistill.tune.data:held_out"


def held_out(source: str, source_options: dict[str, Any] | None = None, val_fraction: float = 0.1,
             train_limit: int | None = None, seed: int = 0, root: Path | None = None) -> DataBundle:
    """`source`'s training data as (train, validation), the validation split also standing in as test."""
    loader = DATASETS.get(source)
    if getattr(loader, "__module__", "").startswith("kdistill.lm"):  # a text corpus: a `kdistill lm` config
        from kdistill.lm.detect import is_text_corpus_loader, lm_config_problem

        if is_text_corpus_loader(loader):
            raise BadInput(lm_config_problem(source))
    kwargs = dict(source_options or {})
    if root is not None:
        if "root" not in inspect.signature(loader).parameters:
            raise BadInput(f"data.root: dataset '{source}' takes no root; remove it")
        kwargs["root"] = root
    bundle = loader(**kwargs)
    if type(bundle).__module__.startswith("kdistill.lm"):  # a user's function returning a `TextCorpus`
        from kdistill.lm.detect import lm_config_problem

        raise BadInput(lm_config_problem(source))
    train, val = bundle.train, bundle.val  # bundle.test is never read
    if val is None:
        if not isinstance(train, InMemoryDataset):
            raise BadInput(f"data.val_fraction: dataset '{source}' is not held in memory, so tuning cannot carve a "
                           "validation split from it; give its bundle a val split")
        if val_fraction <= 0:
            raise BadInput("data.val_fraction: tuning scores trials on a validation split carved from the training "
                           "data; set it above 0 (e.g. 0.1)")
        if train_limit:
            train = limit_samples(train, train_limit, seed)
        train, val = split_validation(train, val_fraction, seed=0)
    elif train_limit and isinstance(train, InMemoryDataset):
        train = limit_samples(train, train_limit, seed)
    # `replace` keeps the bundle's own type and fields (a text bundle's tokenizer and max length, which
    # a transfer set and a text student are built from), with the validation split standing in as test
    return dataclasses.replace(bundle, name=f"{bundle.name} (tuning: validation split as test)", train=train,
                               test=val, val=val, classes=list(bundle.classes))


def tuning_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw experiment whose data is `held_out` of the experiment's own data."""
    changed = copy.deepcopy(raw)
    data = dict(changed.get("data") or {})
    options = {"source": data.pop("name", "digits"), "source_options": data.pop("options", None) or {},
               "val_fraction": data.pop("val_fraction", 0.1), "train_limit": data.pop("train_limit", None),
               "seed": changed.get("seed", 0)}
    changed["data"] = {**data, "name": HELD_OUT, "options": options}
    return changed


__all__ = ["HELD_OUT", "held_out", "tuning_raw"]
