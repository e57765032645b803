"""A data set whose test split cannot be read: any access raises `SealedSplitRead`.

Used as `data: {name: sealed_data:digits_sealed_test}` to show that tuning never touches the test split.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from kdistill.data import DataBundle, load_digits_bundle


class SealedSplitRead(AssertionError):
    """Raised when anything reads the sealed test split."""


class SealedSplit(Dataset):
    def __len__(self) -> int:
        raise SealedSplitRead("the test split was read (len)")

    def __getitem__(self, index: int):
        raise SealedSplitRead(f"the test split was read (item {index})")

    def __getitems__(self, indices: list[int]):
        raise SealedSplitRead("the test split was read (batch)")

    def __iter__(self):
        raise SealedSplitRead("the test split was read (iteration)")


def digits_sealed_test() -> DataBundle:
    bundle = load_digits_bundle()
    return DataBundle("digits, sealed test", bundle.train, SealedSplit(), bundle.num_classes, mean=bundle.mean,
                      std=bundle.std, image=bundle.image, classes=list(bundle.classes))
