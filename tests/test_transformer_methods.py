"""Transformer methods: layer maps, head matching, the KL / MSE against hand-computed values, taps
against the model's own outputs, and the losses on tiny random BERTs of other depth and width."""

from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("transformers")

from text_fixtures import bert_config, vocab_size  # noqa: E402

from kdistill.engine.loss import DistillationLoss  # noqa: E402
from kdistill.methods import build_method  # noqa: E402
from kdistill.methods.transformer import (  # noqa: E402
    AttentionKL,
    EmbeddingMSE,
    HiddenStateMSE,
    MiniLM,
    layer_map,
    masked_mse,
    match_heads,
    row_kl,
    value_relation,
)
from kdistill.taps import LayerTaps  # noqa: E402


def tiny_bert(layers: int, hidden: int, heads: int, seed: int = 0, **changes):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = bert_config(layers, hidden, heads)
    for key, value in changes.items():
        setattr(config, key, value)
    return BertForSequenceClassification(config).eval()


def padded_batch(extra_padding: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([3, 6, 9, 5])
    width = int(lengths.max()) + extra_padding
    ids = torch.randint(5, vocab_size(), (4, 16), generator=generator)[:, :width]  # the same tokens at any width
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    ids = ids * mask  # pad id 0
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 1, 0])


def test_layer_maps():
    assert layer_map(4, 6, "uniform") == [1, 2, 4, 5]  # TinyBERT's g(m) = ceil(m N / M), 1-based, made 0-based
    assert layer_map(3, 6, "uniform") == [1, 3, 5]
    assert layer_map(6, 6, "uniform") == list(range(6))
    assert layer_map(2, 6, "last") == [4, 5]
    assert layer_map(2, 6, [0, 5]) == [0, 5]
    with pytest.raises(ValueError, match="a list of 2 teacher blocks"):
        layer_map(2, 6, [0, 6])
    with pytest.raises(ValueError, match="no deeper than the teacher"):
        layer_map(7, 6, "last")
    with pytest.raises(ValueError, match="'uniform', 'last' or a list"):
        layer_map(2, 6, "middle")


def test_head_matching_averages_groups():
    teacher = torch.arange(6.0).view(1, 6, 1, 1).expand(1, 6, 1, 2)
    student = torch.zeros(1, 2, 1, 2)
    s, t = match_heads(student, teacher)
    assert s is student and t[0, :, 0, 0].tolist() == [1.0, 4.0]  # mean of heads 0-2 and of heads 3-5
    s, t = match_heads(torch.zeros(1, 4, 1, 2), teacher)  # 4 and 6 share no multiple: both averaged to one head
    assert s.shape[1] == t.shape[1] == 1 and t[0, 0, 0, 0].item() == 2.5


def test_row_kl_by_hand():
    p_teacher = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]).view(1, 1, 2, 3)  # query 2 is padding
    p_student = torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]]).view(1, 1, 2, 3)
    mask = torch.tensor([[1.0, 0.0]])
    assert row_kl(p_teacher, p_student, mask).item() == pytest.approx(math.log(2))  # 0.5 ln 2 + 0.5 ln 2
    both = row_kl(p_teacher, p_student, torch.ones(1, 2))
    assert both.item() == pytest.approx((math.log(2) + math.log(5)) / 2)


def test_masked_mse_by_hand():
    student = torch.tensor([[[1.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]])
    assert masked_mse(student, teacher, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(1.0)
    assert masked_mse(student, teacher, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(13.0)


def test_value_relation_by_hand():
    values = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])  # the third token is padding
    relation = value_relation(values, heads=1, mask=torch.tensor([[1.0, 1.0, 0.0]]))
    scale = math.sqrt(2)
    first = torch.softmax(torch.tensor([1.0, 0.0]) / scale, 0)  # v1.v1 = 1, v1.v2 = 0
    assert torch.allclose(relation[0, 0, 0, :2], first) and relation[0, 0, 0, 2] == 0


def test_taps_read_what_the_model_outputs():
    model = tiny_bert(3, 32, 4)
    inputs, _ = padded_batch()
    taps = LayerTaps(model, ["bert.embeddings", "bert.encoder.layer.1", "bert.encoder.layer.2.attention.self:1",
                             "bert.embeddings.word_embeddings:input"]).attach()
    with torch.no_grad():
        own = model(**inputs, output_hidden_states=True, output_attentions=True)
    tapped = taps.collect()
    assert torch.equal(tapped["bert.embeddings"], own.hidden_states[0])
    assert torch.equal(tapped["bert.encoder.layer.1"], own.hidden_states[2])
    assert torch.equal(tapped["bert.encoder.layer.2.attention.self:1"], own.attentions[2])
    assert torch.equal(tapped["bert.embeddings.word_embeddings:input"], inputs["input_ids"])


def all_methods(student_layers: int, teacher_layers: int) -> list:
    layers = {"student_layers": student_layers, "teacher_layers": teacher_layers}
    return [HiddenStateMSE(**layers), EmbeddingMSE(), AttentionKL(**layers),
            MiniLM(student_layer=student_layers - 1, teacher_layer=teacher_layers - 1)]


def test_a_copy_of_the_teacher_has_zero_loss():
    teacher = tiny_bert(4, 32, 4)
    loss = DistillationLoss(teacher, copy.deepcopy(teacher), all_methods(4, 4))
    inputs, labels = padded_batch()
    loss.build(inputs, labels)
    with loss, torch.no_grad():
        terms = loss(inputs, labels).terms
    assert set(terms) == {"hidden_mse", "embedding_mse", "attention_kl", "minilm.value", "minilm.attention"}
    for name, value in terms.items():
        assert abs(value.item()) < 1e-5, name


def test_padding_does_not_change_the_losses():
    # weights large enough for peaked attention (at BERT's 0.02 init both sides attend nearly uniformly)
    teacher, student = tiny_bert(4, 32, 4, initializer_range=0.5), tiny_bert(2, 16, 2, seed=1, initializer_range=0.5)
    loss = DistillationLoss(teacher, student, all_methods(2, 4))
    inputs, labels = padded_batch()
    loss.build(inputs, labels)
    with loss, torch.no_grad():
        tight = loss(inputs, labels).terms
        loose = loss(*padded_batch(extra_padding=4)).terms
    assert all(tight[name].item() > 1e-4 for name in tight), {k: v.item() for k, v in tight.items()}
    for name in tight:
        assert loose[name].item() == pytest.approx(tight[name].item(), rel=1e-4), name


def test_narrower_shallower_student_learns_through_adapters():
    teacher, student = tiny_bert(4, 32, 4), tiny_bert(2, 16, 2, seed=1)
    layers = {"student_layers": 2, "teacher_layers": 4}
    methods = [build_method("hidden_mse", layers), build_method("embedding_mse", {}),
               build_method("attention_kl", layers)]
    loss = DistillationLoss(teacher, student, methods)
    assert [str(t) for t in loss.teachers[0].taps.taps][:2] == ["bert.encoder.layer.1", "bert.encoder.layer.3"]
    inputs, labels = padded_batch()
    loss.build(inputs, labels)
    assert [(a.in_features, a.out_features) for a in methods[0].adapters] == [(16, 32), (16, 32)]
    optimizer = torch.optim.Adam([*student.parameters(), *loss.parameters()], lr=3e-3)
    student.train()
    with loss:
        first = {k: v.item() for k, v in loss(inputs, labels).terms.items()}
        for _ in range(25):
            out = loss(inputs, labels)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        last = {k: v.item() for k, v in loss(inputs, labels).terms.items()}
    for name in first:
        assert last[name] < 0.5 * first[name], (name, first[name], last[name])


def test_fused_attention_and_attention_dropout_are_refused():
    teacher = tiny_bert(2, 32, 4)
    fused = tiny_bert(2, 32, 4, seed=1)
    fused.set_attn_implementation("sdpa")
    inputs, labels = padded_batch()
    loss = DistillationLoss(teacher, fused, [AttentionKL(student_layers=2, teacher_layers=2)])
    with loss, pytest.raises(ValueError, match="gave no attention probabilities.*attention: eager"):
        loss(inputs, labels)
    dropped = tiny_bert(2, 32, 4, seed=1, attention_probs_dropout_prob=0.5).train()
    loss = DistillationLoss(teacher, dropped, [AttentionKL(student_layers=2, teacher_layers=2)])
    with loss, pytest.raises(ValueError, match="after attention dropout"):
        loss(inputs, labels)


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="student_layout: 'gpt' is not one of bert, roberta, distilbert"):
        build_method("hidden_mse", {"student_layers": 2, "teacher_layers": 4, "student_layout": "gpt"})
    with pytest.raises(ValueError, match="relation_heads: 5 must divide both widths"):
        teacher, student = tiny_bert(2, 32, 4), tiny_bert(1, 16, 2)
        loss = DistillationLoss(teacher, student, [MiniLM(student_layer=0, teacher_layer=1, relation_heads=5)])
        with loss:
            loss(*padded_batch())


def test_distilbert_layout_student_of_a_bert_teacher():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(2)
    config = DistilBertConfig(vocab_size=vocab_size(), dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                              max_position_embeddings=64, attention_dropout=0.0, attn_implementation="eager")
    student = DistilBertForSequenceClassification(config).eval()
    teacher = tiny_bert(4, 32, 4)
    sides = {"student_layout": "distilbert", "teacher_layout": "bert"}
    methods = [HiddenStateMSE(student_layers=2, teacher_layers=4, **sides), EmbeddingMSE(**sides),
               AttentionKL(student_layers=2, teacher_layers=4, **sides),
               MiniLM(student_layer=1, teacher_layer=3, **sides)]
    loss = DistillationLoss(teacher, student, methods)
    assert "distilbert.transformer.layer.1.attention:1" in [str(t) for t in loss.student.taps.taps]
    inputs, labels = padded_batch()
    loss.build(inputs, labels)
    with loss, torch.no_grad():
        terms = loss(inputs, labels).terms
    assert len(terms) == 5 and all(torch.isfinite(v) and v > 0 for v in terms.values())
    copy_loss = DistillationLoss(student, copy.deepcopy(student), [
        AttentionKL(student_layers=2, teacher_layers=2, student_layout="distilbert", teacher_layout="distilbert")])
    with copy_loss, torch.no_grad():
        assert copy_loss(inputs, labels).loss.item() < 1e-6


def test_roberta_padding_is_its_own_pad_id_not_zero():
    # RoBERTa pads with 1 and starts every text with <s> = 0: with a pad id of 0 the loss would drop
    # <s> and count padding (measured: 1.750 vs 1.876 with 4 more pad tokens)
    from transformers import RobertaConfig, RobertaForSequenceClassification

    def tiny_roberta(layers: int, hidden: int, heads: int, seed: int):
        torch.manual_seed(seed)
        config = RobertaConfig(vocab_size=vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=80,
                               attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, attn_implementation="eager",
                               pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.5)
        return RobertaForSequenceClassification(config).eval()

    def batch(extra_padding: int):
        lengths = torch.tensor([3, 6, 9, 5])
        width = int(lengths.max()) + extra_padding
        ids = torch.randint(5, vocab_size(), (4, 16), generator=torch.Generator().manual_seed(1))[:, :width]
        mask = (torch.arange(width)[None] < lengths[:, None]).long()
        ids = torch.where(mask.bool(), ids, torch.ones_like(ids))
        ids[:, 0] = 0  # <s>
        return {"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 1, 0])

    teacher, student = tiny_roberta(2, 32, 4, seed=0), tiny_roberta(2, 16, 2, seed=1)
    method = build_method("hidden_mse", {"student_layers": 2, "teacher_layers": 2, "student_layout": "roberta",
                                         "teacher_layout": "roberta"})
    assert method.pad_token_id == 1
    loss = DistillationLoss(teacher, student, [method])
    loss.build(*batch(0))
    with loss, torch.no_grad():
        tight = loss(*batch(0)).loss.item()
        loose = loss(*batch(4)).loss.item()
    assert tight > 1e-4 and loose == pytest.approx(tight, rel=1e-4)
