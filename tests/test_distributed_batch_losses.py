"""Losses that compare the samples of a batch (SP, RKD, PKT, DIST) give, split over 2 gloo processes,
the loss and the student-side gradients of one process on the whole batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kdistill.collectives import gather_batch, gather_rows, shard_weight
from kdistill.engine.distributed import exit_process
from kdistill.methods import DIST, PKT, RKD, SimilarityPreserving, StepContext

WORLD = 2
ROWS = 9  # splits 5 + 4 over the two processes, as kdistill's sampler splits an uneven last batch


def make_methods() -> dict[str, torch.nn.Module]:
    return {"sp": SimilarityPreserving(["s"], ["t"], weight=1.0), "rkd": RKD("s", "t"),
            "pkt": PKT("s", "t", weight=1.0), "dist": DIST(beta=1.0, gamma=2.0, temperature=2.0)}


def global_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"maps_s": torch.randn(ROWS, 4, 3, 3, generator=generator),
            "maps_t": torch.randn(ROWS, 6, 3, 3, generator=generator),
            "logits_s": torch.randn(ROWS, 5, generator=generator),
            "logits_t": torch.randn(ROWS, 5, generator=generator)}


def loss_and_grads(name: str, rows: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, gradient w.r.t. the student's feature map, w.r.t. its logits, rows) of the rows `rows`
    of the global batch, the gradients as DDP gives them: this rank's loss times its shard weight,
    averaged over the processes."""
    data = {k: v[rows] for k, v in global_batch().items()}
    maps = data["maps_s"].clone().requires_grad_()
    logits = data["logits_s"].clone().requires_grad_()
    # SP compares the maps; RKD and PKT pool them to vectors (their default); DIST reads the logits
    ctx = StepContext(logits, torch.zeros(len(rows), dtype=torch.long), [data["logits_t"]], {"s": maps},
                      [{"t": data["maps_t"]}])
    loss = sum(make_methods()[name](ctx).values())
    world = dist.get_world_size() if dist.is_initialized() else 1
    weight = shard_weight(len(rows), torch.device("cpu")) if world > 1 else 1.0
    (loss * weight).backward()
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (maps, logits)]
    return float(loss.detach()), grads[0] / world, grads[1] / world, rows


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    try:
        rows = torch.arange(ROWS)[rank::WORLD]
        results = {name: loss_and_grads(name, rows) for name in make_methods()}
        # the collectives themselves: rows come back in the global batch's order
        local = torch.arange(ROWS, dtype=torch.float32)[rank::WORLD]
        results["gathered"] = (gather_batch(local)[0], gather_rows(local)[0])
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    exit_process(0)  # as kdistill's own workers end: gloo's teardown at exit can abort (SIGABRT)


def test_batch_losses_split_over_two_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for rank in ranks:
        assert torch.equal(rank["gathered"][0], torch.arange(ROWS, dtype=torch.float32))
        assert torch.equal(rank["gathered"][1], torch.arange(ROWS, dtype=torch.float32))
    for name in make_methods():
        loss, maps_grad, logits_grad, _ = loss_and_grads(name, torch.arange(ROWS))
        assert maps_grad.abs().sum() + logits_grad.abs().sum() > 0, name  # the reference has gradients to match
        for rank in ranks:
            rank_loss, rank_maps, rank_logits, rows = rank[name]
            assert rank_loss == pytest.approx(loss, rel=1e-5), name
            torch.testing.assert_close(rank_maps, maps_grad[rows], rtol=1e-4, atol=1e-7, msg=name)
            torch.testing.assert_close(rank_logits, logits_grad[rows], rtol=1e-4, atol=1e-7, msg=name)


def test_per_shard_losses_differ_from_the_global_batch():
    """Why the gather is needed: the loss of a shard is not the loss of the whole batch."""
    for name in make_methods():
        whole = loss_and_grads(name, torch.arange(ROWS))[0]
        shards = [loss_and_grads(name, torch.arange(ROWS)[r::WORLD]) for r in range(WORLD)]
        weighted = sum(s[0] * len(s[3]) for s in shards) / ROWS
        assert abs(weighted - whole) > 1e-4 * abs(whole), name
