"""`group_by_length`: training batches of similar-length texts. The padding saved is measured
against what random batches pad to; every sample is still seen once an epoch; the order is a
function of (seed, epoch), so a run stopped mid-epoch resumes to the uninterrupted student and two
processes see the same global batches as one; and the option reaches the engine from a YAML
without changing the digests of runs made before it existed."""

from __future__ import annotations

import pytest
import torch

from kdistill import Distiller
from kdistill.engine.interrupt import TrainingInterrupted
from kdistill.engine.run_record import fit_identity
from kdistill.engine.sampler import EpochBatchSampler
from kdistill.errors import BadInput

pytest.importorskip("transformers")

from helpers import StopAtStep  # noqa: E402
from text_fixtures import model_dir, sentences, tokenizer_dir  # noqa: E402

from kdistill.methods import HardLabel  # noqa: E402
from kdistill.text.hf_models import hf_classifier  # noqa: E402
from kdistill.text.tokenize import load_tokenizer, text_dataset  # noqa: E402


def skewed_lengths(count: int, seed: int = 0) -> torch.Tensor:
    """Text-like lengths: most short, a long tail (1-64 tokens)."""
    generator = torch.Generator().manual_seed(seed)
    return (-20 * torch.log(torch.rand(count, generator=generator))).clamp(max=63).long() + 1


def padded_tokens(batches, lengths: torch.Tensor) -> float:
    """Mean width of a padded batch (its longest member): what a batch costs."""
    return sum(int(lengths[torch.as_tensor(b)].max()) for b in batches) / len(batches)


def test_grouped_batches_cover_every_sample_once_and_pad_little():
    lengths = skewed_lengths(10_000)
    grouped = EpochBatchSampler(len(lengths), 32, seed=1, lengths=lengths)
    plain = EpochBatchSampler(len(lengths), 32, seed=1)
    for epoch in range(2):
        grouped.set_epoch(epoch)
        plain.set_epoch(epoch)
        batches = list(grouped)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert len(batches) == len(plain) == 313 and len(batches[-1]) == 10_000 - 312 * 32  # partial batch last
        mean = lengths.float().mean().item()
        # sorted runs of 50 batches: a batch's longest member is within a few tokens of its members
        assert padded_tokens(batches, lengths) < 1.1 * mean
        assert padded_tokens(list(plain), lengths) > 2.5 * mean  # random batches of 32 pad to the tail
    grouped.set_epoch(0)
    first = list(grouped)
    grouped.set_epoch(1)
    assert list(grouped) != first  # a new grouping every epoch
    # long and short batches come in a shuffled order, not a cycle: the widths are not sorted in any run
    widths = [int(lengths[torch.as_tensor(b)].max()) for b in first[:50]]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)


def test_grouped_order_is_a_function_of_seed_and_epoch_resumes_mid_epoch_and_splits_over_processes():
    lengths = skewed_lengths(1_000, seed=2)
    sampler = EpochBatchSampler(1_000, 32, seed=7, lengths=lengths)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, start_batch=11)
    assert list(sampler) == whole[11:]
    assert list(EpochBatchSampler(1_000, 32, seed=8, lengths=lengths)) != list(EpochBatchSampler(1_000, 32, seed=7,
                                                                                                  lengths=lengths))
    ranks = [EpochBatchSampler(1_000, 16, seed=7, lengths=lengths, rank=r, world_size=2) for r in range(2)]
    for rank in ranks:
        rank.set_epoch(3)
    assert [sorted(a + b) for a, b in zip(*map(list, ranks), strict=True)] == [sorted(b) for b in whole]
    with pytest.raises(ValueError, match="lengths: 999 values for 1000 samples"):
        EpochBatchSampler(1_000, 32, lengths=lengths[:999])


@pytest.fixture(scope="module")
def text_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("grouped")
    model_dir(root, "teacher", layers=1, hidden=16, heads=2)
    rows = sentences(120, seed=3)
    data = text_dataset(load_tokenizer(tokenizer_dir(root)), [t for _, t in rows], [y for y, _ in rows],
                        ["negative", "positive"], 16, "grouped")
    return root, data


def grouped_distiller(root, run_dir, methods=None) -> Distiller:
    torch.manual_seed(0)
    student = hf_classifier(2, str(root / "teacher"))
    return Distiller(None, student, methods or [HardLabel()], batch_size=16, seed=3, progress=False,
                     group_by_length=True, run_dir=run_dir)


def test_a_grouped_text_run_stopped_mid_epoch_resumes_to_the_uninterrupted_student(text_assets, tmp_path):
    root, data = text_assets
    reference = grouped_distiller(root, tmp_path / "ref")
    loader = reference.make_loader(data, train=True)
    assert torch.equal(loader.batch_sampler.lengths, data.lengths)  # the grouped sampler is the one training uses
    reference.fit(data, epochs=2)
    stop = []
    interrupted = grouped_distiller(root, tmp_path / "run", [HardLabel(), StopAtStep(stop, 11)])  # mid-epoch 2
    stop.append(interrupted)
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(data, epochs=2)
    resumed = grouped_distiller(root, tmp_path / "run", [HardLabel(), StopAtStep([None], 10**9)])
    resumed.fit(data, epochs=2, resume=True)
    for (name, a), (_, b) in zip(reference.student.model.state_dict().items(),
                                 resumed.student.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    ungrouped = Distiller(None, hf_classifier(2, str(root / "teacher")), [HardLabel()], batch_size=16, seed=3,
                          progress=False)
    assert ungrouped.make_loader(data, train=True).batch_sampler.lengths is None  # off by default
    # fit.json names the option only when it is on: the records of fits made before it still match
    assert fit_identity(reference, data, 2)["group_by_length"] is True
    assert "group_by_length" not in fit_identity(ungrouped, data, 2)


def test_group_by_length_without_lengths_is_refused_in_words(digits):
    _, train, _ = digits
    distiller = Distiller(None, torch.nn.Linear(64, 10), [HardLabel()], group_by_length=True, progress=False)
    with pytest.raises(BadInput, match=r"group_by_length .* needs a data set with per-sample lengths.*Turn "):
        distiller.make_loader(train, train=True)
    with pytest.raises(BadInput, match="a DataLoader"):
        distiller.make_loader(torch.utils.data.DataLoader(train), train=True)
    assert distiller.make_loader(train, train=False) is not None  # evaluation keeps its order: no lengths needed


def test_yaml_option_reaches_the_engine_and_leaves_older_digests_alone(tmp_path):
    from kdistill.config import ExperimentConfig
    from kdistill.run.baseline import baseline_digest, baseline_inputs
    from kdistill.run.build import distiller_kwargs

    plain = ExperimentConfig.model_validate({"data": {"name": "digits"}, "student": {"name": "mlp"}})
    grouped = ExperimentConfig.model_validate({"data": {"name": "digits", "group_by_length": True},
                                              "student": {"name": "mlp"}})
    assert distiller_kwargs(grouped, grouped.training, None, None, "d", False)["group_by_length"] is True
    assert distiller_kwargs(plain, plain.training, None, None, "d", False)["group_by_length"] is False
    before = baseline_inputs(plain, None, None)
    assert "group_by_length" not in before["data"]  # the digest of a run made before the option existed
    assert baseline_digest(before) != baseline_digest(baseline_inputs(grouped, None, None))
