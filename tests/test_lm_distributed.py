"""The LM top-k teacher cache and token-level distillation under DDP (2 gloo processes on CPU):
the cache is built in shares (each rank runs the teacher on its batches only) into the same bytes as
one process's build, a failure on one rank fails both without a hang or debris, and the 2-process
distillation from it ends with the 1-process student (also through `kdistill lm --nproc 2`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lm_fixtures import BLOCK, VOCAB, corpus, tiny_lm

from kdistill import Distiller, OptimizerSettings
from kdistill.engine.distributed import exit_process
from kdistill.lm import causal_lm, open_topk_cache, use_cache
from kdistill.methods import ForwardKL, HardLabel

WORLD = 2
BUILD_BATCH = 6  # 41 blocks: 7 build batches, 4 on rank 0 and 3 on rank 1
CACHE_FILES = ("fill.npy", "indices.npy", "meta.json", "values.npy")


def blocks():
    """41 training blocks, the last of them the padded end of the text (fewer positions than the rest)."""
    _, train, _ = corpus()
    chosen = train.subset(torch.arange(len(train) - 41, len(train)))
    assert chosen.attention_mask[-1].sum() < chosen.block_size  # the padded block is in
    return chosen


def distil(folder: Path) -> tuple[Distiller, int]:
    """Build (or share the build of) the cache in `folder`, distil from it; (distiller, teacher forward calls)."""
    data = blocks()
    teacher = tiny_lm(1, layers=2)
    torch.manual_seed(2)  # no dropout: its draws differ between 1 and 2 processes
    student = causal_lm(VOCAB, (BLOCK,), n_layer=1, n_embd=32, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    calls: list[int] = []
    handle = teacher.register_forward_hook(lambda *_: calls.append(1))
    cache = open_topk_cache(folder / "cache", teacher, data, VOCAB, k=8, dtype="float32", batch_size=BUILD_BATCH)
    handle.remove()
    # global batches of 12: the last holds 5 blocks, the padded one among them, split 3 + 2 over the ranks;
    # both losses take the mean over the global batch's positions (hard_label too)
    distiller = Distiller(teacher, student, [ForwardKL(temperature=2.0), HardLabel(0.5)],
                          optimizer=OptimizerSettings(name="adamw", lr=3e-3), batch_size=12, seed=0,
                          progress=False, run_dir=folder / "run", device="cpu")
    use_cache(distiller, cache)
    distiller.fit(data, epochs=2)
    return distiller, len(calls)


class FailsOnRank1(torch.nn.Module):
    """A teacher that breaks on rank 1 at its second batch (a bad block, a full disk...)."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        super().__init__()
        self.teacher, self.calls = teacher, 0

    def forward(self, input_ids, attention_mask=None, **_):
        self.calls += 1
        if dist.get_rank() == 1 and self.calls > 1:
            raise RuntimeError("rank 1's teacher failed")
        return self.teacher.model(input_ids=input_ids, attention_mask=attention_mask)


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    try:
        distiller, calls = distil(Path(folder))
        torch.save(calls, Path(folder) / f"calls{rank}.pt")
        if rank == 0:
            torch.save(distiller.student.model.state_dict(), Path(folder) / "student.pt")
            torch.save(distiller.history, Path(folder) / "history.pt")
        import kdistill.engine.cache_build as cache_build

        real = cache_build.socket.gethostname
        cache_build.socket.gethostname = lambda: f"machine-{rank}"  # as if on two machines: rank 0 builds alone
        calls: list[int] = []
        handle = distiller.teachers[0].model.register_forward_hook(lambda *_: calls.append(1))
        try:
            open_topk_cache(Path(folder) / "two-machines", distiller.teachers[0].model, blocks(), VOCAB, k=8,
                            dtype="float32", batch_size=BUILD_BATCH)
        finally:
            cache_build.socket.gethostname = real
            handle.remove()
        torch.save(len(calls), Path(folder) / f"alone{rank}.pt")
        try:
            failing = FailsOnRank1(distiller.teachers[0].model)
            open_topk_cache(Path(folder) / "failing", failing, blocks(), VOCAB, k=8, batch_size=BUILD_BATCH)
            outcome = "built"
        except RuntimeError as error:
            outcome = str(error)
        torch.save(outcome, Path(folder) / f"outcome{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    exit_process(0)  # as kdistill's own workers end: gloo's teardown at exit can abort (SIGABRT)


@pytest.mark.slow
def test_two_process_cache_build_and_distillation_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    torch.set_num_threads(1)
    reference_dir = tmp_path / "reference"
    reference, reference_calls = distil(reference_dir)
    # the build was shared out: 7 batches, rank 0 ran 4 (0, 2, 4, 6) and rank 1 ran 3; one process ran all 7
    assert reference_calls == 7
    assert [torch.load(tmp_path / f"calls{r}.pt") for r in range(WORLD)] == [4, 3]
    # ... into the same bytes, published once under the same key
    [built] = list((tmp_path / "cache").iterdir())
    [alone] = list((reference_dir / "cache").iterdir())
    assert built.name == alone.name
    assert sorted(p.name for p in built.iterdir()) == list(CACHE_FILES)
    for name in CACHE_FILES:
        assert (built / name).read_bytes() == (alone / name).read_bytes(), name
        # processes on two machines do not share a memory map: rank 0 builds alone, the same bytes
        assert (tmp_path / "two-machines" / alone.name / name).read_bytes() == (alone / name).read_bytes(), name
    assert [torch.load(tmp_path / f"alone{r}.pt") for r in range(WORLD)] == [7, 0]
    # the 2-process distillation ends with the 1-process student, and logs the same epoch means
    distributed = torch.load(tmp_path / "student.pt", weights_only=True)
    for name, value in reference.student.model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=name)
    history = torch.load(tmp_path / "history.pt", weights_only=False)
    for epoch, record in enumerate(reference.history):
        assert history[epoch]["train/forward_kl"] == pytest.approx(record["train/forward_kl"], rel=1e-4)
        assert history[epoch]["train/hard_label"] == pytest.approx(record["train/hard_label"], rel=1e-4)
    # a teacher failing on one rank fails the build on both (no hang), and nothing is published
    outcomes = [torch.load(tmp_path / f"outcome{r}.pt") for r in range(WORLD)]
    assert outcomes[1] == "rank 1's teacher failed" and "another process failed" in outcomes[0]
    assert list((tmp_path / "failing").iterdir()) == []


@pytest.mark.slow
def test_cli_nproc_two_distils_the_student_of_one_process(tmp_path):
    """`kdistill lm --nproc 2` (torchrun, gloo): one run directory written by rank 0, and the distilled
    student of a 1-process run from the same teacher (loaded from that run's checkpoint)."""
    import json
    import subprocess
    import sys

    from test_lm_command import TINY, write_config

    from kdistill.cli import main

    quiet = {**TINY, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}  # no dropout draws to differ
    config = write_config(tmp_path, baseline=False, student={"name": "kdistill.lm:causal_lm", "options": quiet})
    one = tmp_path / "one"
    on_cpu = ["--set", "training.device=cpu"]  # gloo on the CPU, also on a GPU machine
    assert main(["lm", config, "--output-dir", str(one), "--no-progress", *on_cpu]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "kdistill.cli", "lm", config, "--nproc", "2", "--no-progress", "--output-dir", "two",
         "--set", f"teacher.checkpoint={one / 'teacher' / 'student.pt'}", *on_cpu],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("held-out perplexity") == 1  # rank 0 alone prints
    two = tmp_path / "two"
    assert [p.name for p in (two / "teacher-cache").iterdir()] == [p.name for p in (one / "teacher-cache").iterdir()]
    reference = torch.load(one / "student" / "student.pt", weights_only=True)
    distributed = torch.load(two / "student" / "student.pt", weights_only=True)
    for name, value in reference.items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=name)
    rows = {r["model"]: r["perplexity"] for r in json.loads((one / "results.json").read_text())}
    again = {r["model"]: r["perplexity"] for r in json.loads((two / "results.json").read_text())}
    assert again == pytest.approx(rows, rel=1e-4)
