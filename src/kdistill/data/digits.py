"""The 8x8 handwritten digits (1,797 images, 10 classes): the demo's data, shipped inside the package.

`digits.npz` (49 KB) holds the images as uint8 grey levels 0..16, their labels, and the fixed
stratified 75/25 train/test split the demo has always used (scikit-learn's
`train_test_split(test_size=0.25, random_state=0, stratify=labels)`, stored as indices), so no
download and no scikit-learn are needed. Other test fractions are split here, stratified, in numpy.

The data are the test set of "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak,
UCI Machine Learning Repository, CC BY 4.0), as redistributed by scikit-learn (BSD-3-Clause) in
`sklearn.datasets.load_digits`.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import torch

from kdistill.data.base import DataBundle, InMemoryDataset
from kdistill.errors import BadInput

DEFAULT_TEST_FRACTION = 0.25


def read_digits() -> dict[str, np.ndarray]:
    """The packaged arrays: `images` (1797, 8, 8) uint8 in 0..16, `labels`, `train_index`, `test_index`."""
    with files("kdistill.data").joinpath("digits.npz").open("rb") as handle, np.load(handle) as arrays:
        return {key: arrays[key] for key in arrays.files}


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: each class split in the given proportion after a seeded shuffle."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) or not 0 < test_fraction < 1:
        raise BadInput(f"data.options.test_fraction: must be a number between 0 and 1, exclusive "
                       f"(got {test_fraction!r})")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * test_fraction))
        test.append(members[:cut])
        train.append(members[cut:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_digits_bundle(test_fraction: float = DEFAULT_TEST_FRACTION) -> DataBundle:
    """A fixed stratified train/test split (seed 0), independent of the run's seed, so runs compare."""
    arrays = read_digits()
    images = (arrays["images"].astype(np.float64) / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    labels = arrays["labels"].astype(np.int64)
    if test_fraction == DEFAULT_TEST_FRACTION:
        train_index, test_index = arrays["train_index"].astype(np.int64), arrays["test_index"].astype(np.int64)
    else:
        train_index, test_index = stratified_split(labels, test_fraction)
    classes = [str(c) for c in range(10)]
    return DataBundle(
        name="digits",
        train=InMemoryDataset(torch.from_numpy(images[train_index]), torch.from_numpy(labels[train_index]), classes),
        test=InMemoryDataset(torch.from_numpy(images[test_index]), torch.from_numpy(labels[test_index]), classes),
        num_classes=10,
        mean=(0.3,),
        std=(0.4,),
        image=True,
        classes=classes,
    )
