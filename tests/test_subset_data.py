"""torch's Subset, random_split and ConcatDataset of kdistill data sets train and evaluate as the
data set of their samples.

An `InMemoryDataset` makes each batch whole (`__getitems__`), and torch's Subset passes that call
on: torch's default collate then failed with a bare `KeyError: 0`. Through a Subset, a batch's
`index` is also the sample's position in the underlying data set, out of range for CRD's memory
(sized to the subset), and a ConcatDataset's parts repeat each other's. kdistill's loaders now take
such wrappers as the data set of their samples (`data.base.as_in_memory`)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset, random_split

from kdistill import Distiller
from kdistill.data import batch_collate
from kdistill.data.base import as_in_memory
from kdistill.errors import BadInput
from kdistill.methods import CRD, HardLabel
from kdistill.models import build_model

PICK = torch.arange(0, 1000, 3)


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})


def run(methods=None, teacher=None) -> Distiller:
    return Distiller(teacher, student(), methods or [HardLabel()], batch_size=32, progress=False, device="cpu")


def test_a_subset_trains_and_evaluates_as_the_data_set_of_its_samples(digits):
    bundle, train, _ = digits
    through_torch, own = run(), run()
    through_torch.fit(Subset(train, PICK.tolist()), epochs=2)
    own.fit(train.subset(PICK), epochs=2)
    for name, value in own.student.model.state_dict().items():
        assert torch.equal(through_torch.student.model.state_dict()[name], value), name
    test_pick = torch.arange(0, len(bundle.test), 2)
    assert own.evaluate(Subset(bundle.test, test_pick.tolist())) == own.evaluate(bundle.test.subset(test_pick))
    first, _ = random_split(train, [0.8, 0.2], generator=torch.Generator().manual_seed(0))
    assert run().fit(first, bundle.test, epochs=3)[-1]["val/acc"] > 0.5


def test_nested_subsets_compose_their_indices(digits):
    _, train, _ = digits
    outer = [5, 0, 7, 3]
    nested = as_in_memory(Subset(Subset(train, PICK.tolist()), outer))
    assert torch.equal(nested.inputs, train.inputs[PICK[outer]])
    assert torch.equal(nested.labels, train.labels[PICK[outer]])
    assert as_in_memory(train) is train


def test_a_concatenation_of_kdistill_data_sets_numbers_its_samples_once(digits):
    bundle, train, _ = digits
    joined = as_in_memory(ConcatDataset([train, Subset(bundle.test, [0, 1, 2])]))
    assert torch.equal(joined.inputs, torch.cat([train.inputs, bundle.test.inputs[:3]]))
    batch = joined.__getitems__(list(range(len(joined))))
    assert torch.equal(batch["index"], torch.arange(len(train) + 3))  # one row each in CRD's memory
    history = run().fit(ConcatDataset([train, bundle.test]), epochs=1)
    assert torch.isfinite(torch.tensor(history[-1]["train/loss"]))


def test_crd_on_a_subset_keys_its_memory_by_the_subsets_positions(digits):
    _, train, _ = digits
    torch.manual_seed(1)
    teacher = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    crd = CRD(student_layer="hidden.0", teacher_layer="hidden.0", num_negatives=64, feature_dim=16)
    history = run([HardLabel(), crd], teacher).fit(Subset(train, PICK.tolist()), epochs=1)  # indices up to 999
    assert torch.isfinite(torch.tensor(history[-1]["train/loss"]))


def test_a_users_loader_over_a_kdistill_data_set_needs_its_collate_and_says_so(digits):
    _, train, _ = digits
    with pytest.raises(BadInput, match="collate_fn=kdistill.data.batch_collate"):
        run().fit(DataLoader(train, batch_size=32), epochs=1)
    with pytest.raises(BadInput, match="collate_fn=kdistill.data.batch_collate"):
        run().fit(DataLoader(Subset(train, PICK.tolist()), batch_size=32), epochs=1)
    assert run().fit(DataLoader(train, batch_size=32, shuffle=True, collate_fn=batch_collate), epochs=2)


def test_a_subclass_keeps_its_batches_joined_or_picked_by_its_own_subset():
    # a text data set's batches carry attention masks, which a plain in-memory copy would drop
    from kdistill.text.tokenize import TextDataset

    def text(n, seed):
        generator = torch.Generator().manual_seed(seed)
        ids, lengths = torch.randint(1, 50, (n, 6), generator=generator), torch.randint(2, 7, (n,), generator=generator)
        return TextDataset(ids, lengths, torch.randint(0, 2, (n,), generator=generator), ["a", "b"], pad_id=0,
                           pad_to=6)

    joined = ConcatDataset([text(8, 0), text(8, 1)])
    assert as_in_memory(joined) is joined
    picked = as_in_memory(Subset(text(8, 0), [1, 3, 5]))
    assert type(picked) is TextDataset and len(picked) == 3
    assert set(picked.__getitems__([0, 1])["input"]) == {"input_ids", "attention_mask"}


def test_inputs_and_labels_given_as_a_pair_are_the_data_set_of_those_tensors(digits):
    # read as a data set the pair would be two samples: a shape error from torch's collate
    bundle, train, _ = digits
    pair, own = run(), run()
    pair.fit((train.inputs, train.labels), epochs=2)
    own.fit(train, epochs=2)
    for name, value in own.student.model.state_dict().items():
        assert torch.equal(pair.student.model.state_dict()[name], value), name
    assert pair.evaluate((bundle.test.inputs, bundle.test.labels)) == pair.evaluate(bundle.test)
    with pytest.raises(BadInput, match="labels must be one integer class id per input"):
        run().fit((train.inputs, train.labels.float()), epochs=1)
