"""The experiment's data: the bundle a registered (or `module:function`) loader returns, then the
validation split and any `train_limit`, checked before any model is built. Label noise
(`data.label_noise`) is applied last, to the training part only: validation and test stay clean.
A text run's `data.transfer_set` is drawn from that final training part and kept on the bundle
(`bundle.transfer`) for the distilled stage alone (`kdistill.text.transfer_data`).

A data function is called with `data.options` as keyword arguments (and `root=data.root` when it
takes a `root` parameter) and returns a `kdistill.data.DataBundle`. What the user's function gets
wrong (it raises, returns something else, gives labels outside the classes, an empty training set)
is a `ConfigError` naming `data.*`, not a traceback from deep inside the first epoch.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from kdistill.config import ConfigError, ExperimentConfig
from kdistill.data import DATASETS, DataBundle, InMemoryDataset, limit_samples, split_validation
from kdistill.data.label_noise import LABEL_NOISE_FILE, apply_label_noise
from kdistill.errors import BadInput, first_line
from kdistill.run.preflight import label_problems

DEBUG_HINT = " (run with --debug to see where it was raised)"


def load_data(config: ExperimentConfig) -> tuple[DataBundle, Any, Any]:
    """The bundle, and the (train, val) sets after the validation split and any limit."""
    # an experiment's transfer set (`kdistill eval` / `compress` read the data spec alone, and train no distilled stage)
    transfer = config.data.transfer_set if isinstance(config, ExperimentConfig) else None
    if transfer is not None:  # what it cannot be combined with, before any data is read
        from kdistill.text.transfer_data import check_transfer_combination

        check_transfer_combination(config)
    loader = DATASETS.get(config.data.name)
    if getattr(loader, "__module__", "").startswith("kdistill.lm"):  # a text corpus: a `kdistill lm` config
        from kdistill.lm.detect import is_text_corpus_loader, lm_config_problem

        if is_text_corpus_loader(loader):
            raise ConfigError([lm_config_problem(config.data.name)])
    kwargs = dict(config.data.options)
    params = inspect.signature(loader).parameters
    if "root" in params:
        if config.data.root is None and params["root"].default is inspect.Parameter.empty:
            raise ConfigError([f"data.root: required by dataset '{config.data.name}'; give the path to its files"])
        if config.data.root is not None:
            kwargs["root"] = config.data.root
    elif config.data.root is not None:
        raise ConfigError([f"data.root: dataset '{config.data.name}' takes no root; remove it"])
    try:
        inspect.signature(loader).bind(**kwargs)
    except TypeError as error:
        raise ConfigError([f"data.options: {error} (dataset '{config.data.name}')"]) from error
    try:
        bundle = loader(**kwargs)
    except BadInput:
        raise  # already names the file and the fix
    except FileNotFoundError as error:
        raise ConfigError([f"data.root: {error}"]) from error
    except Exception as error:
        if ":" not in config.data.name:
            raise  # a built-in loader's own failure is not the user's input
        raise ConfigError([f"data.name: data function '{config.data.name}' raised {first_line(error, with_type=True)}"
                           f"{DEBUG_HINT}"]) from error
    if not isinstance(bundle, DataBundle):
        if type(bundle).__module__.startswith("kdistill.lm"):  # a user's function returning a `TextCorpus`
            from kdistill.lm.detect import lm_config_problem

            raise ConfigError([lm_config_problem(config.data.name)])
        raise ConfigError([f"data.name: '{config.data.name}' returned {type(bundle).__name__}, not a DataBundle; "
                           "return kdistill.data.DataBundle(name, train, test, num_classes, ...)"])
    train, val = bundle.train, bundle.val
    check_bundle(config, bundle)
    if config.data.test_limit:
        if not hasattr(bundle.test, "subset"):
            raise ConfigError([f"data.test_limit: the test split of '{config.data.name}' "
                               f"({type(bundle.test).__name__}) cannot be subset; remove test_limit"])
        bundle.test = limit_samples(bundle.test, config.data.test_limit, config.seed)
    if isinstance(train, InMemoryDataset):
        if config.data.train_limit:
            train = limit_samples(train, config.data.train_limit, config.seed)
        if val is None and config.data.val_fraction > 0:
            train, val = split_validation(train, config.data.val_fraction, seed=0)
    noise = config.data.label_noise
    if noise is not None and noise.active:  # after the split: the validation labels stay clean
        train = apply_label_noise(train, noise, bundle.num_classes)
    check_splits(config, train, val)
    bundle.train_split = train  # what the run trains on (student.vocabulary counts its tokens)
    if transfer is not None:
        from kdistill.text.transfer_data import build_transfer_set

        bundle.transfer = build_transfer_set(config, bundle, train)
    return bundle, train, val


def write_label_noise(run_dir: Path, train: Any) -> None:
    """`label_noise.json` in the run directory when the training labels were corrupted (read by the report)."""
    noise = getattr(train, "noise", None)
    if noise is not None:
        (Path(run_dir) / LABEL_NOISE_FILE).write_text(json.dumps(noise, indent=1))


def _size(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:  # an iterable data set without a length: its loader will tell
        return None


def check_bundle(config: ExperimentConfig, bundle: DataBundle) -> None:
    """Class count, non-empty training set, labels of in-memory splits in [0, num_classes)."""
    name = config.data.name
    if not isinstance(bundle.num_classes, int) or isinstance(bundle.num_classes, bool) or bundle.num_classes < 2:
        raise ConfigError([f"data.name: '{name}' gave num_classes={bundle.num_classes!r}; a classification data "
                           "set needs an integer number of classes >= 2"])
    if bundle.train is None or _size(bundle.train) == 0:
        raise ConfigError([f"data: the training set of '{name}' is empty; check data.root and data.options"])
    if bundle.test is None or _size(bundle.test) == 0:
        raise ConfigError([f"data: the test set of '{name}' is empty; every run reports test accuracy, give "
                           "the bundle a test split"])
    problems = []
    for split, data in (("training", bundle.train), ("validation", bundle.val), ("test", bundle.test)):
        if isinstance(data, InMemoryDataset):
            problems += label_problems(data.labels, bundle.num_classes, split)
    if problems:
        raise ConfigError(problems)


def check_splits(config: ExperimentConfig, train: Any, val: Any) -> None:
    """After the split and the limit: samples left to train on, and a validation split where asked."""
    if _size(train) == 0:
        raise ConfigError(["data.val_fraction: nothing is left to train on after the validation split; lower it"])
    if val is None and config.data.val_fraction > 0 and not isinstance(train, InMemoryDataset):
        return  # a user's data set is not split; no validation, as before
    if val is not None and _size(val) == 0:
        raise ConfigError([f"data.val_fraction: the validation split of {config.data.val_fraction} is empty "
                           f"for {_size(train)} training samples; raise it, or set 0 for no validation"])
