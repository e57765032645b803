"""Embedding initialisation by projection onto the teacher's principal directions: hand-checkable
projections, distances kept inside the span, and the tables of tiny BERTs set as documented."""

from __future__ import annotations

import pytest
import torch

from kdistill.errors import BadInput
from kdistill.text.embedding_init import init_embeddings_from_teacher, principal_projection


def test_axis_aligned_variances_pick_the_widest_axes():
    # points at +-3 on x, +-2 on y, +-1 on z (mean 0): variances 9 > 4 > 1 over 6 points
    points = torch.tensor([[3., 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]])
    one = principal_projection(points, 1)
    assert torch.allclose(one.basis.abs().flatten(), torch.tensor([1., 0, 0]))
    assert torch.allclose(one(points).abs().flatten(), torch.tensor([3., 3, 0, 0, 0, 0]))
    assert one.explained == pytest.approx(18 / 28)  # squared norms: 2*9 of 2*9 + 2*4 + 2*1
    two = principal_projection(points, 2)
    assert two.explained == pytest.approx(26 / 28)
    assert torch.allclose(two.basis.T @ two.basis, torch.eye(2), atol=1e-6)


def test_distances_inside_the_span_are_kept_exactly():
    torch.manual_seed(0)
    span = torch.linalg.qr(torch.randn(6, 2))[0].T  # 2 orthonormal directions in 6-d
    points = torch.randn(10, 2) @ span + torch.tensor([1., -2, 0.5, 0, 3, 1])  # rank 2, shifted
    projected = principal_projection(points, 2)(points)
    assert projected.shape == (10, 2)
    assert torch.allclose(torch.cdist(projected, projected), torch.cdist(points, points), atol=1e-4)
    assert principal_projection(points, 2).explained == pytest.approx(1.0)


def test_signs_are_fixed():
    points = torch.tensor([[2., 0], [-2, 0], [0, 1], [0, -1]])
    basis = principal_projection(points, 2).basis
    assert torch.equal(basis, torch.eye(2))  # largest entry of each direction made positive


@pytest.mark.parametrize("matrix, width, match", [
    (torch.zeros(4, 3), 4, "width"),
    (torch.zeros(4, 3), 0, "width"),
    (torch.zeros(4), 1, "2-d"),
])
def test_bad_projection_requests(matrix, width, match):
    with pytest.raises(BadInput, match=match):
        principal_projection(matrix, width)


def _bert(hidden: int, vocab: int = 40, positions: int = 16):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=positions, num_labels=2)
    return BertForSequenceClassification(config)


def test_tiny_bert_tables_are_the_projected_teacher_tables():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    teacher, student = _bert(16), _bert(4, positions=12)
    projection = init_embeddings_from_teacher(student, teacher)
    t, s = teacher.bert.embeddings, student.bert.embeddings
    expected = (t.word_embeddings.weight - t.word_embeddings.weight.mean(0)) @ projection.basis
    assert torch.allclose(s.word_embeddings.weight, expected, atol=1e-5)
    # position / type tables through the same basis, not centred; the student's 12 positions the teacher's first 12
    assert torch.allclose(s.position_embeddings.weight, t.position_embeddings.weight[:12] @ projection.basis, atol=1e-5)
    assert torch.allclose(s.token_type_embeddings.weight, t.token_type_embeddings.weight @ projection.basis, atol=1e-5)
    # word-to-word inner products of the centred tables: the projection keeps the largest-variance part
    gram_t = (t.word_embeddings.weight - t.word_embeddings.weight.mean(0)).detach()
    assert projection.explained == pytest.approx(float(s.word_embeddings.weight.detach().square().sum()
                                                       / gram_t.square().sum()), rel=1e-4)
    logits = student(input_ids=torch.tensor([[2, 5, 7, 3]])).logits  # the student still runs
    assert logits.shape == (1, 2)


def test_mismatched_models_are_refused():
    pytest.importorskip("transformers")
    with pytest.raises(BadInput, match="vocabulary"):
        init_embeddings_from_teacher(_bert(4, vocab=30), _bert(16, vocab=40))
    with pytest.raises(BadInput, match="wider"):
        init_embeddings_from_teacher(_bert(16), _bert(8))
    with pytest.raises(BadInput, match="position_embeddings"):
        init_embeddings_from_teacher(_bert(4, positions=32), _bert(16, positions=16))
    with pytest.raises(BadInput, match="get_input_embeddings"):
        init_embeddings_from_teacher(torch.nn.Linear(2, 2), _bert(16))
