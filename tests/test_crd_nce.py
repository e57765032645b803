"""CRD's own NCE objective (`objective: nce`) against a pure-Python computation of its formula.

The formula is that of CRD's reference code (ContrastMemory + ContrastLoss): scores exp(a.v / tau)
divided by a constant Z = N x the mean score of the first batch, then one "data or noise" term per
pair against K noise samples of probability 1 / N."""

from __future__ import annotations

import math

import pytest
import torch

from kdistill.methods import CRD, StepContext, build_method

TAU, N, K, EPS = 0.5, 10, 6, 1e-7


def _ctx(fs, ft, indices, labels=None) -> StepContext:
    batch = fs.shape[0]
    return StepContext(torch.zeros(batch, 3), labels, [torch.zeros(batch, 3)], {"s": fs}, [{"t": ft}],
                       indices=indices, num_samples=N)


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _embedded(linear: torch.nn.Linear, x: torch.Tensor) -> list[list[float]]:
    rows = []
    for sample in x.tolist():
        out = [sum(w * v for w, v in zip(row, sample, strict=True)) + b
               for row, b in zip(linear.weight.tolist(), linear.bias.tolist(), strict=True)]
        norm = math.sqrt(sum(v * v for v in out))
        rows.append([v / norm for v in out])
    return rows


def _score(a: list[float], v: list[float]) -> float:
    return math.exp(sum(x * y for x, y in zip(a, v, strict=True)) / TAU)


def _pairs(anchors, memory, indices, negatives, active_rows):
    """Per active anchor: (anchor, positive row, [valid negative rows])."""
    out = []
    for anchor, i in zip(anchors, indices, strict=True):
        if i not in active_rows:
            continue
        keep = [n for n in negatives if n != i and n in active_rows]
        out.append((anchor, memory[i], [memory[n] for n in keep]))
    return out


def _z(pairs) -> float:
    scores = [_score(a, p) for a, p, _ in pairs] + [_score(a, n) for a, _, ns in pairs for n in ns]
    return N * sum(scores) / len(scores)


def _loss(pairs, z: float) -> float:
    noise = K / N
    total = 0.0
    for anchor, positive, negatives in pairs:
        x = _score(anchor, positive) / z
        total -= math.log(x / (x + noise + EPS))
        for n in negatives:
            total -= math.log(noise / (_score(anchor, n) / z + noise + EPS))
    return total


def test_nce_loss_and_its_normaliser_match_the_reference_formula(monkeypatch):
    fs, ft = _rand(3, 5, seed=0), _rand(3, 7, seed=1)
    indices = [2, 5, 7]
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=K, nce_temperature=TAU, momentum=0.25,
                 objective="nce")
    method.build(_ctx(fs, ft, torch.tensor(indices)))
    assert method.nce_z.tolist() == [-1.0, -1.0]  # not fixed until a batch has a positive
    written = [0, 1, 2, 3, 5, 9]  # as if seen in an earlier epoch; 4, 6, 7, 8 still empty
    method.memory_s[written] = torch.nn.functional.normalize(_rand(6, 4, seed=2), dim=1)
    method.memory_t[written] = torch.nn.functional.normalize(_rand(6, 4, seed=3), dim=1)
    memory_s, memory_t = method.memory_s.tolist(), method.memory_t.tolist()
    negatives = [0, 5, 3, 5, 9, 8]  # 5: sample 1's own row; 8: empty
    monkeypatch.setattr(method, "draw_negatives", lambda count, device: torch.tensor(negatives))

    loss = method(_ctx(fs, ft, torch.tensor(indices)))["crd"]

    vs, vt = _embedded(method.embed_s, fs), _embedded(method.embed_t, ft)
    student_pairs = _pairs(vs, memory_t, indices, negatives, written)
    teacher_pairs = _pairs(vt, memory_s, indices, negatives, written)
    z_s, z_t = _z(student_pairs), _z(teacher_pairs)
    assert method.nce_z.tolist() == pytest.approx([z_s, z_t], rel=1e-5)
    expected = (_loss(student_pairs, z_s) + _loss(teacher_pairs, z_t)) / len(indices)  # sample 7: term 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    # a later batch scores against the fixed Z, not its own estimate
    fs2, ft2, indices2 = _rand(2, 5, seed=4), _rand(2, 7, seed=5), [0, 3]
    memory_s, memory_t = method.memory_s.tolist(), method.memory_t.tolist()
    active = [i for i in range(N) if any(memory_s[i])]
    loss2 = method(_ctx(fs2, ft2, torch.tensor(indices2)))["crd"]
    vs2, vt2 = _embedded(method.embed_s, fs2), _embedded(method.embed_t, ft2)
    expected2 = (_loss(_pairs(vs2, memory_t, indices2, negatives, active), z_s)
                 + _loss(_pairs(vt2, memory_s, indices2, negatives, active), z_t)) / 2
    assert loss2.item() == pytest.approx(expected2, rel=1e-5)
    assert method.nce_z.tolist() == pytest.approx([z_s, z_t], rel=1e-5)
    assert "nce_z" in method.state_dict()  # saved with checkpoints: a resumed run keeps its Z


def test_nce_first_epoch_fixes_nothing_and_gives_a_zero_term():
    fs = _rand(4, 5, seed=0).requires_grad_(True)
    method = CRD("s", "t", feature_dim=4, num_negatives=8, nce_temperature=TAU, objective="nce")
    ctx = _ctx(fs, _rand(4, 6, seed=1), torch.tensor([0, 1, 2, 3]))
    method.build(ctx)
    loss = method(ctx)["crd"]
    assert loss.item() == 0.0
    loss.backward()
    assert not fs.grad.any()
    assert method.nce_z.tolist() == [-1.0, -1.0]


def test_nce_drops_same_class_negatives(monkeypatch):
    """With other_classes, a negative of the anchor's class contributes no term."""
    fs, ft = _rand(2, 5, seed=0), _rand(2, 7, seed=1)
    labels = torch.tensor([0, 1])
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=K, nce_temperature=TAU, objective="nce",
                 negatives="other_classes")
    method.build(_ctx(fs, ft, torch.tensor([0, 1]), labels))
    method.memory_s.copy_(torch.nn.functional.normalize(_rand(N, 4, seed=2), dim=1))
    method.memory_t.copy_(torch.nn.functional.normalize(_rand(N, 4, seed=3), dim=1))
    method.memory_label.copy_(torch.arange(N) % 2)  # even rows class 0, odd rows class 1
    method.nce_z.fill_(3.0)
    memory_s, memory_t = method.memory_s.tolist(), method.memory_t.tolist()
    negatives = [2, 3, 4, 5, 6, 7]
    monkeypatch.setattr(method, "draw_negatives", lambda count, device: torch.tensor(negatives))
    loss = method(_ctx(fs, ft, torch.tensor([0, 1]), labels))["crd"]
    vs, vt = _embedded(method.embed_s, fs), _embedded(method.embed_t, ft)
    expected = 0.0
    for row, label in enumerate(labels.tolist()):
        others = [n for n in negatives if n % 2 != label]
        expected += _loss([(vs[row], memory_t[row], [memory_t[n] for n in others])], 3.0)
        expected += _loss([(vt[row], memory_s[row], [memory_s[n] for n in others])], 3.0)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"objective": "nce2"}, r"^objective: must be one of info_nce, nce"),
    ({"objective": "nce", "memory": "queue"}, r"^objective: nce needs memory: dataset"),
])
def test_objective_refusals(options, message):
    with pytest.raises(ValueError, match=message):
        build_method("crd", {"student_layer": "a", "teacher_layer": "b", **options})


def test_info_nce_stays_the_default():
    method = build_method("crd", {"student_layer": "s", "teacher_layer": "t"})
    assert method.objective == "info_nce"
    method.build(_ctx(_rand(2, 3, seed=0), _rand(2, 5, seed=1), torch.tensor([0, 1])))
    assert "nce_z" not in method.state_dict()  # checkpoints of the default keep their keys
