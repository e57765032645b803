"""A user's own training DataLoader under 2 gloo processes: re-batched per process, the run equals
one process's; a loader that cannot be split exactly is refused on every rank with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, WeightedRandomSampler

from kdistill import Distiller, OptimizerSettings
from kdistill.data import load_digits_bundle, split_validation
from kdistill.data.base import batch_collate
from kdistill.engine.distributed import exit_process
from kdistill.errors import BadInput
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

WORLD = 2
BATCH = 64
SAMPLES = 6 * BATCH + 3  # the last global batch splits 2 + 1


def train_set():
    train, _ = split_validation(load_digits_bundle().train, 0.1, seed=0)
    return train.subset(torch.arange(SAMPLES))


def fit(data) -> Distiller:
    bundle = load_digits_bundle()
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    distiller = Distiller(teacher, student, [SoftTarget(weight=0.9), HardLabel(weight=0.1)],
                          optimizer=OptimizerSettings(name="sgd", lr=0.1, momentum=0.9), batch_size=BATCH, seed=3,
                          progress=False, device="cpu", student_normalization=(bundle.mean, bundle.std),
                          teacher_normalization=(bundle.mean, bundle.std))
    distiller.fit(data, epochs=2)
    return distiller


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    try:
        train = train_set()
        # the user's loader: shuffled, the data set's own collate, the last partial batch kept
        distiller = fit(DataLoader(train, batch_size=BATCH, shuffle=True, collate_fn=batch_collate))
        weighted = DataLoader(train, batch_size=BATCH, collate_fn=batch_collate,
                              sampler=WeightedRandomSampler(torch.ones(len(train)), len(train)))
        try:
            fit(weighted)
            refusal = None
        except BadInput as error:
            refusal = str(error)
        if rank == 0:
            torch.save(distiller.student.model.state_dict(), Path(folder) / "student.pt")
        torch.save(refusal, Path(folder) / f"refusal{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    exit_process(0)  # as kdistill's own workers end: gloo's teardown at exit can abort (SIGABRT)


@pytest.mark.slow
def test_users_dataloader_is_sharded_and_the_run_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    torch.set_num_threads(1)
    reference = fit(train_set())  # one process, the Dataset: the same (seed, epoch) order
    distributed = torch.load(tmp_path / "student.pt", weights_only=True)
    for name, value in reference.student.model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for rank in range(WORLD):
        refusal = torch.load(tmp_path / f"refusal{rank}.pt", weights_only=False)
        assert refusal is not None and "\n" not in refusal
        assert "WeightedRandomSampler" in refusal and "pass the Dataset" in refusal


def test_one_process_keeps_the_users_dataloader():
    from kdistill.collectives import World
    from kdistill.engine.user_loader import shard_user_loader

    loader = DataLoader(train_set(), batch_size=BATCH, shuffle=True)
    assert shard_user_loader(loader, seed=0, world=World()) is loader
    sharded = shard_user_loader(loader, seed=0, world=World(rank=1, world_size=2))
    batches = list(sharded.batch_sampler)
    assert len(batches) == len(loader) and all(len(b) == BATCH // 2 for b in batches[:-1])
    odd = DataLoader(train_set(), batch_size=BATCH + 1)
    try:
        shard_user_loader(odd, seed=0, world=World(rank=0, world_size=2))
    except BadInput as error:
        assert "batch_size 65" in str(error) and "multiple of 2" in str(error)
    else:
        raise AssertionError("an indivisible global batch was accepted")


def test_a_loader_without_a_batch_is_refused_with_the_fix():
    """Fewer samples than the batch with drop_last: no step could be taken (it used to end in a bare
    StopIteration out of fit())."""
    loader = DataLoader(train_set().subset(torch.arange(10)), batch_size=BATCH, drop_last=True,
                        collate_fn=batch_collate)
    with pytest.raises(BadInput, match="gives no batch.*smaller batch size"):
        fit(loader)


def test_the_build_reads_a_loader_with_persistent_workers_as_the_users_own_loop_does():
    """The Distiller reads one batch before training. Through a loader with persistent workers that
    read must leave the global RNG (the methods' parts are initialised from it next) as it was, and
    the epochs' batches must be the user's own loop's: the build's batch is the first of epoch 0's
    pass, which training continues."""
    from kdistill.engine.loaders import build_batch

    def loader():
        return DataLoader(train_set(), batch_size=BATCH, shuffle=True, collate_fn=batch_collate, num_workers=1,
                          persistent_workers=True, generator=torch.Generator().manual_seed(11))

    ours, own = loader(), loader()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    batch, begun = build_batch(ours, epoch_seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    # epoch 0 goes on from the build's batch; epoch 1 runs through the same workers
    epochs = [list(begun.batches), list(ours)]
    assert torch.equal(epochs[0][0]["index"], batch["index"])
    for ours_epoch in epochs:
        assert [b["index"].tolist() for b in ours_epoch] == [b["index"].tolist() for b in own]


def test_a_batch_sampler_with_set_epoch_is_told_the_epoch():
    """Bucketing batch samplers reshuffle in set_epoch, as torch's DistributedSampler does."""
    from torch.utils.data import BatchSampler, SequentialSampler

    from kdistill.engine.loaders import start_epoch

    class Bucketing(BatchSampler):
        epoch = -1

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    data = train_set()
    batches = Bucketing(SequentialSampler(data), BATCH, drop_last=False)
    start_epoch(DataLoader(data, batch_sampler=batches, collate_fn=batch_collate), 3)
    assert batches.epoch == 3
