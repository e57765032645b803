"""The label-noise injector: realised rate, seed determinism, class-dependent pairs and matrices, and
that only the training split is touched (validation carved first, test never)."""

from __future__ import annotations

import pytest
import torch

from kdistill.config import ConfigError, load_config
from kdistill.data.label_noise import LabelNoiseSpec, apply_label_noise, corrupt_labels
from kdistill.errors import BadInput
from kdistill.run.data import load_data


def balanced(n_per_class: int, classes: int) -> torch.Tensor:
    return torch.arange(classes).repeat_interleave(n_per_class)


def test_symmetric_noise_changes_exactly_the_rate_and_spreads_over_the_other_classes():
    labels = balanced(1000, 10)
    noisy = corrupt_labels(labels, 10, LabelNoiseSpec(rate=0.3, seed=1))
    changed = noisy != labels
    assert int(changed.sum()) == 3000  # round(0.3 * 10,000): every chosen label really changes
    # the new labels of class 0's changed samples: uniform over classes 1..9 (about 300 / 9 = 33 each)
    counts = torch.bincount(noisy[changed & (labels == 0)], minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 12 and counts[1:].max() < 60
    # every class loses about the same share
    per_class = torch.bincount(labels[changed], minlength=10).float() / 1000
    assert per_class.min() > 0.24 and per_class.max() < 0.36


def test_same_seed_same_labels_other_seed_other_labels():
    labels = balanced(100, 5)
    spec = LabelNoiseSpec(rate=0.2, seed=7)
    assert torch.equal(corrupt_labels(labels, 5, spec), corrupt_labels(labels, 5, spec))
    assert not torch.equal(corrupt_labels(labels, 5, spec), corrupt_labels(labels, 5, LabelNoiseSpec(rate=0.2, seed=8)))
    assert torch.equal(labels, balanced(100, 5))  # the input is not modified


def test_pairs_flip_only_the_named_classes_to_their_partner():
    labels = balanced(50, 4)
    noisy = corrupt_labels(labels, 4, LabelNoiseSpec(kind="pairs", rate=0.4, pairs={1: 2, 3: 0}, seed=0))
    changed = noisy != labels
    assert set(labels[changed].tolist()) == {1, 3}
    assert int((changed & (labels == 1)).sum()) == 20 and int((changed & (labels == 3)).sum()) == 20
    assert set(noisy[changed & (labels == 1)].tolist()) == {2}
    assert set(noisy[changed & (labels == 3)].tolist()) == {0}


def test_matrix_noise_follows_the_transition_rows():
    labels = balanced(4000, 2)
    noisy = corrupt_labels(labels, 2, LabelNoiseSpec(kind="matrix", matrix=[[0.7, 0.3], [0.0, 1.0]], seed=3))
    assert (noisy[labels == 1] == 1).all()  # row 1 keeps every label
    assert float((noisy[labels == 0] == 1).float().mean()) == pytest.approx(0.3, abs=0.03)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "pairs", "rate": 0.2}, "needs pairs"),
    ({"kind": "pairs", "rate": 0.2, "pairs": {2: 2}}, "to itself"),
    ({"kind": "matrix", "matrix": [[0.5, 0.4], [0, 1]]}, "summing to 1"),
    ({"kind": "matrix", "matrix": [[1.0], [0, 1]]}, "square"),
    ({"rate": 1.5}, "less than or equal to 1"),
    ({"rate": 0.1, "matrix": [[1.0]]}, "kind matrix"),
])
def test_bad_specs_name_the_field(spec, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(None, values={"data": {"name": "digits", "label_noise": spec}})
    assert "data.label_noise" in str(caught.value)


def test_classes_outside_the_data_set_are_refused():
    with pytest.raises(BadInput, match=r"class 12 is not in \[0, 10\)"):
        corrupt_labels(balanced(3, 10), 10, LabelNoiseSpec(kind="pairs", rate=0.5, pairs={1: 12}))


def test_only_the_training_split_gets_noise(digits):
    clean_config = load_config(None)
    noisy_config = load_config(None, ["data.label_noise={rate: 0.4, seed: 5}"])
    bundle, train, val = load_data(clean_config)
    noisy_bundle, noisy_train, noisy_val = load_data(noisy_config)
    # the same validation samples with the same (clean) labels: carved before the noise
    assert torch.equal(val.inputs, noisy_val.inputs) and torch.equal(val.labels, noisy_val.labels)
    assert torch.equal(bundle.test.labels, noisy_bundle.test.labels)
    assert torch.equal(train.inputs, noisy_train.inputs) and torch.equal(noisy_train.clean_labels, train.labels)
    changed = int((noisy_train.labels != train.labels).sum())
    assert changed == round(0.4 * len(train))
    assert noisy_train.noise["realised_rate"] == pytest.approx(changed / len(train))
    assert noisy_train.noise["changed"] == changed and sum(noisy_train.noise["changed_per_class"]) == changed


def test_zero_rate_is_no_noise_and_user_data_sets_are_refused(digits):
    _, train, _ = load_data(load_config(None, ["data.label_noise={rate: 0}"]))
    assert not hasattr(train, "noise")
    with pytest.raises(BadInput, match="in-memory"):
        apply_label_noise(list(range(4)), LabelNoiseSpec(rate=0.5), 2)
