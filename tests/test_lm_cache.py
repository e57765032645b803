"""The teacher's top-k LM cache: build, load, key mismatch and incomplete caches refused, and the
loss the cached path computes equals the live teacher's top-k loss."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from lm_fixtures import (
    VOCAB,
    corpus,
    one_thread,  # noqa: F401  (autouse: one thread)
    tiny_lm,
)

from kdistill.errors import BadInput
from kdistill.lm import TopKCache, open_topk_cache, token_scores
from kdistill.methods import ForwardKL, ReverseKL, StepContext
from kdistill.methods.token_level import top_k_logits


@pytest.fixture(scope="module")
def setup():
    _, train, _ = corpus()
    return tiny_lm(1), train.subset(torch.arange(24))


def test_build_then_load_matches_the_live_teacher(setup, tmp_path):
    teacher, blocks = setup
    cache = open_topk_cache(tmp_path, teacher, blocks, VOCAB, k=8, dtype="float32", batch_size=10)
    assert (cache.path / "meta.json").is_file() and cache.path.name == cache.key
    assert list(tmp_path.iterdir()) == [cache.path]  # the staging directory is gone
    rows = torch.tensor([3, 0, 17])
    cached = cache.lookup(rows)
    with torch.inference_mode():
        live = token_scores(teacher.eval(), blocks.input_ids[rows], blocks.attention_mask[rows])
    assert cached.shape == live.shape == (3, VOCAB, blocks.block_size)
    top = torch.zeros_like(live, dtype=torch.bool).scatter(1, live.topk(8, dim=1).indices, True)
    assert torch.allclose(cached[top], live[top])  # the top 8 as they were
    # every other token: one fill value per position, keeping the rest's total probability
    assert torch.equal(cached.masked_fill(top, float("inf")).amin(1), cached.masked_fill(top, float("-inf")).amax(1))
    tail_cached = torch.softmax(cached, 1).masked_fill(top, 0).sum(1)
    tail_live = torch.softmax(live, 1).masked_fill(top, 0).sum(1)
    assert torch.allclose(tail_cached, tail_live, atol=1e-5)
    assert torch.allclose(cached, top_k_logits(live, 8), atol=1e-5)
    # a second open loads what is there: no teacher forward pass at all
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    again = open_topk_cache(tmp_path, teacher, blocks, VOCAB, k=8, dtype="float32")
    assert calls == [] and torch.equal(again.lookup(rows), cached)


def test_cached_loss_equals_the_live_top_k_loss(setup, tmp_path):
    teacher, blocks = setup
    cache = open_topk_cache(tmp_path, teacher, blocks, VOCAB, k=8, dtype="float32")
    rows = torch.arange(6)
    labels = blocks.labels[rows]
    with torch.inference_mode():
        live = token_scores(teacher.eval(), blocks.input_ids[rows], blocks.attention_mask[rows])
    student = torch.randn(6, VOCAB, blocks.block_size)
    for method in (ForwardKL, ReverseKL):
        from_cache = method()(StepContext(student, labels, [cache.lookup(rows)]))
        from_live = method(top_k=8)(StepContext(student, labels, [live.clone()]))
        assert torch.allclose(*from_cache.values(), *from_live.values(), atol=1e-5)


def test_key_follows_teacher_data_k_and_dtype(setup):
    teacher, blocks = setup
    key = TopKCache.make_key(teacher, blocks, 8, "float16")
    assert key == TopKCache.make_key(teacher, blocks, 8, "float16")
    assert key != TopKCache.make_key(teacher, blocks, 4, "float16")
    assert key != TopKCache.make_key(teacher, blocks, 8, "float32")
    assert key != TopKCache.make_key(teacher, blocks.subset(torch.arange(1, 24)), 8, "float16")
    other = tiny_lm(2)
    assert key != TopKCache.make_key(other, blocks, 8, "float16")


def test_saving_the_teacher_keeps_its_key(setup, tmp_path):
    """`save_pretrained` fills in the config's architectures and dtype: the scores, and the key, stay."""
    teacher, blocks = setup
    key = TopKCache.make_key(teacher, blocks, 8, "float16")
    teacher.model.save_pretrained(tmp_path / "saved")
    assert teacher.model.config.architectures == ["GPT2LMHeadModel"]
    assert TopKCache.make_key(teacher, blocks, 8, "float16") == key


def test_a_cache_of_another_key_is_refused(setup, tmp_path):
    teacher, blocks = setup
    built = open_topk_cache(tmp_path, teacher, blocks, VOCAB, k=8)
    other_key = TopKCache.make_key(tiny_lm(2), blocks, 8, "float16")
    shutil.copytree(built.path, tmp_path / other_key)  # the right place, the wrong contents
    impostor = TopKCache(tmp_path, other_key, len(blocks), blocks.block_size, VOCAB, 8)
    assert not impostor.is_complete()
    with pytest.raises(BadInput, match="built for key"):
        impostor.load()


def test_an_incomplete_cache_is_refused_and_rebuilt(setup, tmp_path):
    teacher, blocks = setup
    built = open_topk_cache(tmp_path, teacher, blocks, VOCAB, k=8)
    meta = json.loads((built.path / "meta.json").read_text())
    (built.path / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    half = TopKCache(tmp_path, built.key, len(blocks), blocks.block_size, VOCAB, 8)
    with pytest.raises(BadInput, match="incomplete"):
        half.load()
    (built.path / "meta.json").unlink()  # a build that died before its last write
    with pytest.raises(BadInput, match="incomplete"):
        half.load()
    rebuilt = open_topk_cache(tmp_path, teacher, blocks, VOCAB, k=8)
    assert rebuilt.is_complete() and rebuilt.lookup(torch.tensor([0])).shape == (1, VOCAB, blocks.block_size)


def test_a_failed_build_leaves_nothing_behind(setup, tmp_path):
    teacher, blocks = setup
    with pytest.raises(BadInput, match="expects"):
        open_topk_cache(tmp_path, teacher, blocks, VOCAB + 1, k=8)  # wrong vocabulary: refused mid-build
    assert list(tmp_path.iterdir()) == []


def test_a_teacher_of_another_config_with_the_same_weights_gets_its_own_cache(setup, tmp_path):
    """Same weights, another head count: other scores, so another key; never the stale cache."""
    teacher, blocks = setup
    torch.manual_seed(0)
    other = tiny_lm(1, heads=4)
    other.load_state_dict(teacher.state_dict())  # the very same tensors
    assert TopKCache.make_key(other, blocks, 8, "float32") != TopKCache.make_key(teacher, blocks, 8, "float32")
    first = open_topk_cache(tmp_path, teacher, blocks, VOCAB, k=8, dtype="float32")
    calls = []
    handle = other.register_forward_hook(lambda *_: calls.append(1))
    second = open_topk_cache(tmp_path, other, blocks, VOCAB, k=8, dtype="float32")
    handle.remove()
    assert calls and second.path != first.path  # built afresh, beside the first
    rows = torch.tensor([0, 5])
    with torch.inference_mode():
        live = token_scores(other.eval(), blocks.input_ids[rows], blocks.attention_mask[rows])
    assert torch.allclose(second.lookup(rows), top_k_logits(live, 8), atol=1e-5)
    # the stale cache is another teacher's (near-uniform attention at initialisation: a small but real gap,
    # far above float32 storage's error)
    assert (first.lookup(rows) - second.lookup(rows)).abs().max() > 1e-4
    # a cache handed to a Distiller of another teacher is refused
    from kdistill import Distiller
    from kdistill.lm import use_cache

    with pytest.raises(BadInput, match="another teacher"):
        use_cache(Distiller(other, tiny_lm(2), [ForwardKL()], progress=False), first)


def test_methods_of_different_temperatures_cannot_share_one_fill():
    from kdistill.lm.topk_cache import fill_temperature

    assert fill_temperature([ForwardKL(temperature=2.0), ReverseKL(temperature=2.0)], 8, VOCAB) == 2.0
    assert fill_temperature([], 8, VOCAB) == 1.0
    with pytest.raises(BadInput, match="one temperature"):
        fill_temperature([ForwardKL(temperature=1.0), ReverseKL(temperature=2.0)], 8, VOCAB)
    with pytest.raises(BadInput, match="differs from the methods"):
        fill_temperature([ForwardKL(temperature=1.0)], 8, VOCAB, configured=2.0)
    # the whole vocabulary: no tail, every temperature exact
    assert fill_temperature([ForwardKL(temperature=1.0), ReverseKL(temperature=2.0)], VOCAB, VOCAB) == 1.0
