"""The experiment's data: the bundle a registered (or `module:function`) loader returns, then the
validation split and any `train_limit`."""

from __future__ import annotations

import inspect
from typing import Any

from kdistill.config import ConfigError, ExperimentConfig
from kdistill.data import DATASETS, DataBundle, InMemoryDataset, limit_samples, split_validation


def load_data(config: ExperimentConfig) -> tuple[DataBundle, Any, Any]:
    """The bundle, and the (train, val) sets after the validation split and any limit."""
    loader = DATASETS.get(config.data.name)
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
        bundle = loader(**kwargs)
    except TypeError as error:
        raise ConfigError([f"data.options: {error}"]) from error
    except FileNotFoundError as error:
        raise ConfigError([f"data.root: {error}"]) from error
    if not isinstance(bundle, DataBundle):
        raise ConfigError([f"data.name: '{config.data.name}' returned {type(bundle).__name__}, not a DataBundle"])
    train, val = bundle.train, bundle.val
    if isinstance(train, InMemoryDataset):
        if config.data.train_limit:
            train = limit_samples(train, config.data.train_limit, config.seed)
        if val is None and config.data.val_fraction > 0:
            train, val = split_validation(train, config.data.val_fraction, seed=0)
    return bundle, train, val
