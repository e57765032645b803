"""`data.transfer_set` in a run: the distilled student's training set becomes the training split
plus Tang et al.'s perturbed copies of its sentences (`kdistill.text.augment`).

Why only the distilled stage: the copies have no label. Their targets are the teacher's logits, so
they may feed only methods that read no label (soft targets, feature and attention losses); the
teacher's own training and the scratch baseline (the labels-only comparison) see the training split
alone, and validation and test are never touched. The copies are drawn from the training split the
run ends up with (after its validation split and `train_limit`), so no validation sentence leaks in.

The copies carry their source sentence's label as a placeholder, only so that the loop's
`train/acc` has something to count against (it then reads agreement with the source's label); no
loss reads it, since a method that reads labels (`Method.reads_labels`: hard_label, dkd, mutual, CRD
with `negatives: other_classes`) is refused
with the transfer set, as are every strategy but `standard` and a run without a teacher.
"""

from __future__ import annotations

import logging
from typing import Any

from kdistill.data import DataBundle
from kdistill.errors import BadInput
from kdistill.registry import RegistryError
from kdistill.text.augment import transfer_set
from kdistill.text.datasets import TextBundle
from kdistill.text.tokenize import TextDataset, load_tokenizer, text_dataset

LOG = logging.getLogger("kdistill")
WHERE = "data.transfer_set"


def check_transfer_combination(config: Any) -> None:
    """Refuse, before any data is read, what the transfer set cannot be combined with (one line)."""
    from kdistill.methods import METHODS

    if not config.teacher_specs():
        raise BadInput(f"{WHERE}: needs a teacher (the copies are labelled by its logits alone); add a teacher "
                       "or remove transfer_set")
    if config.strategy.name != "standard":
        raise BadInput(f"{WHERE}: works with strategy standard only (its one distilled stage trains on the copies; "
                       f"'{config.strategy.name}' trains other stages too); remove transfer_set or use standard")
    if config.data.label_noise is not None:
        raise BadInput(f"{WHERE}: not with data.label_noise (the noisy training split does not keep its sentences "
                       "to perturb); remove one of the two")
    labelled = [spec.name for spec in config.methods if _reads_labels(METHODS, spec)]
    if labelled:
        raise BadInput(f"{WHERE}: the perturbed copies have no label, so methods that read labels cannot train on "
                       f"them ({', '.join(labelled)}); remove {'them' if len(labelled) > 1 else 'it'} (Tang et al. "
                       "distil with soft targets alone) or remove transfer_set")


def _reads_labels(methods: Any, spec: Any) -> bool:
    try:
        method = methods.get(spec.name)
    except RegistryError:
        return False  # an unknown name: the config check names it
    reads = getattr(method, "reads_labels", None)
    return bool(reads(spec.options())) if callable(reads) else bool(getattr(method, "needs_labels", False))


def build_transfer_set(config: Any, bundle: DataBundle, train: Any) -> TextDataset | None:
    """The training split plus its perturbed copies, tokenised as the split was; None without
    `data.transfer_set`. The originals come first and keep their labels."""
    spec = config.data.transfer_set
    if spec is None:
        return None
    check_transfer_combination(config)
    if not isinstance(bundle, TextBundle) or not isinstance(train, TextDataset) or train.texts is None:
        kind = "gives a training split without its texts" if isinstance(bundle, TextBundle) else "is not one"
        raise BadInput(f"{WHERE}: needs a text data set (sst2, trec, text-files) whose training split keeps its "
                       f"sentences; '{config.data.name}' {kind}; remove transfer_set")
    tokenizer = load_tokenizer(bundle.tokenizer_path)
    mask = spec.mask_token or getattr(tokenizer, "mask_token", None)
    if not mask:
        raise BadInput(f"{WHERE}.mask_token: the tokenizer in {bundle.tokenizer_path} has no mask token; give one "
                       "(a token it knows), or set mask_prob: 0")
    drawn = transfer_set(train.texts, spec.copies, seed=spec.seed, rules=spec.rules(mask))
    labels = train.labels.tolist()
    data = text_dataset(tokenizer, drawn.texts, [labels[i] for i in drawn.source], train.classes,
                        bundle.max_length, "transfer set", "max_length" if train.pad_to else "longest")
    data.placeholder_labels = True  # the copies' labels are their sources': no "add a label term" note
    LOG.info("kdistill: transfer set: %d sentences (%d training sentences + %d perturbed copies)",
             len(data), drawn.originals, len(data) - drawn.originals)
    return data


__all__ = ["build_transfer_set", "check_transfer_combination"]
