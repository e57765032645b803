"""The teacher cache built by 2 gloo processes together: the same bytes as one process's build
(top-k logits, augmented views), and a failure on one rank fails both without a hang or debris."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kdistill.collectives import current_world
from kdistill.data import load_digits_bundle
from kdistill.data.transforms import Augment, Normalize
from kdistill.engine.cache import CacheSettings, open_cache
from kdistill.engine.distributed import exit_process
from kdistill.engine.loaders import make_loader
from kdistill.models import build_model

WORLD = 2
AUGMENT = Augment(crop_padding=1, horizontal_flip=True, seed=3)


class FailsOnRank1(torch.nn.Module):
    """A teacher that breaks on rank 1 after the first batches (a bad sample, a full disk...)."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        super().__init__()
        self.teacher, self.calls = teacher, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if current_world().rank == 1 and self.calls > 2:
            raise RuntimeError("rank 1's teacher failed")
        return self.teacher(x)


def build(folder: Path, failing: bool = False):
    bundle = load_digits_bundle()
    data = bundle.train.subset(torch.arange(300))
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]}).eval()
    model = FailsOnRank1(teacher) if failing else teacher
    loader = make_loader(data, train=False, batch_size=64, eval_batch_size=32, seed=0, world=current_world(),
                         device=torch.device("cpu"))
    settings = CacheSettings(folder, dtype="float16", top_k=4, views=3, temperature=2.0)
    return open_cache(settings, model, data, loader, Normalize(bundle.mean, bundle.std), AUGMENT, 10,
                      torch.device("cpu"))


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    try:
        build(Path(folder) / "cache")
        import kdistill.engine.cache_build as cache_build

        real = cache_build.socket.gethostname
        cache_build.socket.gethostname = lambda: f"machine-{rank}"  # as if on two machines: rank 0 builds alone
        try:
            build(Path(folder) / "two-machines")
        finally:
            cache_build.socket.gethostname = real
        try:
            build(Path(folder) / "failing", failing=True)
            outcome = "built"
        except RuntimeError as error:
            outcome = str(error)
        torch.save(outcome, Path(folder) / f"outcome{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    exit_process(0)  # as kdistill's own workers end: gloo's teardown at exit can abort (SIGABRT)


@pytest.mark.slow
def test_two_process_build_equals_one_process_and_a_rank_failure_fails_both(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    torch.set_num_threads(1)
    reference = build(tmp_path / "reference")
    built = tmp_path / "cache" / reference.key
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [reference.key]
    names = sorted(p.name for p in reference.path.iterdir())
    assert names == ["fill.npy", "indices.npy", "meta.json", "values.npy"]
    for name in names:
        assert (built / name).read_bytes() == (reference.path / name).read_bytes(), name
        assert (tmp_path / "two-machines" / reference.key / name).read_bytes() == built.joinpath(name).read_bytes()
    outcomes = [torch.load(tmp_path / f"outcome{r}.pt", weights_only=False) for r in range(WORLD)]
    assert outcomes[1] == "rank 1's teacher failed" and "another process failed" in outcomes[0]
    assert list((tmp_path / "failing").iterdir()) == []  # the staging directory is gone; nothing published
