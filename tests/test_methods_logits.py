"""DKD and DIST against the papers' formulas, written out independently; gradients; validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdistill.data.base import InMemoryDataset
from kdistill.engine.distiller import Distiller
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings
from kdistill.methods import DIST, DKD, METHODS, HardLabel, StepContext, build_method
from kdistill.models import build_model


def _logits(seed: int = 0, batch: int = 5,
            classes: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator) * 2
    teacher = torch.randn(batch, classes, generator=generator) * 3
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, labels


def _softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _dkd_reference(zs, zt, labels, temperature):
    """TCKD and NCKD per the paper (eq. 2-4), one sample at a time."""
    tckd, nckd = 0.0, 0.0
    for s_row, t_row, y in zip(zs.tolist(), zt.tolist(), labels.tolist(), strict=True):
        ps, pt = _softmax(s_row, temperature), _softmax(t_row, temperature)
        bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
        tckd += _kl(bt, bs)
        others_s = [p / (1 - ps[y]) for c, p in enumerate(ps) if c != y]
        others_t = [p / (1 - pt[y]) for c, p in enumerate(pt) if c != y]
        nckd += _kl(others_t, others_s)
    n = len(labels)
    return tckd / n * temperature**2, nckd / n * temperature**2


# DKD ----------------------------------------------------------------------------------------------
def test_dkd_defaults_follow_the_paper():
    method = DKD()
    assert (method.alpha, method.beta, method.temperature) == (1.0, 8.0, 4.0)
    assert method.warmup == pytest.approx(20 / 240) and method.warmup_epochs is None  # mdistiller: 20 of 240
    assert method.needs_labels and method.needs_teacher and method.uses_logits
    assert "2203.08679" in method.reference


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_matches_the_paper_formula(temperature):
    zs, zt, labels = _logits()
    method = DKD(alpha=1.5, beta=8.0, temperature=temperature, warmup=0)
    terms = method(StepContext(zs, labels, [zt]))
    tckd, nckd = _dkd_reference(zs, zt, labels, temperature)
    assert terms["dkd.tckd"].item() == pytest.approx(1.5 * tckd, rel=1e-4)
    assert terms["dkd.nckd"].item() == pytest.approx(8.0 * nckd, rel=1e-4)


def test_dkd_decomposes_classical_kd():
    """The paper's identity: KD = TCKD + (1 - p_t[gt]) * NCKD, sample by sample."""
    zs, zt, labels = _logits(seed=3, batch=1, classes=5)
    temperature = 2.0
    method = DKD(alpha=1.0, beta=1.0, temperature=temperature, warmup=0)
    terms = method(StepContext(zs, labels, [zt]))
    pt = _softmax(zt[0].tolist(), temperature)
    kd = _kl(pt, _softmax(zs[0].tolist(), temperature)) * temperature**2
    y = int(labels[0])
    combined = terms["dkd.tckd"].item() + (1 - pt[y]) * terms["dkd.nckd"].item()
    assert combined == pytest.approx(kd, rel=1e-4)


@pytest.mark.parametrize("options, num_epochs, progress, factor", [
    # a share of the run: 20/240 of 24 epochs is 2 epochs, ramped per step
    ({}, 24, 0.0, 0.0), ({}, 24, 0.5, 0.25), ({}, 24, 1.25, 0.625), ({}, 24, 2.0, 1.0), ({}, 24, 23.9, 1.0),
    ({}, 240, 10.0, 0.5),  # the paper's schedule: half-way through its 20-epoch warm-up
    ({"warmup": 0.5}, 10, 2.5, 0.5),
    # fractional epochs: a warm-up shorter than one epoch still ramps
    ({"warmup_epochs": 0.5}, 6, 0.125, 0.25), ({"warmup_epochs": 0.5}, 6, 0.75, 1.0),
    ({"warmup_epochs": 0}, 6, 0.0, 1.0), ({"warmup": 0}, 6, 0.0, 1.0),
])
def test_dkd_warmup_ramps_per_step_over_a_share_of_the_run(options, num_epochs, progress, factor):
    zs, zt, labels = _logits()
    full = DKD(warmup=0)(StepContext(zs, labels, [zt]))
    ctx = StepContext(zs, labels, [zt], epoch=int(progress), num_epochs=num_epochs, epoch_progress=progress)
    terms = DKD(**options)(ctx)
    for key in ("dkd.tckd", "dkd.nckd"):
        assert terms[key].item() == pytest.approx(factor * full[key].item(), rel=1e-5, abs=1e-9)


def test_dkd_warmup_is_driven_by_the_engine_per_step(digits):
    """Inside fit(), the factor grows within the first epoch (the engine passes per-step progress)."""
    bundle, _, _ = digits
    teacher = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})  # the factor does not depend on its quality
    seen = []

    class Recording(DKD):
        def warmup_factor(self, ctx):
            value = super().warmup_factor(ctx)
            seen.append((ctx.epoch, value))
            return value

    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    Distiller(teacher, student, [HardLabel(), Recording(warmup=0.5)], batch_size=256, progress=False,
              student_normalization=(bundle.mean, bundle.std),
              teacher_normalization=(bundle.mean, bundle.std)).fit(bundle.train, epochs=2)
    first_epoch = [v for e, v in seen if e == 0]
    assert len(set(first_epoch)) > 3 and first_epoch == sorted(first_epoch)  # ramps within the epoch
    assert [v for e, v in seen if e == 1][-1] == 1.0


def test_dkd_is_stable_for_extreme_logits_and_has_gradients():
    zs = torch.tensor([[60.0, -60.0, 0.0], [0.0, 0.0, 90.0]], requires_grad=True)
    zt = torch.tensor([[-50.0, 50.0, 0.0], [80.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    terms = DKD(warmup=0)(StepContext(zs, labels, [zt]))
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all() and zs.grad.abs().sum() > 0


def test_dkd_without_labels_is_a_clear_error():
    zs, zt, _ = _logits()
    with pytest.raises(RuntimeError, match="dkd needs labels"):
        DKD()(StepContext(zs, None, [zt]))


@pytest.mark.parametrize("options, key", [
    ({"temperature": 0}, "temperature"),
    ({"alpha": -1}, "alpha"),
    ({"beta": -0.5}, "beta"),
    ({"warmup_epochs": -1}, "warmup_epochs"),
    ({"warmup_epochs": "2"}, "warmup_epochs"),
    ({"warmup": 1.5}, "warmup"),
])
def test_dkd_validation(options, key):
    with pytest.raises(ValueError, match=rf"^{key}: must be"):
        build_method("dkd", options)


# DIST ---------------------------------------------------------------------------------------------
def _dist_reference(zs, zt, temperature):
    ys = np.array([_softmax(r, temperature) for r in zs.tolist()])
    yt = np.array([_softmax(r, temperature) for r in zt.tolist()])
    inter = 1 - np.mean([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(len(ys))])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(ys.shape[1])])
    return temperature**2 * inter, temperature**2 * intra


def test_dist_defaults_follow_the_paper():
    method = DIST()
    assert (method.beta, method.gamma, method.temperature) == (1.0, 1.0, 1.0)
    assert "2205.10536" in method.reference


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_matches_pearson_correlations(temperature):
    zs, zt, _ = _logits(seed=1, batch=6, classes=5)
    terms = DIST(beta=2.0, gamma=0.5, temperature=temperature)(StepContext(zs, None, [zt]))
    inter, intra = _dist_reference(zs, zt, temperature)
    assert terms["dist.inter"].item() == pytest.approx(2.0 * inter, rel=1e-4, abs=1e-6)
    assert terms["dist.intra"].item() == pytest.approx(0.5 * intra, rel=1e-4, abs=1e-6)


def test_dist_is_zero_at_the_teacher_and_positive_elsewhere():
    zs, zt, _ = _logits(seed=2)
    same = DIST()(StepContext(zt.clone(), None, [zt]))
    assert all(abs(v.item()) < 1e-5 for v in same.values())
    differs = DIST()(StepContext(zs, None, [zt]))
    assert all(v.item() > 1e-3 for v in differs.values())


def test_dist_gradient_reaches_student_logits():
    zs, zt, _ = _logits(seed=4)
    zs.requires_grad_(True)
    sum(DIST()(StepContext(zs, None, [zt])).values()).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0


@pytest.mark.parametrize("options, key", [({"temperature": -1}, "temperature"), ({"beta": -1}, "beta"),
                                          ({"gamma": -2}, "gamma")])
def test_dist_validation(options, key):
    with pytest.raises(ValueError, match=rf"^{key}: must be"):
        build_method("dist", options)


# registry and a real step -------------------------------------------------------------------------
def test_registered():
    assert METHODS.get("dkd") is DKD and METHODS.get("dist") is DIST


@pytest.mark.parametrize("method", [DKD(warmup=0), DIST(temperature=4.0)])
def test_one_distiller_step_trains_the_student_only(method):
    torch.manual_seed(0)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": (8, 16)})
    student = build_model("cnn", 10, (1, 8, 8), {"channels": (4, 8)})
    data = InMemoryDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    distiller = Distiller(teacher, student, [method], optimizer=OptimizerSettings(lr=0.1, momentum=0.0,
                          weight_decay=0.0), schedule=ScheduleSettings(name="constant"), batch_size=16,
                          device="cpu", progress=False)
    loader = distiller.make_loader(data, train=True)
    distiller._build(loader, 1)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.named_parameters()}
    terms, _, _ = distiller.train_step(next(iter(loader)), 0, 1)
    assert torch.isfinite(terms["loss"])
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    changed = [k for k, p in student.named_parameters() if not torch.equal(p, student_before[k])]
    assert "head.weight" in changed and any(k.startswith("features.0") for k in changed)
