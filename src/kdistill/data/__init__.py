"""Dataset registry: built-in loaders by name, user data sets by `module:function`."""

from __future__ import annotations

from kdistill.data.base import DataBundle, InMemoryDataset, batch_collate, limit_samples, split_validation
from kdistill.data.digits import load_digits_bundle
from kdistill.data.image_folder import load_image_folder_bundle
from kdistill.data.mnist import load_mnist_bundle
from kdistill.data.movielens import load_movielens_bundle
from kdistill.data.nsl_kdd import load_nsl_kdd_bundle
from kdistill.data.tabular import load_csv_table_bundle
from kdistill.registry import Registry

# text data sets (sst2, trec, text-files) register themselves on the first lookup
DATASETS: Registry = Registry("dataset", builtins=("kdistill.text.registrations",))
DATASETS.register("digits")(load_digits_bundle)
DATASETS.register("mnist")(load_mnist_bundle)
DATASETS.register("image-folder", "image_folder", "cifar10-jpeg")(load_image_folder_bundle)
DATASETS.register("csv-table", "csv")(load_csv_table_bundle)
DATASETS.register("nsl-kdd")(load_nsl_kdd_bundle)
DATASETS.register("movielens")(load_movielens_bundle)

__all__ = [
    "DATASETS",
    "DataBundle",
    "InMemoryDataset",
    "batch_collate",
    "limit_samples",
    "load_csv_table_bundle",
    "load_digits_bundle",
    "load_image_folder_bundle",
    "load_mnist_bundle",
    "load_movielens_bundle",
    "load_nsl_kdd_bundle",
    "split_validation",
]
