"""Which input statistics each model of a run sees, and the checks that a loaded teacher got the right ones.

Every model spec takes `normalize`:

- `dataset`: subtract the data set's per-channel mean and divide by its std (what the loader of
  the data set declares: digits (0.3, 0.4), MNIST (0.1307, 0.3081), image folders ImageNet's);
- `none`: the inputs as the data set gives them (images as floats in [0, 1]);
- `{mean: [...], std: [...]}`: these statistics;
- not given: `dataset` for every model trained in this run (the student, assistants, a teacher
  trained first), `none` for a teacher loaded from a checkpoint. A checkpoint was trained
  elsewhere, with statistics the run cannot know; silently giving it this data set's would cost
  accuracy without a trace (0.15 points on a real MNIST teacher trained on raw pixels). So the
  default is the neutral one, each model's choice is printed at the start of a run, and two checks
  catch a wrong guess before any training: a loaded teacher that does better with the data set's
  statistics than with the default (by a point or more) is refused until `normalize` says which, and one that
  scores far below the accuracy its checkpoint records is a warning in the log and the run notes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.config import ConfigError, ModelSpec, TeacherSpec
from kdistill.data import DataBundle
from kdistill.data.transforms import Normalize, to_float

LOG = logging.getLogger("kdistill")
PROBE_SAMPLES = 1000  # samples the default-normalisation probe scores a loaded teacher on
RECORD_SAMPLES = 2000  # at most this many validation samples are compared with a checkpoint's record
# the data set's statistics better than the default by a point or more, and not by chance: refuse the default.
# A point is small on purpose (the loss the default is there to avoid was 0.15 points, and the fix is one line
# of config); "not by chance" is McNemar's test on the same samples at p < 0.01 (chi-square, 1 df), so that a
# teacher near chance either way (an untrained one) is not refused.
DEFAULT_GAP = 0.01
MCNEMAR_P01 = 6.635
RECORD_GAP = 0.05  # this far below the checkpoint's own accuracy: warn


def is_loaded(spec: ModelSpec) -> bool:
    """A teacher whose weights come from a checkpoint: trained elsewhere, not in this run."""
    return isinstance(spec, TeacherSpec) and spec.checkpoint is not None


def normalization_choice(spec: ModelSpec, bundle: DataBundle) -> tuple[Normalize, str]:
    """The model's input normalisation and a short description of it (and of where it comes from)."""
    chosen = spec.normalize
    if chosen is None:
        chosen = "none" if is_loaded(spec) else "dataset"
        origin = " (the default for a loaded checkpoint)" if is_loaded(spec) else " (the default)"
    else:
        origin = ""
    if isinstance(chosen, str):
        if chosen == "none" or bundle.mean is None or bundle.std is None:
            return Normalize(None, None), "none" + origin
        return Normalize(bundle.mean, bundle.std), f"dataset, mean {_numbers(bundle.mean)} std {_numbers(bundle.std)}" \
            + origin
    return Normalize(chosen.mean, chosen.std), f"mean {_numbers(chosen.mean)} std {_numbers(chosen.std)}"


def normalization_for(spec: ModelSpec, bundle: DataBundle) -> Normalize:
    return normalization_choice(spec, bundle)[0]


def _numbers(values: Any, shown: int = 4) -> str:
    """A short list: every value of a few channels, the first few of many (a table's 118 features)."""
    values = [float(v) for v in values]
    if len(values) <= shown + 1:
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
    return "[" + ", ".join(f"{v:.4g}" for v in values[:shown]) + f", ... ({len(values)} values)]"


def announce(lines: list[tuple[str, str]]) -> None:
    """One line per model: which inputs it sees (printed: this decides whether a loaded teacher is right)."""
    for where, description in lines:
        print(f"input normalisation of {where}: {description}", flush=True)


# scoring a loaded teacher ---------------------------------------------------------------------------
def scoring_set(val: Any, train: Any) -> tuple[Any, str]:
    """The validation split when the run has one, else the training set (a teacher's accuracy there is
    an upper bound, so a far-below result is still a far-below result)."""
    if val is not None and len(val) > 0:
        return val, "validation"
    return train, "training"


@torch.no_grad()
def accuracy_on(model: nn.Module, data: Any, norm: Normalize, limit: int) -> tuple[float, int]:
    """Top-1 accuracy of `model` on the first `limit` samples of `data` (eval mode, restored after)."""
    hits = correct_on(model, data, norm, limit)
    return float(hits.float().mean()) if len(hits) else 0.0, len(hits)


@torch.no_grad()
def correct_on(model: nn.Module, data: Any, norm: Normalize, limit: int) -> torch.Tensor:
    """Whether `model` classifies each of the first `limit` samples of `data` right (eval mode, restored after)."""
    from kdistill.engine.batch import call_model, logits_of, split_batch, to_device
    from kdistill.run.preflight import first_samples

    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")  # a teacher may already be on a GPU
    hits = []
    try:
        for start in range(0, min(limit, len(data)), 256):
            batch = first_samples(data, min(256, limit - start), start)
            inputs, labels, _ = split_batch(batch)
            if torch.is_tensor(inputs):
                inputs = norm(to_float(inputs))
            logits = logits_of(call_model(model, to_device(inputs, device)))
            hits.append(logits.argmax(1).cpu() == labels.cpu())
    finally:
        model.train(was_training)
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def check_default_normalization(spec: TeacherSpec, where: str, model: nn.Module, bundle: DataBundle,
                                data: Any, split: str) -> None:
    """Refuse the default (`none`) for a loaded teacher that clearly expects the data set's statistics."""
    if spec.normalize is not None or not is_loaded(spec) or bundle.mean is None or bundle.std is None:
        return
    if spec.num_classes not in (None, bundle.num_classes):
        return  # a teacher of another task has no accuracy on this one
    plain_hits = correct_on(model, data, Normalize(None, None), PROBE_SAMPLES)
    stats_hits = correct_on(model, data, Normalize(bundle.mean, bundle.std), PROBE_SAMPLES)
    count = max(len(plain_hits), 1)
    plain, with_stats = float(plain_hits.sum()) / count, float(stats_hits.sum()) / count
    only_stats, only_plain = int((stats_hits & ~plain_hits).sum()), int((plain_hits & ~stats_hits).sum())
    disagree = only_stats + only_plain
    significant = disagree > 0 and (only_stats - only_plain) ** 2 / disagree > MCNEMAR_P01
    if with_stats - plain >= DEFAULT_GAP and significant:
        raise ConfigError([
            f"{where}.normalize: not given, so this loaded teacher sees its inputs without normalisation "
            f"(the default for a checkpoint) and scores {plain:.1%} on {count} {split} samples; with the "
            f"data set's statistics it scores {with_stats:.1%}: add normalize: dataset (or normalize: none "
            "to keep the default)"])


def check_recorded_accuracy(spec: TeacherSpec, where: str, model: nn.Module, norm: Normalize, data: Any,
                            split: str) -> str | None:
    """A warning when the teacher scores far below the accuracy its checkpoint records; None otherwise."""
    if not is_loaded(spec):
        return None
    try:
        from kdistill.models.loading import recorded_accuracy
    except ImportError:  # an older loading module without it: nothing to compare with
        return None
    recorded = recorded_accuracy(spec.checkpoint)
    if recorded is None:
        return None
    measured, count = accuracy_on(model, data, norm, RECORD_SAMPLES)
    if measured >= recorded - RECORD_GAP:
        return None
    return (f"{where}: scores {measured:.1%} on {count} {split} samples, far below the {recorded:.1%} its checkpoint "
            f"{Path(spec.checkpoint).name} records; check {where}.normalize and the model's options (another data "
            "set or preprocessing also explains it)")


def record_notes(run_dir: Path, notes: list[str], log: bool = True) -> None:
    """Warnings about the run's inputs: logged (unless said already), and kept in `notes.json` (the
    report lists them)."""
    if not notes:
        return
    for note in notes if log else ():
        LOG.warning("kdistill: %s", note)
    path = Path(run_dir) / "notes.json"
    kept = json.loads(path.read_text()) if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept + [n for n in notes if n not in kept], indent=1))


__all__ = ["announce", "check_default_normalization", "check_recorded_accuracy", "is_loaded", "normalization_choice",
           "normalization_for", "record_notes"]
