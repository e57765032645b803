"""LM distillation through kdistill's loop: the loss falls (teacher live and from the top-k cache),
sequence-level KD's generated text, perplexity against hand-computed values, the token blocks."""

from __future__ import annotations

import math

import pytest
import torch
from lm_fixtures import (
    BLOCK,
    VOCAB,
    corpus,
    one_thread,  # noqa: F401  (autouse: one thread)
    tiny_lm,
)
from torch import nn

from kdistill import Distiller, OptimizerSettings
from kdistill.errors import BadInput
from kdistill.lm import (
    IGNORE_INDEX,
    TokenBlocks,
    generate_blocks,
    open_topk_cache,
    perplexity,
    read_lines,
    token_scores,
    use_cache,
)
from kdistill.methods import ForwardKL, StepContext


def divergence(teacher: nn.Module, student: nn.Module, blocks: TokenBlocks) -> float:
    """Forward KL of the student from the teacher on `blocks`, both in eval mode."""
    device = next(student.parameters()).device  # the GPU after a Distiller ran there
    ids, mask = blocks.input_ids.to(device), blocks.attention_mask.to(device)
    with torch.no_grad():
        t = token_scores(teacher.eval().to(device), ids, mask)
        s = token_scores(student.eval(), ids, mask)
        return float(ForwardKL()(StepContext(s, blocks.labels, [t]))["forward_kl"])


def distiller(teacher, student, tmp_path, name: str) -> Distiller:
    return Distiller(teacher, student, [ForwardKL()], optimizer=OptimizerSettings(name="adamw", lr=3e-3),
                     batch_size=8, progress=False, seed=0, run_dir=tmp_path / name)


@pytest.mark.parametrize("cached", [False, True], ids=["live", "top-k cache"])
def test_distillation_loss_falls_in_the_loop(cached, tmp_path):
    _, train, _ = corpus()
    blocks = train.subset(torch.arange(32))
    teacher, student = tiny_lm(1), tiny_lm(2)
    before = divergence(teacher, student, blocks)
    run = distiller(teacher, student, tmp_path, "run")
    if cached:
        use_cache(run, open_topk_cache(tmp_path / "cache", teacher, blocks, VOCAB, k=VOCAB, dtype="float32"))
    calls = []
    handle = teacher.register_forward_hook(lambda *_: calls.append(1))
    history = run.fit(blocks, epochs=3)
    handle.remove()
    assert (calls == []) == cached  # from the cache the teacher never runs
    losses = [record["train/forward_kl"] for record in history]
    assert losses[-1] < losses[0]
    assert divergence(teacher, student, blocks) < 0.8 * before


def test_sequence_level_blocks_are_seeded_and_shaped():
    teacher = tiny_lm(3)
    state = torch.random.get_rng_state()
    first = generate_blocks(teacher, count=5, block_size=BLOCK, start_id=0, seed=7, batch_size=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    again = generate_blocks(teacher, count=5, block_size=BLOCK, start_id=0, seed=7, batch_size=2)
    other = generate_blocks(teacher, count=5, block_size=BLOCK, start_id=0, seed=8)
    assert first.input_ids.shape == (5, BLOCK) and torch.all(first.input_ids[:, 0] == 0)
    assert torch.equal(first.input_ids, again.input_ids)
    assert not torch.equal(first.input_ids, other.input_ids)
    assert first.input_ids.max() < VOCAB and torch.all(first.attention_mask == 1)
    assert torch.equal(first.labels[:, :-1], first.input_ids[:, 1:]) and torch.all(first.labels[:, -1] == IGNORE_INDEX)
    with pytest.raises(BadInput, match="temperature"):
        generate_blocks(teacher, 1, BLOCK, 0, temperature=0)


def test_sequence_level_kd_never_samples_the_padding_token():
    """A teacher that all but always predicts the pad id: its samples must still hold no padding
    (without the mask nearly every sampled token would be the pad)."""
    teacher = tiny_lm(3)
    pad = 1
    head = teacher.model.lm_head

    def favour_pad(_module, _inputs, output):
        output = output.clone()
        output[..., pad] += 50.0
        return output

    handle = head.register_forward_hook(favour_pad)
    try:
        blocks = generate_blocks(teacher, count=4, block_size=BLOCK, start_id=0, seed=1, pad_id=pad)
        unmasked = generate_blocks(teacher, count=4, block_size=BLOCK, start_id=0, seed=1)
    finally:
        handle.remove()
    assert (unmasked.input_ids[:, 1:] == pad).float().mean() > 0.9  # the hook does make the pad likely
    assert not torch.any(blocks.input_ids == pad)
    with pytest.raises(BadInput, match="padding token"):
        generate_blocks(teacher, 1, BLOCK, start_id=pad, pad_id=pad)


class FixedLM(nn.Module):
    """A 'model' whose next-token probabilities are given: (V, T) per block, the same for every block."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.scores = nn.Parameter(probs.log(), requires_grad=False)

    def forward(self, input_ids, attention_mask=None, **_):
        return type("Out", (), {"logits": self.scores.T.expand(input_ids.shape[0], -1, -1)})()


def test_perplexity_against_hand_computed_values():
    ids = torch.tensor([[2, 0, 1, 1], [1, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])  # the second block ends after two tokens
    blocks = TokenBlocks.from_sequences(ids, mask)
    assert blocks.labels.tolist() == [[0, 1, 1, -100], [2, -100, -100, -100]]
    probs = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]]).T
    scored = perplexity(FixedLM(probs), blocks, batch_size=1)
    # targets: block 1 -> p(0 | pos 0) = 0.5, p(1 | pos 1) = 0.6, p(1 | pos 2) = 0.25; block 2 -> p(2 | pos 0) = 0.3
    expected = math.exp(-(math.log(0.5) + math.log(0.6) + math.log(0.25) + math.log(0.3)) / 4)
    assert scored["tokens"] == 4
    assert scored["perplexity"] == pytest.approx(expected, rel=1e-6)
    uniform = perplexity(FixedLM(torch.full((3, 4), 1 / 3)), blocks)
    assert uniform["perplexity"] == pytest.approx(3.0, rel=1e-6)


def test_tokens_per_second_count_real_tokens_over_the_measured_time(monkeypatch):
    from kdistill.lm import metrics, training_tokens_per_second

    ids = torch.tensor([[2, 0, 1, 1], [1, 2, 0, 0]])
    blocks = TokenBlocks.from_sequences(ids, torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))  # 6 real tokens
    ticks = iter([0.0, 0.5, 10.0, 10.5])  # a clock read around each forward: 0.5 s per batch
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(ticks))
    scored = perplexity(FixedLM(torch.full((3, 4), 1 / 3)), blocks, batch_size=1)
    assert scored["tokens_per_s"] == pytest.approx(6 / 1.0)  # padding is not read, the gap between batches not timed
    history = [{"epoch_time_s": 0.5}, {"epoch_time_s": 1.5}]  # two epochs over the 6 tokens
    assert training_tokens_per_second(history, blocks) == pytest.approx(12 / 2.0)


def test_blocks_pack_the_stream_and_mask_the_padding(tmp_path):
    blocks = TokenBlocks.from_stream([5, 6, 7, 0, 8, 9, 0], block_size=3, pad_id=1)
    assert blocks.input_ids.tolist() == [[5, 6, 7], [0, 8, 9], [0, 1, 1]]
    assert blocks.attention_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
    assert blocks.labels.tolist() == [[6, 7, -100], [8, 9, -100], [-100, -100, -100]]
    assert blocks.num_targets() == 4 and blocks.fingerprint() != blocks.subset(torch.tensor([1, 0, 2])).fingerprint()
    labelled = tmp_path / "sst.txt"
    labelled.write_text("1 a fine film .\n0 dull\n\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("1 fine film\nno label here\n")
    assert read_lines(labelled) == ["a fine film .", "dull"]
    trec = tmp_path / "trec.txt"
    trec.write_text("DESC:manner How did serfdom develop ?\nNUM:dist How far is it ?\n")
    assert read_lines(trec) == ["How did serfdom develop ?", "How far is it ?"]
    assert read_lines(plain) == ["1 fine film", "no label here"]
    fortunes = tmp_path / "fortunes"
    fortunes.write_text("A fool and his money\n  are soon parted.\n%\nHave a nice day.\n%\n")
    assert read_lines(fortunes) == ["A fool and his money\n  are soon parted.", "Have a nice day."]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("0 caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(BadInput, match="not utf-8 text"):
        read_lines(latin)
    assert read_lines(latin, encoding="latin-1") == ["caf\xe9 au lait"]
    with pytest.raises(BadInput, match="no such text file"):
        read_lines(tmp_path / "absent.txt")
    with pytest.raises(BadInput, match="block_size"):
        TokenBlocks.from_stream([1, 2], block_size=1, pad_id=1)


def test_held_out_perplexity_of_a_trained_lm_beats_the_untrained_one(tmp_path):
    """A sanity anchor on real text: a few epochs of the language-model loss lower held-out perplexity."""
    from kdistill.methods import HardLabel

    _, train, held_out = corpus()
    model = tiny_lm(4)
    untrained = perplexity(model, held_out)["perplexity"]
    assert untrained == pytest.approx(VOCAB, rel=0.25)  # near uniform at initialisation
    Distiller(None, model, [HardLabel()], optimizer=OptimizerSettings(name="adamw", lr=3e-3), batch_size=32,
              progress=False).fit(train.subset(torch.arange(320)), epochs=2)
    assert perplexity(model, held_out)["perplexity"] < 0.6 * untrained
