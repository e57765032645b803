"""Feature methods against the papers' formulas written out independently (loops, float64)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdistill.data.base import InMemoryDataset
from kdistill.engine.distiller import Distiller
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings
from kdistill.methods import (
    METHODS,
    NST,
    PKT,
    RKD,
    AttentionTransfer,
    Hint,
    SimilarityPreserving,
    StepContext,
    build_method,
)
from kdistill.models import build_model


def _ctx(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], batch: int) -> StepContext:
    return StepContext(torch.zeros(batch, 3), None, [torch.zeros(batch, 3)], student, [teacher])


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Hint / FitNets -----------------------------------------------------------------------------------
def test_hint_defaults_and_aliases():
    method = build_method("fitnets", {"student_layer": "a", "teacher_layer": "b"})
    assert isinstance(method, Hint) and method.weight == 100.0
    assert method.student_taps() == ["a"] and method.teacher_taps() == ["b"]
    assert METHODS.get("hint") is Hint


def test_hint_is_mse_through_a_resize_conv1x1_batchnorm_regressor():
    fs = _rand(4, 3, 4, 4, seed=0).requires_grad_(True)
    ft = _rand(4, 5, 2, 2, seed=1)
    method = Hint("s", "t", weight=2.0)
    ctx = _ctx({"s": fs}, {"t": ft}, 4)
    method.build(ctx)
    convs = [m for m in method.adapter.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in method.adapter.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 1 and len(norms) == 1
    with torch.no_grad():
        convs[0].weight.copy_(_rand(5, 3, 1, 1, seed=2))
        norms[0].weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]))
        norms[0].bias.copy_(torch.tensor([0.1, 0.0, -0.2, 0.3, 0.0]))
    loss = method(ctx)["hint"]

    # independent: 2x2 block average, 1x1 conv as a channel mix, batch-norm with batch statistics
    x = fs.detach().double()
    pooled = torch.zeros(4, 3, 2, 2, dtype=torch.float64)
    for i, j in itertools.product(range(2), range(2)):
        pooled[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(dim=(2, 3))
    w = convs[0].weight.detach().double()[:, :, 0, 0]
    y = torch.einsum("oc,bchw->bohw", w, pooled)
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    gamma = norms[0].weight.detach().double().view(1, -1, 1, 1)
    beta = norms[0].bias.detach().double().view(1, -1, 1, 1)
    y = (y - mean) / torch.sqrt(var + norms[0].eps) * gamma + beta
    expected = 2.0 * ((y - ft.double()) ** 2).sum().item() / y.numel()
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    loss.backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.adapter.parameters())


def test_hint_on_vectors_uses_a_linear_regressor():
    method = Hint("s", "t")
    ctx = _ctx({"s": _rand(4, 6, seed=0)}, {"t": _rand(4, 9, seed=1)}, 4)
    method.build(ctx)
    assert isinstance(method.adapter, nn.Linear) and method.adapter.out_features == 9
    a = method.adapter
    fs, ft = ctx.student_features["s"], ctx.teacher_features[0]["t"]
    expected = ((fs @ a.weight.t() + a.bias - ft) ** 2).mean()
    assert method.loss_terms(ctx).item() == pytest.approx(expected.item(), rel=1e-5)


def test_hint_unadaptable_shapes_name_both_taps():
    method = Hint("layer2", "linear:input")
    with pytest.raises(ValueError) as info:
        method.build(_ctx({"layer2": torch.zeros(2, 8, 4, 4)}, {"linear:input": torch.zeros(2, 16)}, 2))
    message = str(info.value)
    assert "'layer2'" in message and "'linear:input'" in message
    assert "(2, 8, 4, 4)" in message and "(2, 16)" in message


def test_hint_before_build_is_an_error():
    with pytest.raises(RuntimeError, match="build"):
        Hint("s", "t").loss_terms(_ctx({"s": torch.zeros(2, 3)}, {"t": torch.zeros(2, 3)}, 2))


# Attention transfer -------------------------------------------------------------------------------
def _attention_reference(f: torch.Tensor, p: float) -> list[list[float]]:
    batch, channels, height, width = f.shape
    maps = []
    for b in range(batch):
        values = [sum(abs(float(f[b, c, i, j])) ** p for c in range(channels)) / channels
                  for i in range(height) for j in range(width)]
        norm = math.sqrt(sum(v * v for v in values))
        maps.append([v / norm for v in values])
    return maps


def test_attention_transfer_matches_the_paper_over_two_pairs_with_pooling():
    s1, t1 = _rand(3, 4, 8, 8, seed=0), _rand(3, 6, 4, 4, seed=1)  # student larger: pooled
    s2, t2 = _rand(3, 5, 2, 2, seed=2), _rand(3, 7, 4, 4, seed=3)  # teacher larger: pooled
    method = AttentionTransfer(["s1", "s2"], ["t1", "t2"], weight=10.0)
    s1.requires_grad_(True)
    loss = method(_ctx({"s1": s1, "s2": s2}, {"t1": t1, "t2": t2}, 3))["attention_transfer"]

    def pool2(x):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))

    expected = 0.0
    for fs, ft in ((pool2(s1.detach()), t1), (s2, pool2(t2))):
        qs, qt = _attention_reference(fs, 2.0), _attention_reference(ft, 2.0)
        diffs = [(a - b) ** 2 for rs, rt in zip(qs, qt, strict=True) for a, b in zip(rs, rt, strict=True)]
        expected += sum(diffs) / len(diffs)
    assert loss.item() == pytest.approx(10.0 * expected, rel=1e-4)
    loss.backward()
    assert s1.grad is not None and s1.grad.abs().sum() > 0


def test_attention_transfer_p_and_defaults():
    method = build_method("at", {"student_layers": ["a"], "teacher_layers": ["b"]})
    assert isinstance(method, AttentionTransfer) and method.weight == 1000.0 and method.p == 2.0
    fs, ft = _rand(2, 3, 2, 2, seed=5), _rand(2, 3, 2, 2, seed=6)
    method = AttentionTransfer(["a"], ["b"], weight=1.0, p=3.0)
    loss = method.loss_terms(_ctx({"a": fs}, {"b": ft}, 2))
    qs, qt = _attention_reference(fs, 3.0), _attention_reference(ft, 3.0)
    diffs = [(a - b) ** 2 for rs, rt in zip(qs, qt, strict=True) for a, b in zip(rs, rt, strict=True)]
    assert loss.item() == pytest.approx(sum(diffs) / len(diffs), rel=1e-4)


def test_attention_transfer_needs_maps():
    method = AttentionTransfer(["a"], ["b"])
    with pytest.raises(ValueError, match="feature maps"):
        method.loss_terms(_ctx({"a": torch.zeros(2, 5)}, {"b": torch.zeros(2, 5)}, 2))


@pytest.mark.parametrize("name", ["attention_transfer", "sp", "nst"])
def test_mismatched_layer_lists_are_refused(name):
    with pytest.raises(ValueError, match=r"^teacher_layers: must name as many layers as student_layers"):
        build_method(name, {"student_layers": ["a", "b"], "teacher_layers": ["c"]})
    with pytest.raises(ValueError, match=r"^student_layers: must be a non-empty list"):
        build_method(name, {"student_layers": [], "teacher_layers": []})


def test_bad_p_and_teacher_are_refused():
    with pytest.raises(ValueError, match=r"^p: must be > 0"):
        build_method("at", {"student_layers": ["a"], "teacher_layers": ["b"], "p": 0})
    with pytest.raises(ValueError, match=r"^teacher: must be an integer"):
        build_method("hint", {"student_layer": "a", "teacher_layer": "b", "teacher": -1})
    with pytest.raises(ValueError, match=r"^student_layer: must be a layer name"):
        build_method("hint", {"student_layer": "", "teacher_layer": "b"})


# Similarity preserving ----------------------------------------------------------------------------
def _sp_reference(fs: torch.Tensor, ft: torch.Tensor) -> float:
    batch = fs.shape[0]
    qs, qt = fs.reshape(batch, -1).tolist(), ft.reshape(batch, -1).tolist()

    def gram(q):
        g = [[sum(a * b for a, b in zip(q[i], q[j], strict=True)) for j in range(batch)]
             for i in range(batch)]
        return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in g]

    gs, gt = gram(qs), gram(qt)
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(batch) for j in range(batch)) / batch**2


def test_similarity_preserving_matches_the_paper():
    fs, ft = _rand(4, 3, 2, 2, seed=0), _rand(4, 7, 3, 3, seed=1)
    fs2, ft2 = _rand(4, 5, seed=2), _rand(4, 9, seed=3)
    method = SimilarityPreserving(["a", "b"], ["c", "d"], weight=3.0)
    fs.requires_grad_(True)
    loss = method(_ctx({"a": fs, "b": fs2}, {"c": ft, "d": ft2}, 4))["sp"]
    expected = _sp_reference(fs.detach(), ft) + _sp_reference(fs2, ft2)
    assert loss.item() == pytest.approx(3.0 * expected, rel=1e-4)
    loss.backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert build_method("sp", {"student_layers": "a", "teacher_layers": "b"}).weight == 3000.0


# RKD ----------------------------------------------------------------------------------------------
def _huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def _rkd_reference(s: list[list[float]], t: list[list[float]]) -> tuple[float, float]:
    n = len(s)

    def distances(e):
        d = [[math.dist(e[i], e[j]) for j in range(n)] for i in range(n)]
        positive = [v for row in d for v in row if v > 0]
        mean = sum(positive) / len(positive)
        return [[v / mean for v in row] for row in d]

    def cosines(e):
        out = []
        for i, j, k in itertools.product(range(n), repeat=3):
            u = [a - b for a, b in zip(e[j], e[i], strict=True)]
            v = [a - b for a, b in zip(e[k], e[i], strict=True)]
            nu, nv = math.hypot(*u), math.hypot(*v)
            dot = sum(a * b for a, b in zip(u, v, strict=True))
            out.append(0.0 if nu == 0 or nv == 0 else dot / (nu * nv))
        return out

    ds, dt = distances(s), distances(t)
    distance = sum(_huber(ds[i][j], dt[i][j]) for i in range(n) for j in range(n)) / n**2
    cs, ct = cosines(s), cosines(t)
    angle = sum(_huber(a, b) for a, b in zip(cs, ct, strict=True)) / len(cs)
    return distance, angle


def test_rkd_matches_the_paper():
    fs = (_rand(5, 4, seed=0) * 3).requires_grad_(True)
    ft = _rand(5, 6, seed=1)
    method = RKD("s", "t")
    terms = method(_ctx({"s": fs}, {"t": ft}, 5))
    distance, angle = _rkd_reference(fs.tolist(), ft.tolist())
    assert terms["rkd.distance"].item() == pytest.approx(25 * distance, rel=1e-4)
    assert terms["rkd.angle"].item() == pytest.approx(50 * angle, rel=1e-4)
    sum(terms.values()).backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0


def test_rkd_pools_maps_by_default_and_flattens_on_request():
    fs, ft = _rand(4, 3, 2, 2, seed=0), _rand(4, 5, 2, 2, seed=1)
    ctx = _ctx({"s": fs}, {"t": ft}, 4)
    pooled = RKD("s", "t").loss_terms(ctx)
    d, a = _rkd_reference(fs.mean(dim=(2, 3)).tolist(), ft.mean(dim=(2, 3)).tolist())
    assert pooled["distance"].item() == pytest.approx(25 * d, rel=1e-4)
    assert pooled["angle"].item() == pytest.approx(50 * a, rel=1e-4)
    flat = RKD("s", "t", flatten=True).loss_terms(ctx)
    d, a = _rkd_reference(fs.flatten(1).tolist(), ft.flatten(1).tolist())
    assert flat["distance"].item() == pytest.approx(25 * d, rel=1e-4)
    assert flat["angle"].item() == pytest.approx(50 * a, rel=1e-4)


def test_rkd_batch_of_one_is_zero_not_nan():
    terms = RKD("s", "t").loss_terms(_ctx({"s": torch.ones(1, 3)}, {"t": torch.ones(1, 3)}, 1))
    assert all(v.item() == 0 for v in terms.values())


def test_rkd_validation():
    with pytest.raises(ValueError, match=r"^angle_weight: must be >= 0"):
        build_method("rkd", {"student_layer": "a", "teacher_layer": "b", "angle_weight": -1})


# PKT ----------------------------------------------------------------------------------------------
def _pkt_reference(s: list[list[float]], t: list[list[float]], eps: float = 1e-7) -> float:
    def probabilities(e):
        unit = [[v / (math.sqrt(sum(x * x for x in row)) + eps) for v in row] for row in e]
        k = [[(sum(a * b for a, b in zip(u, w, strict=True)) + 1) / 2 for w in unit] for u in unit]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = probabilities(s), probabilities(t)
    n = len(s)
    pairs = [(i, j) for i in range(n) for j in range(n)]
    return sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i, j in pairs) / n**2


def test_pkt_matches_the_paper():
    fs = _rand(5, 4, seed=0).requires_grad_(True)
    ft = _rand(5, 7, seed=1)
    method = PKT("s", "t", weight=1.0)
    loss = method(_ctx({"s": fs}, {"t": ft}, 5))["pkt"]
    assert loss.item() == pytest.approx(_pkt_reference(fs.tolist(), ft.tolist()), rel=1e-4)
    loss.backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert PKT("s", "t").weight == 30000.0


# NST ----------------------------------------------------------------------------------------------
def _nst_reference(fs: torch.Tensor, ft: torch.Tensor) -> float:
    total = 0.0
    for b in range(fs.shape[0]):
        s = [F.normalize(fs[b, c].flatten(), dim=0).tolist() for c in range(fs.shape[1])]
        t = [F.normalize(ft[b, c].flatten(), dim=0).tolist() for c in range(ft.shape[1])]

        def k(x, y):
            return sum(a * c for a, c in zip(x, y, strict=True)) ** 2

        tt = sum(k(x, y) for x in t for y in t) / len(t) ** 2
        ss = sum(k(x, y) for x in s for y in s) / len(s) ** 2
        st = sum(k(x, y) for x in s for y in t) / (len(s) * len(t))
        total += tt + ss - 2 * st
    return total / fs.shape[0]


def test_nst_matches_the_polynomial_mmd():
    fs = _rand(3, 4, 4, 4, seed=0).requires_grad_(True)
    ft = _rand(3, 6, 2, 2, seed=1)
    method = NST(["s"], ["t"], weight=2.0)
    loss = method(_ctx({"s": fs}, {"t": ft}, 3))["nst"]
    pooled = fs.detach().reshape(3, 4, 2, 2, 2, 2).mean(dim=(3, 5))
    assert loss.item() == pytest.approx(2.0 * _nst_reference(pooled, ft), rel=1e-4)
    loss.backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert NST(["s"], ["t"]).weight == 50.0
    same = NST(["s"], ["t"]).loss_terms(_ctx({"s": ft}, {"t": ft}, 3))
    assert abs(same.item()) < 1e-5


# under autocast the relation methods still compute in float32 ------------------------------------------
def test_feature_losses_ignore_autocast():
    fs, ft = _rand(6, 8, seed=0), _rand(6, 8, seed=1)
    ctx = _ctx({"s": fs}, {"t": ft}, 6)
    method = SimilarityPreserving(["s"], ["t"], weight=1.0)
    plain = method(ctx)["sp"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = method(ctx)["sp"]
    assert amp.dtype == torch.float32 and amp.item() == pytest.approx(plain.item(), rel=1e-6)


# one real Distiller step --------------------------------------------------------------------------
FEATURE_METHODS = [
    lambda: Hint("features.0", "features.0"),
    lambda: Hint("head:input", "head:input"),
    lambda: AttentionTransfer(["features.0", "features.1"], ["features.0", "features.1"]),
    lambda: SimilarityPreserving(["features.1"], ["features.1"]),
    lambda: RKD("head:input", "head:input"),
    lambda: PKT("features.1", "features.1"),
    lambda: NST(["features.0"], ["features.1"]),
]


@pytest.mark.parametrize("factory", FEATURE_METHODS, ids=["hint-map", "hint-vector", "at", "sp", "rkd", "pkt",
                                                           "nst"])
def test_one_distiller_step_trains_student_and_adapters_never_the_teacher(factory):
    torch.manual_seed(0)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": (8, 16)})
    student = build_model("cnn", 10, (1, 8, 8), {"channels": (4, 12)})
    data = InMemoryDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    method = factory()
    distiller = Distiller(teacher, student, [method], optimizer=OptimizerSettings(lr=0.5, momentum=0.0,
                          weight_decay=0.0), schedule=ScheduleSettings(name="constant"), batch_size=16,
                          device="cpu", progress=False)
    loader = distiller.make_loader(data, train=True)
    distiller._build(loader, 1)
    method_params = dict(method.named_parameters())
    assert bool(method_params) == isinstance(method, Hint)
    optimised = distiller.optimizer.param_groups[0]["params"]
    assert all(any(p is q for q in optimised) for p in method_params.values())
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.named_parameters()}
    method_before = {k: v.clone() for k, v in method_params.items()}
    terms, _, _ = distiller.train_step(next(iter(loader)), 0, 1)
    assert torch.isfinite(terms["loss"]) and terms["loss"] > 0

    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    changed = [k for k, p in student.named_parameters() if not torch.equal(p, student_before[k])]
    assert any(k.startswith("features.0") for k in changed), changed
    for key, param in method_params.items():
        assert not torch.equal(param, method_before[key]), key


def test_bf16_autocast_step_stays_finite_and_trains_the_adapter():
    torch.manual_seed(0)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": (8, 16)})
    student = build_model("cnn", 10, (1, 8, 8), {"channels": (4, 12)})
    data = InMemoryDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    hint = Hint("features.0", "features.0")
    methods = [hint, RKD("head:input", "head:input"), SimilarityPreserving(["features.1"], ["features.1"])]
    distiller = Distiller(teacher, student, methods, optimizer=OptimizerSettings(lr=0.1, momentum=0.0,
                          weight_decay=0.0), schedule=ScheduleSettings(name="constant"), batch_size=16,
                          device="cpu", precision="bf16", progress=False)
    loader = distiller.make_loader(data, train=True)
    distiller._build(loader, 1)
    terms, _, _ = distiller.train_step(next(iter(loader)), 0, 1)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in terms.values())
    assert all(p.grad is not None and p.dtype == torch.float32 for p in hint.adapter.parameters())
