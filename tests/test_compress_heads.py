"""Attention-head pruning: whole heads leave a tiny BERT and nn.MultiheadAttention, the model shrinks and runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill.compress.heads import attention_heads, heads_removed, mha_head_importance, prune_attention_heads
from kdistill.errors import BadInput
from kdistill.evaluate.profile import count_parameters, flops

pytest.importorskip("transformers")

from text_fixtures import bert_config, sentences, tokenizer_dir  # noqa: E402


def tiny_bert(heads: int = 4):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config(layers=2, hidden=32, heads=heads)).eval()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir(tmp_path_factory.mktemp("tok"))))
    return dict(tokenizer([text for _, text in sentences(6)], padding=True, return_tensors="pt"))


def test_half_the_heads_of_a_tiny_bert_go_and_it_still_runs(batch):
    model = tiny_bert()
    attention = model.bert.encoder.layer[0].attention.self
    # head h: rows 8h..8h+7 of q, k, v and those columns of the output projection; keep the 2 of largest l2
    dense = model.bert.encoder.layer[0].attention.output.dense.weight.detach()
    norms = sum(w.weight.detach().pow(2).view(4, 8, 32).sum(dim=(1, 2)) for w in (attention.query, attention.key,
                                                                              attention.value))
    norms = norms + dense.pow(2).view(32, 4, 8).sum(dim=(0, 2))
    kept = sorted(torch.topk(norms, 2).indices.tolist())
    assert kept != [0, 1]  # not simply the first heads
    value_rows = torch.cat([attention.value.weight.detach()[8 * h: 8 * h + 8] for h in kept])
    params, work = count_parameters(model), flops(model, batch)
    left = prune_attention_heads(model, batch, 0.5)
    assert left == {"bert.encoder.layer.0.attention.self": 2, "bert.encoder.layer.1.attention.self": 2}
    # per layer: q, k, v lose 16 rows of 32 inputs + bias, the output projection 16 columns
    assert params - count_parameters(model) == 2 * (3 * 16 * 33 + 16 * 32)
    assert flops(model, batch) < 0.9 * work
    assert torch.equal(attention.value.weight, value_rows)  # the strongest heads are the ones kept
    assert attention.all_head_size == 16 and attention.attention_head_size == 8
    assert model.bert.encoder.layer[0].attention.output.dense.in_features == 16
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (6, 2) and torch.isfinite(logits).all()


class TinyAttention(nn.Module):
    def __init__(self, heads: int = 4, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(6, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a, _ = self.attn(h, h, h)
        return self.head(self.norm(a + h).mean(dim=1))


def test_multihead_attention_loses_whole_heads_and_the_residual_stream_follows():
    torch.manual_seed(0)
    model = TinyAttention().eval()
    x = torch.randn(3, 5, 6)
    scores = mha_head_importance(model.attn)
    kept = sorted(torch.topk(scores, 2).indices.tolist())
    out_cols = torch.cat([model.attn.out_proj.weight.detach()[:, 4 * h: 4 * h + 4] for h in kept], dim=1)
    params, work = count_parameters(model), flops(model, x)
    assert prune_attention_heads(model, x, 0.5) == {"attn": 2}
    attn = model.attn
    assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (2, 4, 8)
    assert attn.in_proj_weight.shape == (24, 8) and model.embed.out_features == 8 and model.norm.weight.shape == (8,)
    assert count_parameters(model) < params and flops(model, x) < 0.7 * work
    kept_channels = [4 * h + i for h in kept for i in range(4)]
    assert torch.equal(attn.out_proj.weight, out_cols[kept_channels])  # rows follow the kept heads too
    assert model(x).shape == (3, 3) and model.head.out_features == 3


def test_head_importance_is_the_weight_power_sum_per_head():
    layer = nn.MultiheadAttention(4, 2)
    with torch.no_grad():
        layer.in_proj_weight.fill_(1.0)
        layer.in_proj_weight[2:4] = 2.0  # query rows of head 1
        layer.out_proj.weight.fill_(0.0)
        layer.out_proj.weight[:, 0] = 3.0  # one column of head 0
    # head 0: 3 projections x 2 rows x 4 inputs of 1 + 4 entries of 9; head 1: 8 entries of 4 + 16 of 1
    assert mha_head_importance(layer, p=2).tolist() == [24 + 36, 32 + 16]
    assert mha_head_importance(layer, p=1).tolist() == [24 + 12, 16 + 16]


def test_heads_removed_rounds_up_like_torch_pruning():
    assert [heads_removed(12, r) for r in (0.5, 0.25, 0.1, 0.01)] == [6, 3, 2, 1]


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2, "half", True])
def test_a_bad_head_ratio_is_refused(ratio):
    with pytest.raises(BadInput, match="prune.heads: must be a number between 0 and 1"):
        prune_attention_heads(tiny_bert(), {"input_ids": torch.ones(1, 4, dtype=torch.long)}, ratio)


def test_a_ratio_that_removes_every_head_or_a_model_without_heads_is_refused():
    with pytest.raises(BadInput, match=r"would remove all 4 heads .* at most 0.75"):
        prune_attention_heads(tiny_bert(), {"input_ids": torch.ones(1, 4, dtype=torch.long)}, 0.8)
    with pytest.raises(BadInput, match="no attention layer"):
        prune_attention_heads(nn.Sequential(nn.Linear(3, 3)), torch.randn(1, 3), 0.5)
    with pytest.raises(BadInput, match=r"at most 0.666"):
        prune_attention_heads(TinyAttention(heads=3, width=12), torch.randn(1, 2, 6), 0.7)
    assert attention_heads(tiny_bert(2)) == {f"bert.encoder.layer.{i}.attention.self": 2 for i in range(2)}


def test_a_third_of_three_heads_leaves_two_of_unchanged_width():
    torch.manual_seed(1)
    model = TinyAttention(heads=3, width=12).eval()
    x = torch.randn(2, 4, 6)
    assert prune_attention_heads(model, x, 1 / 3, importance="l1") == {"attn": 2}
    assert (model.attn.head_dim, model.attn.embed_dim) == (4, 8) and model(x).shape == (2, 3)
