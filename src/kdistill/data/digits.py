"""scikit-learn's 8x8 digits: 1,797 images that ship with the install (the demo's data)."""

from __future__ import annotations

import numpy as np
import torch

from kdistill.data.base import DataBundle, InMemoryDataset


def load_digits_bundle(test_fraction: float = 0.25) -> DataBundle:
    """A fixed stratified train/test split (seed 0), independent of the run's seed, so runs compare."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=0, stratify=digits.target
    )
    classes = [str(c) for c in range(10)]
    return DataBundle(
        name="digits",
        train=InMemoryDataset(torch.from_numpy(x_train), torch.from_numpy(y_train), classes),
        test=InMemoryDataset(torch.from_numpy(x_test), torch.from_numpy(y_test), classes),
        num_classes=10,
        mean=(0.3,),
        std=(0.4,),
        image=True,
        classes=classes,
    )
