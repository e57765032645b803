"""CRD: InfoNCE against an independent computation, both memories, errors, and a real step.

The real-data collapse check (issue 8) is in test_crd_collapse.py."""

from __future__ import annotations

import math

import pytest
import torch

from kdistill.data.base import InMemoryDataset
from kdistill.engine.distiller import Distiller
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings
from kdistill.methods import CRD, METHODS, StepContext, build_method
from kdistill.methods.contrastive import info_nce
from kdistill.models import build_model

TAU = 0.5


def _ctx(fs: torch.Tensor, ft: torch.Tensor, indices: torch.Tensor | None = None,
         num_samples: int | None = None, labels: torch.Tensor | None = None) -> StepContext:
    batch = fs.shape[0]
    return StepContext(torch.zeros(batch, 3), labels, [torch.zeros(batch, 3)], {"s": fs}, [{"t": ft}],
                       indices=indices, num_samples=num_samples)


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _unit(rows: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in rows))
    return [v / norm for v in rows]


def _embed(linear: torch.nn.Linear, x: torch.Tensor) -> list[list[float]]:
    w, b = linear.weight.detach().tolist(), linear.bias.detach().tolist()
    return [_unit([sum(wi * xi for wi, xi in zip(row, sample, strict=True)) + bi
                   for row, bi in zip(w, b, strict=True)])
            for sample in x.tolist()]


def _close(tensor: torch.Tensor, expected: list) -> bool:
    return torch.allclose(tensor.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _info_nce_reference(anchors, positives, negatives_per_anchor, tau):
    total = 0.0
    for anchor, positive, negatives in zip(anchors, positives, negatives_per_anchor, strict=True):
        pos = math.exp(_dot(anchor, positive) / tau)
        neg = sum(math.exp(_dot(anchor, n) / tau) for n in negatives)
        total += -math.log(pos / (pos + neg))
    return total / len(anchors)


def test_defaults_follow_the_paper():
    method = build_method("crd", {"student_layer": "a", "teacher_layer": "b"})
    assert isinstance(method, CRD) and METHODS.get("crd") is CRD
    assert (method.weight, method.feature_dim, method.num_negatives, method.nce_temperature, method.momentum,
            method.memory) == (0.8, 128, 16384, 0.07, 0.5, "dataset")
    assert method.key_momentum == 0.99  # queue only: MoCo v3's key-encoder momentum
    assert "1910.10699" in method.reference and not method.uses_logits


def _unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(_rand(rows, dim, seed=seed), dim=1)


def test_dataset_memory_loss_masking_and_momentum_update(monkeypatch):
    """Positive = the anchor's own row of the other side's memory, read before the update; empty
    (zero) rows are neither negatives nor positives; an empty row is written without mixing."""
    fs, ft = _rand(3, 5, seed=0), _rand(3, 7, seed=1)
    indices = torch.tensor([2, 5, 7])
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=6, nce_temperature=TAU, momentum=0.25)
    ctx = _ctx(fs, ft, indices, num_samples=10)
    method.build(ctx)
    assert method.memory_s.shape == (10, 4) and method.memory_t.shape == (10, 4)
    assert not method.memory_s.any() and not method.memory_t.any()  # starts empty
    written = [0, 1, 2, 3, 5, 9]  # as if seen in an earlier epoch; 4, 6, 7, 8 still empty
    method.memory_s[written] = _unit_rows(6, 4, seed=2)
    method.memory_t[written] = _unit_rows(6, 4, seed=3)
    memory_s, memory_t = method.memory_s.clone(), method.memory_t.clone()
    # 5 is sample 1's own index: masked for it; 8 is empty: masked for all
    negatives = torch.tensor([0, 5, 3, 5, 9, 8])
    monkeypatch.setattr(method, "draw_negatives", lambda count, device: negatives)

    loss = method(ctx)["crd"]

    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    expected = 0.0
    for row, i in enumerate(indices.tolist()):
        if i == 7:  # sample 7's rows are empty: no positive, its term is 0
            continue
        keep = [n for n in negatives.tolist() if n != i and n != 8]
        expected += _info_nce_reference([vs[row]], [memory_t[i].tolist()], [[memory_t[n].tolist() for n in keep]], TAU)
        expected += _info_nce_reference([vt[row]], [memory_s[i].tolist()], [[memory_s[n].tolist() for n in keep]], TAU)
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)

    # memory: the batch's rows become normalize(m * old + (1 - m) * new), an empty row becomes new
    for row, i in enumerate(indices.tolist()):
        for memory, before, new in ((method.memory_s, memory_s, vs[row]), (method.memory_t, memory_t, vt[row])):
            mixed = _unit([0.25 * a + 0.75 * b for a, b in zip(before[i].tolist(), new, strict=True)])
            assert memory[i].tolist() == pytest.approx(mixed, abs=1e-5)
    assert method.memory_s[7].tolist() == pytest.approx(vs[2], abs=1e-6)
    untouched = [i for i in range(10) if i not in indices.tolist()]
    assert torch.equal(method.memory_s[untouched], memory_s[untouched])


def test_dataset_memory_first_epoch_only_fills_the_memory():
    """Every row is empty when first read: the term is 0 (not nan) and carries no gradient."""
    fs = _rand(4, 5, seed=0).requires_grad_(True)
    method = CRD("s", "t", feature_dim=4, num_negatives=8, nce_temperature=TAU)
    ctx = _ctx(fs, _rand(4, 6, seed=1), torch.tensor([0, 1, 2, 3]), num_samples=6)
    method.build(ctx)
    loss = method(ctx)["crd"]
    assert loss.item() == 0.0
    loss.backward()
    assert fs.grad is not None and not fs.grad.any()
    assert method.memory_s[:4].ne(0).all() and not method.memory_s[4:].any()


def test_gradients_flow_only_through_the_anchors(monkeypatch):
    """The student gets the gradient of its own anchor term only; positives and negatives are
    memory rows without gradient (CRD's code). Before issue 8 the positive was the other side's
    embedding of this step, with gradient, which let both sides collapse together."""
    fs = _rand(3, 5, seed=0).requires_grad_(True)
    ft = _rand(3, 7, seed=1).requires_grad_(True)
    indices = torch.tensor([0, 1, 2])
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=5, nce_temperature=TAU)
    method.build(_ctx(fs, ft, indices, num_samples=6))
    method.memory_s.copy_(_unit_rows(6, 4, seed=2))
    method.memory_t.copy_(_unit_rows(6, 4, seed=3))
    memory_s, memory_t = method.memory_s.clone(), method.memory_t.clone()
    negatives = torch.tensor([3, 4, 5, 0, 4])
    monkeypatch.setattr(method, "draw_negatives", lambda count, device: negatives)
    method(_ctx(fs, ft, indices, num_samples=6))["crd"].backward()

    fs2, ft2 = fs.detach().clone().requires_grad_(True), ft.detach().clone().requires_grad_(True)
    vs = torch.nn.functional.normalize(method.embed_s(fs2), dim=1)
    vt = torch.nn.functional.normalize(method.embed_t(ft2), dim=1)
    mask = negatives.unsqueeze(0) == indices.unsqueeze(1)
    info_nce(vs, memory_t[indices], memory_t[negatives], TAU, mask).backward()
    torch.testing.assert_close(fs.grad, fs2.grad)  # the teacher-anchor term adds nothing to the student
    info_nce(vt, memory_s[indices], memory_s[negatives], TAU, mask).backward()
    torch.testing.assert_close(ft.grad, ft2.grad)


def test_memory_is_buffers_and_embeddings_are_parameters():
    method = CRD("s", "t", feature_dim=4, num_negatives=8, memory="dataset")
    method.build(_ctx(_rand(2, 3, seed=0), _rand(2, 5, seed=1), torch.tensor([0, 1]), num_samples=4))
    state = method.state_dict()
    assert {"memory_s", "memory_t"} <= set(state)
    names = {name for name, _ in method.named_parameters()}
    assert names == {"embed_s.weight", "embed_s.bias", "embed_t.weight", "embed_t.bias"}
    queue = CRD("s", "t", feature_dim=4, num_negatives=8, memory="queue")
    queue.build(_ctx(_rand(2, 3, seed=0), _rand(2, 5, seed=1)))
    assert {"memory_s", "memory_t", "queue_index", "queue_pointer", "key_s_weight", "key_s_bias",
            "key_t_weight", "key_t_bias"} == set(queue.state_dict()) - {n for n, _ in queue.named_parameters()}
    assert {name for name, _ in queue.named_parameters()} == names


def test_gradients_reach_student_features_and_both_embeddings():
    fs = _rand(4, 5, seed=0).requires_grad_(True)
    method = CRD("s", "t", feature_dim=4, num_negatives=8, nce_temperature=TAU, memory="queue")
    ctx = _ctx(fs, _rand(4, 6, seed=1))
    method.build(ctx)
    method(ctx)  # the queue starts empty: this step fills half of it
    method(ctx)["crd"].backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    for name, param in method.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def _keys(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> list[list[float]]:
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return _embed(linear, x)


def test_queue_memory_is_moco_keys_fifo():
    """Queue: positive = the other side's key (momentum key embedding of this step's features),
    negatives = earlier keys of that side; empty slots are masked; keys are enqueued FIFO."""
    fs, ft = _rand(3, 5, seed=2), _rand(3, 6, seed=3)
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=4, nce_temperature=TAU, memory="queue",
                 key_momentum=0.5)
    ctx = _ctx(fs, ft)  # no indices, no data set size: queue mode needs neither
    method.build(ctx)
    assert method.memory_s.shape == (4, 4) and not method.memory_s.any()
    assert torch.equal(method.key_s_weight, method.embed_s.weight)  # key embeddings start as copies
    # empty queue: every negative masked, l = -log(1) = 0
    assert method(ctx)["crd"].item() == pytest.approx(0.0, abs=1e-6)
    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    assert _close(method.memory_s[:3], vs) and _close(method.memory_t[:3], vt)  # keys == embeddings so far
    assert not method.memory_s[3].any() and int(method.queue_pointer) == 3

    # an optimiser step changes the embeddings: keys follow with momentum 0.5
    key_s = [method.key_s_weight.clone(), method.key_s_bias.clone()]
    key_t = [method.key_t_weight.clone(), method.key_t_bias.clone()]
    with torch.no_grad():
        for param in method.parameters():
            param.add_(_rand(*param.shape, seed=9) * 0.3)
    queue_s, queue_t = method.memory_s.clone(), method.memory_t.clone()
    fs2, ft2 = _rand(3, 5, seed=4), _rand(3, 6, seed=5)
    loss = method(_ctx(fs2, ft2))["crd"]
    key_s = [0.5 * k + 0.5 * p for k, p in zip(key_s, (method.embed_s.weight, method.embed_s.bias), strict=True)]
    key_t = [0.5 * k + 0.5 * p for k, p in zip(key_t, (method.embed_t.weight, method.embed_t.bias), strict=True)]
    assert torch.allclose(method.key_s_weight, key_s[0]) and torch.allclose(method.key_t_bias, key_t[1])
    vs2, vt2 = _embed(method.embed_s, fs2), _embed(method.embed_t, ft2)
    ks2, kt2 = _keys(*key_s, fs2), _keys(*key_t, ft2)
    expected = (_info_nce_reference(vs2, kt2, [queue_t[:3].tolist()] * 3, TAU)
                + _info_nce_reference(vt2, ks2, [queue_s[:3].tolist()] * 3, TAU))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the keys (not the anchors) are enqueued, wrapping around: slots 3, 0, 1
    assert _close(method.memory_s[[3, 0, 1]], ks2) and _close(method.memory_t[[3, 0, 1]], kt2)
    assert _close(method.memory_s[2], vs[2]) and int(method.queue_pointer) == 2


def test_other_class_negatives_skip_the_anchors_class_in_the_dataset_memory(monkeypatch):
    """negatives: other_classes (CRD's CIFAR loader): a memory row of the anchor's class is not a
    negative for it; rows keep the class they were last written with."""
    fs, ft = _rand(2, 5, seed=0), _rand(2, 6, seed=1)
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=4, nce_temperature=TAU, negatives="other_classes")
    first = _ctx(fs, ft, torch.tensor([0, 1]), num_samples=6, labels=torch.tensor([0, 1]))
    method.build(first)
    assert method.memory_label.tolist() == [-1] * 6
    method.memory_s[[2, 3, 4]] = _unit_rows(3, 4, seed=2)
    method.memory_t[[2, 3, 4]] = _unit_rows(3, 4, seed=3)
    method.memory_s[[0, 1]] = _unit_rows(2, 4, seed=4)
    method.memory_t[[0, 1]] = _unit_rows(2, 4, seed=5)
    method.memory_label[:5] = torch.tensor([0, 1, 0, 1, 2])
    memory_s, memory_t = method.memory_s.clone(), method.memory_t.clone()
    negatives = torch.tensor([2, 3, 4, 1])
    monkeypatch.setattr(method, "draw_negatives", lambda count, device: negatives)
    ctx = _ctx(fs, ft, torch.tensor([0, 1]), num_samples=6, labels=torch.tensor([0, 1]))
    loss = method(ctx)["crd"]
    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    keep = [[3, 4, 1], [2, 4]]  # sample 0 (class 0) drops row 2 (class 0); sample 1 drops 3 and itself

    def both_sides(kept: list[list[int]]) -> float:
        total = 0.0
        for row, i in enumerate([0, 1]):
            total += _info_nce_reference([vs[row]], [memory_t[i].tolist()], [memory_t[kept[row]].tolist()], TAU)
            total += _info_nce_reference([vt[row]], [memory_s[i].tolist()], [memory_s[kept[row]].tolist()], TAU)
        return total / 2

    assert loss.item() == pytest.approx(both_sides(keep), rel=1e-5)
    # negatives: all keeps rows 2 and 3 (only the anchor's own row is masked): a different loss
    assert abs(loss.item() - both_sides([[2, 3, 4, 1], [2, 3, 4]])) > 1e-3
    # a row written by the update takes the batch's label
    relabel = _ctx(fs, ft, torch.tensor([5, 2]), num_samples=6, labels=torch.tensor([3, 2]))
    method(relabel)
    assert method.memory_label.tolist() == [0, 1, 2, 1, 2, 3]


def test_other_class_negatives_in_the_queue_and_without_labels():
    fs, ft = _rand(2, 5, seed=6), _rand(2, 6, seed=7)
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=3, nce_temperature=TAU, memory="queue",
                 negatives="other_classes")
    first = _ctx(fs, ft, labels=torch.tensor([4, 5]))
    method.build(first)
    method(first)  # slots 0, 1 hold classes 4, 5
    assert method.memory_label.tolist() == [4, 5, -1]
    queue_s, queue_t = method.memory_s.clone(), method.memory_t.clone()
    loss = method(_ctx(fs, ft, labels=torch.tensor([5, 6])))["crd"]
    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    keep = [[0], [0, 1]]  # class 5 must not meet slot 1 (class 5); class 6 meets both
    expected = (_info_nce_reference(vs, vt, [[queue_t[k].tolist() for k in ks] for ks in keep], TAU)
                + _info_nce_reference(vt, vs, [[queue_s[k].tolist() for k in ks] for ks in keep], TAU))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    for labels in (None, torch.rand(2, 3), torch.tensor([[1], [2]])):
        with pytest.raises(ValueError, match="negatives: other_classes needs one integer class label per sample"):
            method(_ctx(fs, ft, labels=labels))


def test_queue_masks_the_anchors_own_earlier_entries_when_indices_are_known():
    fs, ft = _rand(2, 5, seed=6), _rand(2, 6, seed=7)
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=3, nce_temperature=TAU, memory="queue")
    first = _ctx(fs, ft, torch.tensor([10, 11]))
    method.build(first)
    method(first)  # queue slots 0, 1 now hold samples 10, 11; slot 2 is empty
    assert method.queue_index.tolist() == [10, 11, -1]
    queue_s, queue_t = method.memory_s.clone(), method.memory_t.clone()
    second = _ctx(fs, ft, torch.tensor([11, 12]))
    loss = method(second)["crd"]
    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    # no optimiser step: the key embeddings equal the embeddings, so the keys equal vs, vt
    keep = [[0], [0, 1]]  # sample 11 must not meet its own slot 1; empty slot 2 is never used
    expected = (_info_nce_reference(vs, vt, [[queue_t[k].tolist() for k in ks] for ks in keep], TAU)
                + _info_nce_reference(vt, vs, [[queue_s[k].tolist() for k in ks] for ks in keep], TAU))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_batch_larger_than_queue_keeps_its_last_entries():
    method = CRD("s", "t", feature_dim=4, num_negatives=2, memory="queue")
    fs, ft = _rand(5, 3, seed=0), _rand(5, 3, seed=1)
    ctx = _ctx(fs, ft)
    method.build(ctx)
    method(ctx)
    vs = _embed(method.embed_s, fs)
    # 5 entries through 2 slots: slots 0, 1 end with samples 4, 3 (0->0, 1->1, 2->0, 3->1, 4->0)
    assert _close(method.memory_s[0], vs[4]) and _close(method.memory_s[1], vs[3])
    assert int(method.queue_pointer) == 1


def test_no_memory_update_in_eval_mode():
    method = CRD("s", "t", feature_dim=4, num_negatives=4, memory="queue")
    ctx = _ctx(_rand(3, 5, seed=0), _rand(3, 6, seed=1))
    method.build(ctx)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.eval()
    method(ctx)
    for key, value in method.state_dict().items():  # memory, queue pointer and key embeddings
        assert torch.equal(value, before[key]), key


def test_dataset_memory_without_indices_is_a_clear_error():
    method = CRD("s", "t", feature_dim=4, num_negatives=4)
    with pytest.raises(ValueError, match=r"needs each sample's index.*set memory: queue"):
        method.build(_ctx(_rand(2, 3, seed=0), _rand(2, 3, seed=1), None, num_samples=10))
    method.build(_ctx(_rand(2, 3, seed=0), _rand(2, 3, seed=1), torch.tensor([0, 1]), num_samples=10))
    with pytest.raises(ValueError, match="needs each sample's index"):
        method(_ctx(_rand(2, 3, seed=0), _rand(2, 3, seed=1), None, num_samples=10))


def test_dataset_memory_without_a_data_set_size_or_with_bad_indices():
    method = CRD("s", "t", feature_dim=4, num_negatives=4)
    with pytest.raises(ValueError, match="size of the training set"):
        method.build(_ctx(_rand(2, 3, seed=0), _rand(2, 3, seed=1), torch.tensor([0, 1]), num_samples=None))
    with pytest.raises(ValueError, match="outside the data set of 5 samples"):
        method.build(_ctx(_rand(2, 3, seed=0), _rand(2, 3, seed=1), torch.tensor([0, 5]), num_samples=5))


@pytest.mark.parametrize("options, key", [
    ({"memory": "bank"}, "memory"),
    ({"num_negatives": 0}, "num_negatives"),
    ({"feature_dim": 1.5}, "feature_dim"),
    ({"nce_temperature": 0}, "nce_temperature"),
    ({"momentum": 1.0}, "momentum"),
    ({"key_momentum": -0.1}, "key_momentum"),
    ({"negatives": "others"}, "negatives"),
])
def test_validation(options, key):
    with pytest.raises(ValueError, match=rf"^{key}: must be"):
        build_method("crd", {"student_layer": "a", "teacher_layer": "b", **options})


def test_maps_are_pooled_unless_flattened():
    fs, ft = _rand(2, 3, 2, 2, seed=0), _rand(2, 5, 2, 2, seed=1)
    pooled = CRD("s", "t", feature_dim=4, num_negatives=4, memory="queue")
    pooled.build(_ctx(fs, ft))
    assert pooled.embed_s.in_features == 3 and pooled.embed_t.in_features == 5
    flat = CRD("s", "t", feature_dim=4, num_negatives=4, memory="queue", flatten=True)
    flat.build(_ctx(fs, ft))
    assert flat.embed_s.in_features == 12 and flat.embed_t.in_features == 20


# real Distiller steps -----------------------------------------------------------------------------
def _distiller(method: CRD, data: InMemoryDataset) -> tuple[Distiller, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": (8, 16)})
    student = build_model("cnn", 10, (1, 8, 8), {"channels": (4, 12)})
    distiller = Distiller(teacher, student, [method], optimizer=OptimizerSettings(lr=0.5, momentum=0.0,
                          weight_decay=0.0), schedule=ScheduleSettings(name="constant"), batch_size=8,
                          device="cpu", progress=False)
    return distiller, teacher, student


@pytest.mark.parametrize("memory, objective", [("dataset", "info_nce"), ("queue", "info_nce"), ("dataset", "nce")])
def test_one_distiller_step(memory, objective):
    data = InMemoryDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    method = CRD("head:input", "head:input", feature_dim=8, num_negatives=32, memory=memory, objective=objective)
    distiller, teacher, student = _distiller(method, data)
    loader = distiller.make_loader(data, train=True)
    distiller.num_samples = len(data)
    distiller._build(loader, 1)
    rows = 16 if memory == "dataset" else 32
    assert method.memory_s.shape == (rows, 8)
    # as after an earlier epoch: an empty memory gives a zero term (and no gradient) on the first step
    for buffer in (method.memory_s, method.memory_t):
        buffer.copy_(torch.nn.functional.normalize(torch.randn(rows, 8), dim=1))
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.named_parameters()}
    embed_before = {k: v.clone() for k, v in method.named_parameters()}
    memory_before = method.memory_t.clone()
    terms, _, _ = distiller.train_step(next(iter(loader)), 0, 1)
    assert torch.isfinite(terms["loss"])
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    changed = [k for k, p in student.named_parameters() if not torch.equal(p, student_before[k])]
    assert any(k.startswith("features.0") for k in changed), changed
    for key, param in method.named_parameters():
        assert not torch.equal(param, embed_before[key]), key
    assert not torch.equal(method.memory_t, memory_before)
    assert "0.memory_t" in distiller.methods.state_dict()


def test_fit_gives_the_dataset_memory_its_size():
    data = InMemoryDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    method = CRD("head:input", "head:input", feature_dim=8, num_negatives=32)
    distiller, _, _ = _distiller(method, data)
    history = distiller.fit(data, epochs=1)
    assert method.memory_s.shape == (16, 8)
    assert math.isfinite(history[-1]["train/crd"])
