"""CRD: InfoNCE against an independent computation, both memories, errors, and a real step."""

from __future__ import annotations

import math

import pytest
import torch

from kdistill.data.base import InMemoryDataset
from kdistill.engine.distiller import Distiller
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings
from kdistill.methods import CRD, METHODS, StepContext, build_method
from kdistill.models import build_model

TAU = 0.5


def _ctx(fs: torch.Tensor, ft: torch.Tensor, indices: torch.Tensor | None = None,
         num_samples: int | None = None) -> StepContext:
    batch = fs.shape[0]
    return StepContext(torch.zeros(batch, 3), None, [torch.zeros(batch, 3)], {"s": fs}, [{"t": ft}],
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
    assert "1910.10699" in method.reference and not method.uses_logits


def test_dataset_memory_loss_masking_and_momentum_update(monkeypatch):
    fs, ft = _rand(3, 5, seed=0), _rand(3, 7, seed=1)
    indices = torch.tensor([2, 5, 7])
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=6, nce_temperature=TAU, momentum=0.25)
    ctx = _ctx(fs, ft, indices, num_samples=10)
    method.build(ctx)
    assert method.memory_s.shape == (10, 4) and method.memory_t.shape == (10, 4)
    memory_s, memory_t = method.memory_s.clone(), method.memory_t.clone()
    negatives = torch.tensor([0, 5, 3, 5, 9, 1])  # 5 is sample 1's own index: must be masked for it
    monkeypatch.setattr(method, "draw_negatives", lambda count, device: negatives)

    loss = method(ctx)["crd"]

    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    per_anchor_t = [[memory_t[n].tolist() for n in negatives.tolist() if n != i] for i in indices.tolist()]
    per_anchor_s = [[memory_s[n].tolist() for n in negatives.tolist() if n != i] for i in indices.tolist()]
    assert [len(n) for n in per_anchor_t] == [6, 4, 6]
    expected = _info_nce_reference(vs, vt, per_anchor_t, TAU) + _info_nce_reference(vt, vs, per_anchor_s, TAU)
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    # memory: the batch's rows become normalize(m * old + (1 - m) * new), the others stay
    for row, i in enumerate(indices.tolist()):
        mixed = _unit([0.25 * a + 0.75 * b for a, b in zip(memory_s[i].tolist(), vs[row], strict=True)])
        assert method.memory_s[i].tolist() == pytest.approx(mixed, abs=1e-5)
        mixed = _unit([0.25 * a + 0.75 * b for a, b in zip(memory_t[i].tolist(), vt[row], strict=True)])
        assert method.memory_t[i].tolist() == pytest.approx(mixed, abs=1e-5)
    untouched = [i for i in range(10) if i not in indices.tolist()]
    assert torch.equal(method.memory_s[untouched], memory_s[untouched])


def test_memory_is_buffers_and_embeddings_are_parameters():
    method = CRD("s", "t", feature_dim=4, num_negatives=8, memory="dataset")
    method.build(_ctx(_rand(2, 3, seed=0), _rand(2, 5, seed=1), torch.tensor([0, 1]), num_samples=4))
    state = method.state_dict()
    assert {"memory_s", "memory_t"} <= set(state)
    names = {name for name, _ in method.named_parameters()}
    assert names == {"embed_s.weight", "embed_s.bias", "embed_t.weight", "embed_t.bias"}


def test_gradients_reach_student_features_and_both_embeddings():
    fs = _rand(4, 5, seed=0).requires_grad_(True)
    method = CRD("s", "t", feature_dim=4, num_negatives=8, nce_temperature=TAU, memory="queue")
    ctx = _ctx(fs, _rand(4, 6, seed=1))
    method.build(ctx)
    method(ctx)["crd"].backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    for name, param in method.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_queue_memory_uses_the_whole_queue_and_is_fifo():
    fs, ft = _rand(3, 5, seed=2), _rand(3, 6, seed=3)
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=4, nce_temperature=TAU, memory="queue")
    ctx = _ctx(fs, ft)  # no indices, no data set size: queue mode needs neither
    method.build(ctx)
    assert method.memory_s.shape == (4, 4)
    queue_s, queue_t = method.memory_s.clone(), method.memory_t.clone()
    loss = method(ctx)["crd"]
    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    expected = (_info_nce_reference(vs, vt, [queue_t.tolist()] * 3, TAU)
                + _info_nce_reference(vt, vs, [queue_s.tolist()] * 3, TAU))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # enqueued into slots 0..2; slot 3 still holds its old entry
    assert _close(method.memory_s[:3], vs) and _close(method.memory_t[:3], vt)
    assert torch.equal(method.memory_s[3], queue_s[3])
    assert int(method.queue_pointer) == 3
    # the next batch wraps around: slots 3, 0, 1
    fs2, ft2 = _rand(3, 5, seed=4), _rand(3, 6, seed=5)
    method(_ctx(fs2, ft2))
    vs2 = _embed(method.embed_s, fs2)
    assert _close(method.memory_s[[3, 0, 1]], vs2) and _close(method.memory_s[2], vs[2])
    assert int(method.queue_pointer) == 2


def test_queue_masks_the_anchors_own_earlier_entries_when_indices_are_known():
    fs, ft = _rand(2, 5, seed=6), _rand(2, 6, seed=7)
    method = CRD("s", "t", weight=1.0, feature_dim=4, num_negatives=3, nce_temperature=TAU, memory="queue")
    first = _ctx(fs, ft, torch.tensor([10, 11]))
    method.build(first)
    method(first)  # queue slots 0, 1 now hold samples 10, 11
    assert method.queue_index.tolist() == [10, 11, -1]
    queue_s, queue_t = method.memory_s.clone(), method.memory_t.clone()
    second = _ctx(fs, ft, torch.tensor([11, 12]))
    loss = method(second)["crd"]
    vs, vt = _embed(method.embed_s, fs), _embed(method.embed_t, ft)
    keep = [[0, 2], [0, 1, 2]]  # sample 11 must not meet its own slot 1
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
    before = method.memory_s.clone()
    method.eval()
    method(ctx)
    assert torch.equal(method.memory_s, before) and int(method.queue_pointer) == 0


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


@pytest.mark.parametrize("memory", ["dataset", "queue"])
def test_one_distiller_step(memory):
    data = InMemoryDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    method = CRD("head:input", "head:input", feature_dim=8, num_negatives=32, memory=memory)
    distiller, teacher, student = _distiller(method, data)
    loader = distiller.make_loader(data, train=True)
    distiller.num_samples = len(data)
    distiller._build(loader, 1)
    rows = 16 if memory == "dataset" else 32
    assert method.memory_s.shape == (rows, 8)
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
