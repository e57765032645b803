"""Strategies: multi-teacher aggregation by hand, born-again generations, mutual learning, teacher-assistant
chains, resume of multi-stage runs, and transfer from a teacher trained on other classes."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import StopAtStep

from kdistill import Distiller, OptimizerSettings, TrainingInterrupted
from kdistill.data import InMemoryDataset
from kdistill.methods import METHODS, RKD, HardLabel, Hint, Method, SoftTarget, StepContext, build_method
from kdistill.methods.logits import softened_kl
from kdistill.models import build_model
from kdistill.strategies import (
    AGGREGATORS,
    Cohort,
    ConfidenceAggregator,
    MeanAggregator,
    MutualLearning,
    WeightedAggregator,
    born_again,
    build_aggregator,
    check_label_spaces,
    check_teachers,
    ensemble_logits,
    evaluate_ensemble,
    teacher_assistant_chain,
    weights_digest,
)
from kdistill.taps import LayerTaps

OPT = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# hand-computed references -----------------------------------------------------------------------------
def softmax_list(row: list[float], t: float = 1.0) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


Z1 = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
Z2 = [[3.0, 1.0, 0.0], [2.0, -1.0, 0.5]]
Z3 = [[0.5, 0.5, 4.0], [-1.0, 3.0, 0.0]]


def teachers(*rows):
    return [torch.tensor(r) for r in rows]


def mixture_by_hand(rows: list[list[list[float]]], weights: list[list[float]], t: float) -> list[list[float]]:
    """weights[b][i]: sample b's weight of teacher i; the mixed distribution of each sample."""
    out = []
    for b in range(len(rows[0])):
        probs = [softmax_list(rows[i][b], t) for i in range(len(rows))]
        out.append([sum(weights[b][i] * probs[i][c] for i in range(len(rows))) for c in range(len(probs[0]))])
    return out


def test_mean_aggregation_is_the_mixture_at_the_temperature():
    t = 2.0
    x = MeanAggregator(temperature=t)(teachers(Z1, Z2), None)
    expected = mixture_by_hand([Z1, Z2], [[0.5, 0.5]] * 2, t)
    # softmax(x / T) is the mean of the teachers' softened distributions ...
    assert torch.allclose(F.softmax(x / t, dim=1), torch.tensor(expected), atol=1e-6)
    # ... and x itself is T * log(mean), element by element
    assert torch.allclose(x, t * torch.tensor(expected).log(), atol=1e-5)
    # so SoftTarget at the same T computes KL(mixture || student) * T^2
    student = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.0, -1.0]])
    by_hand = 0.0
    for b in range(2):
        ps = softmax_list(student[b].tolist(), t)
        by_hand += sum(q * (math.log(q) - math.log(p)) for q, p in zip(expected[b], ps, strict=True))
    assert softened_kl(student, x, t).item() == pytest.approx(by_hand / 2 * t * t, rel=1e-5)


def test_weighted_aggregation_normalises_and_validates():
    t = 1.0
    x = WeightedAggregator([1, 3], temperature=t)(teachers(Z1, Z2), None)
    expected = mixture_by_hand([Z1, Z2], [[0.25, 0.75]] * 2, t)
    assert torch.allclose(F.softmax(x / t, dim=1), torch.tensor(expected), atol=1e-6)
    # a zero weight drops a teacher exactly
    only_second = WeightedAggregator([0, 2], temperature=3.0)(teachers(Z1, Z2), None)
    assert torch.allclose(F.softmax(only_second / 3.0, dim=1), F.softmax(torch.tensor(Z2) / 3.0, dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="2 weights for 3 teachers"):
        WeightedAggregator([1, 1])(teachers(Z1, Z2, Z3), None)
    with pytest.raises(ValueError, match="2 weights for 3 teachers"):
        WeightedAggregator([1, 1], num_teachers=3)
    with pytest.raises(ValueError, match=">= 0"):
        WeightedAggregator([1, -1])
    with pytest.raises(ValueError, match="all be zero"):
        WeightedAggregator([0, 0])


def test_confidence_aggregation_follows_ca_mkd():
    t = 4.0
    labels = [2, 1]
    rows = [Z1, Z2, Z3]
    k = len(rows)
    weights = []
    for b, y in enumerate(labels):
        ce = [-math.log(softmax_list(rows[i][b])[y]) for i in range(k)]  # CE with the label at T = 1
        soft = softmax_list(ce)
        weights.append([(1 - s) / (k - 1) for s in soft])
    x = ConfidenceAggregator(temperature=t)(teachers(*rows), torch.tensor(labels))
    expected = mixture_by_hand(rows, weights, t)
    assert torch.allclose(F.softmax(x / t, dim=1), torch.tensor(expected), atol=1e-6)
    # the teacher most confident in the right class weighs most (sample 0: Z3, sample 1: Z3)
    assert max(range(k), key=lambda i: weights[0][i]) == 2 and max(range(k), key=lambda i: weights[1][i]) == 2
    # without labels: each teacher's prediction entropy replaces the cross-entropy
    entropy_weights = []
    for b in range(2):
        ent = [-sum(p * math.log(p) for p in softmax_list(rows[i][b])) for i in range(k)]
        entropy_weights.append([(1 - s) / (k - 1) for s in softmax_list(ent)])
    unlabelled = ConfidenceAggregator(temperature=t)(teachers(*rows), None)
    assert torch.allclose(F.softmax(unlabelled / t, dim=1), torch.tensor(mixture_by_hand(rows, entropy_weights, t)),
                          atol=1e-6)


def test_aggregator_registry_and_config_errors():
    assert {"mean", "weighted", "confidence"} <= set(AGGREGATORS)
    agg = build_aggregator("weighted", {"weights": [1, 1], "temperature": 4})
    assert isinstance(agg, WeightedAggregator) and agg.temperature == 4
    with pytest.raises(ValueError, match="bad options"):
        build_aggregator("mean", {"temprature": 4})
    with pytest.raises(ValueError, match="temperature"):
        MeanAggregator(temperature=0)


def test_check_teachers_names_the_mismatched_teacher():
    torch.manual_seed(0)
    good = build_model("mlp", 10, (1, 8, 8), {"hidden": [8]})
    bad = build_model("cnn", 7, (1, 8, 8), {"channels": [4]})
    assert check_teachers([good, good], 10, (1, 8, 8)) == [10, 10]
    with pytest.raises(ValueError, match="teacher 1 .*predicts 7 classes, but the data has 10"):
        check_teachers([good, bad], 10, (1, 8, 8))


class Recorder(Method):
    """Keeps what the loop handed the methods on its training steps (no loss)."""

    name = "recorder"
    needs_teacher = False

    def __init__(self, keep: int = 1) -> None:
        super().__init__(weight=0.0)
        self.keep = keep
        self.seen: list[dict[str, torch.Tensor]] = []

    def loss_terms(self, ctx):
        if torch.is_grad_enabled() and len(self.seen) < self.keep:
            self.seen.append({"indices": ctx.indices.clone(), "teacher_logits": [t.clone() for t in ctx.teacher_logits],
                              "student": ctx.student_logits.detach().clone()})
        return ctx.student_logits.sum() * 0


def test_aggregated_ensemble_in_the_loop(digits):
    bundle, train, _ = digits
    torch.manual_seed(1)
    ensemble = [build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}) for _ in range(3)]
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    recorder = Recorder()
    norm = (bundle.mean, bundle.std)
    distiller = Distiller(ensemble, student, [SoftTarget(temperature=4.0), HardLabel(weight=0.1), recorder],
                          optimizer=OPT, batch_size=64, progress=False, device="cpu", student_normalization=norm,
                          teacher_normalization=norm, teacher_aggregator=MeanAggregator(temperature=4.0))
    distiller.fit(train, epochs=1)
    seen = recorder.seen[0]
    aggregated, individual = seen["teacher_logits"][0], seen["teacher_logits"][1:]
    assert len(individual) == 3
    mean_probs = torch.stack([F.softmax(z / 4.0, dim=1) for z in individual]).mean(0)
    assert torch.allclose(F.softmax(aggregated / 4.0, dim=1), mean_probs, atol=1e-6)


# born-again ---------------------------------------------------------------------------------------------
def tiny_mlp(hidden=(32,), classes=10):
    return lambda: build_model("mlp", classes, (1, 8, 8), {"hidden": list(hidden)})


def distiller_kwargs(bundle, seed=0):
    norm = (bundle.mean, bundle.std)
    return {"optimizer": OPT, "batch_size": 64, "seed": seed, "progress": False, "device": "cpu",
            "student_normalization": norm}


def test_born_again_generation_k_plus_1_learns_from_generation_k(digits, tmp_path):
    bundle, train, val = digits
    recorders: dict[int, Recorder] = {}

    def methods(index, has_teacher):
        recorders[index] = Recorder(keep=3)
        base = [SoftTarget(weight=0.9, temperature=2.0), HardLabel(weight=0.1)] if has_teacher else [HardLabel()]
        return [*base, recorders[index]]

    result = born_again(tiny_mlp(), train, val, generations=3, run_dir=tmp_path / "ban", epochs=2,
                        methods_factory=methods, distiller_kwargs=distiller_kwargs(bundle))
    assert len(result.generations) == 3
    assert result.teacher_of == [None, "generation-1", "generation-2"]
    for k in (1, 2, 3):
        folder = tmp_path / "ban" / f"generation-{k}"
        assert (folder / "checkpoints" / "last.pt").exists() and (folder / "student.pt").exists()
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
        record = json.loads((folder / "stage.json").read_text())
        assert record["teacher"] == (None if k == 1 else f"generation-{k - 1}")
    assert not recorders[0].seen[0]["teacher_logits"]  # generation 1: labels only
    assert "train/soft_target" in result.stages[1].history[-1]

    mean, std = torch.tensor(bundle.mean).view(1, -1, 1, 1), torch.tensor(bundle.std).view(1, -1, 1, 1)
    for k in (1, 2):  # generation k+1 was taught by generation k, as saved on disk
        teacher = tiny_mlp()()
        saved = torch.load(tmp_path / "ban" / f"generation-{k}" / "student.pt", weights_only=True)
        teacher.load_state_dict(saved)
        teacher.eval()
        record = json.loads((tmp_path / "ban" / f"generation-{k + 1}" / "stage.json").read_text())
        assert record["teacher_weights"] == weights_digest(teacher)
        for step in recorders[k].seen:
            inputs = (train.inputs[step["indices"]].float() - mean) / std
            with torch.no_grad():
                expected = teacher(inputs)
            assert torch.allclose(step["teacher_logits"][0], expected, atol=1e-5)
            # and the soft-target term of that step is the KL to the saved generation's outputs
            used = softened_kl(step["student"], step["teacher_logits"][0], 2.0)
            assert used.item() == pytest.approx(softened_kl(step["student"], expected, 2.0).item(), rel=1e-5)
        # not some other model: the next generation's own outputs differ from its teacher's
        nxt = result.generations[k]
        with torch.no_grad():
            assert not torch.allclose(nxt(inputs), expected, atol=1e-3)
    # generations start from different initialisations
    assert not torch.equal(result.generations[0].head.weight, result.generations[1].head.weight)

    # the ensemble of generations is the mean of their probabilities
    log_probs, labels = ensemble_logits(result.generations, val, (bundle.mean, bundle.std))
    inputs = (val.inputs.float() - mean) / std
    with torch.no_grad():
        probs = torch.stack([F.softmax(g(inputs), dim=1) for g in result.generations]).mean(0)
    assert torch.allclose(log_probs.exp(), probs, atol=1e-5)
    assert torch.equal(labels, val.labels)
    scores = evaluate_ensemble(result.generations, val, (bundle.mean, bundle.std))
    assert scores["acc"] == pytest.approx(float((probs.argmax(1) == val.labels).float().mean()))
    assert scores["acc"] > 0.5


def test_born_again_resumes_in_the_middle_of_generation_2(digits, tmp_path):
    bundle, train, val = digits
    epochs = 2  # 17 steps an epoch: stop in generation 2's second epoch

    def run(run_dir, stop_at=None, resume=False, trained=None):
        ref: list = [None]

        def methods(index, has_teacher):
            base = [SoftTarget(weight=0.9, temperature=2.0), HardLabel(weight=0.1)] if has_teacher else [HardLabel()]
            return [*base, StopAtStep(ref, stop_at if (stop_at and index == 1) else 10**9)]

        def callback(name, distiller):
            ref[0] = distiller
            if trained is not None:
                trained.append(name)

        return born_again(tiny_mlp(), train, val, generations=3, run_dir=run_dir, epochs=epochs,
                          methods_factory=methods, distiller_kwargs=distiller_kwargs(bundle), resume=resume,
                          callback=callback)

    reference = run(tmp_path / "reference")

    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "run", stop_at=20)
    gen1 = tmp_path / "run" / "generation-1"
    assert (gen1 / "student.pt").exists()
    assert (tmp_path / "run" / "generation-2" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "run" / "generation-2" / "student.pt").exists()
    assert not (tmp_path / "run" / "generation-3").exists()
    before = (gen1 / "student.pt").read_bytes(), (gen1 / "metrics.jsonl").read_text()

    with pytest.raises(FileExistsError, match="resume=True"):
        run(tmp_path / "run")  # never overwritten silently

    trained: list[str] = []
    resumed = run(tmp_path / "run", resume=True, trained=trained)
    assert trained == ["generation-2", "generation-3"]  # generation 1 was loaded, not retrained
    assert [s.trained for s in resumed.stages] == [False, True, True]
    assert ((gen1 / "student.pt").read_bytes(), (gen1 / "metrics.jsonl").read_text()) == before
    assert [r["epoch"] for r in resumed.stages[1].history] == [1, 2]
    for k, (a, b) in enumerate(zip(reference.generations, resumed.generations, strict=True)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), f"generation {k + 1}: {name} differs after resume"
    assert resumed.stages[2].history[-1]["val/acc"] == reference.stages[2].history[-1]["val/acc"]

    # a finished run resumes to the same models without training anything
    again: list[str] = []
    loaded = run(tmp_path / "run", resume=True, trained=again)
    assert again == [] and all(not s.trained for s in loaded.stages)
    assert torch.equal(loaded.generations[2].head.weight, reference.generations[2].head.weight)


# teacher-assistant chains ------------------------------------------------------------------------------------
def test_teacher_assistant_chain_stages_and_records(digits, tmp_path):
    bundle, train, val = digits
    kwargs = distiller_kwargs(bundle)
    torch.manual_seed(3)
    teacher = tiny_mlp((64,))()
    Distiller(None, teacher, [HardLabel()], **kwargs).fit(train, epochs=3)
    teacher.eval()
    result = teacher_assistant_chain(teacher, [tiny_mlp((32,))], tiny_mlp((16,)), train, val,
                                     run_dir=tmp_path / "takd", epochs=[2, 2],
                                     teacher_normalization=(bundle.mean, bundle.std), distiller_kwargs=kwargs)
    assert result.teacher_of == ["teacher", "assistant-1"]
    assert [s.name for s in result.stages] == ["assistant-1", "student"]
    assert result.student.hidden[0][0].out_features == 16 and result.assistants[0].hidden[0][0].out_features == 32
    records = {n: json.loads((tmp_path / "takd" / n / "stage.json").read_text()) for n in ("assistant-1", "student")}
    assert records["assistant-1"]["teacher_weights"] == weights_digest(teacher)
    assert records["student"]["teacher_weights"] == weights_digest(result.assistants[0])
    assert len(result.stages[1].history) == 2 and result.stages[1].history[-1]["val/acc"] > 0.3

    again = teacher_assistant_chain(teacher, [tiny_mlp((32,))], tiny_mlp((16,)), train, val,
                                    run_dir=tmp_path / "takd", epochs=[2, 2],
                                    teacher_normalization=(bundle.mean, bundle.std), distiller_kwargs=kwargs,
                                    resume=True)
    assert [s.trained for s in again.stages] == [False, False]
    assert torch.equal(again.student.head.weight, result.student.head.weight)
    # a finished stage is not reused against another set-up
    with pytest.raises(ValueError, match="epochs"):
        teacher_assistant_chain(teacher, [tiny_mlp((32,))], tiny_mlp((16,)), train, val, run_dir=tmp_path / "takd",
                                epochs=[2, 3], teacher_normalization=(bundle.mean, bundle.std),
                                distiller_kwargs=kwargs, resume=True)
    other_teacher = tiny_mlp((64,))()
    with pytest.raises(ValueError, match="teacher_weights"):
        teacher_assistant_chain(other_teacher, [tiny_mlp((32,))], tiny_mlp((16,)), train, val,
                                run_dir=tmp_path / "takd", epochs=[2, 2], distiller_kwargs=kwargs, resume=True,
                                teacher_normalization=(bundle.mean, bundle.std))
    with pytest.raises(ValueError, match="set by the strategy"):
        teacher_assistant_chain(teacher, [], tiny_mlp((16,)), train, run_dir=tmp_path / "x",
                                distiller_kwargs={**kwargs, "teacher_normalization": None})


# mutual learning ---------------------------------------------------------------------------------------------
def test_mutual_learning_gradients_are_each_peers_own_loss(digits):
    _, train, _ = digits
    torch.manual_seed(0)
    peers = [build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}) for _ in range(3)]
    cohort = Cohort(peers)
    method = MutualLearning(peers=3, temperature=2.0, kl_weight=0.7, ce_weight=1.0)
    x, y = train.inputs[:32].float(), train.labels[:32]
    with LayerTaps(cohort, method.student_taps(), "student") as taps:
        out = cohort(x)
        ctx = StepContext(out, y, student_features=taps.collect())
    terms = method(ctx)
    assert sorted(terms) == sorted(f"mutual.{k}{p}" for p in range(3) for k in ("ce", "kl"))
    sum(terms.values()).backward()
    assert torch.equal(out, peers[0](x))  # the cohort reports peer 0 ...
    with torch.no_grad():  # ... or, as an ensemble, the log of the mean of the peers' probabilities
        mean_probs = torch.stack([F.softmax(p(x), dim=1) for p in peers]).mean(0)
        assert torch.allclose(Cohort(peers, output="mean")(x).exp(), mean_probs, atol=1e-6)
        assert Cohort(peers).peer_logits(x).shape == (3, 32, 10)

    def by_hand(k, detach=True):
        z = [p(x) for p in peers]
        t = 2.0
        log_pk = F.log_softmax(z[k] / t, dim=1)
        kl = 0
        for j in range(3):
            if j != k:
                pj = F.softmax((z[j].detach() if detach else z[j]) / t, dim=1)
                kl = kl + (pj * (pj.log() - log_pk)).sum(1).mean() * t * t
        return F.cross_entropy(z[k], y) + 0.7 * kl / 2

    for k, peer in enumerate(peers):
        expected = torch.autograd.grad(by_hand(k), list(peer.parameters()))
        for p, g in zip(peer.parameters(), expected, strict=True):
            assert torch.allclose(p.grad, g, atol=1e-6), f"peer {k}"
    # with the others not detached, peer 0 would also be pushed by the other peers' KL terms
    total = sum(by_hand(k, detach=False) for k in range(3))
    leaky = torch.autograd.grad(total, list(peers[0].parameters()))
    assert not all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(peers[0].parameters(), leaky, strict=True))


def test_mutual_learning_trains_every_peer_in_the_one_loop(digits):
    bundle, train, val = digits
    torch.manual_seed(0)
    cohort = Cohort([build_model("mlp", 10, (1, 8, 8), {"hidden": [32]}) for _ in range(2)])
    before = [{k: v.clone() for k, v in p.state_dict().items()} for p in cohort.peers]
    method = build_method("mutual", {"peers": 2})
    assert isinstance(method, MutualLearning) and METHODS.get("dml") is MutualLearning
    distiller = Distiller(None, cohort, [method], progress=False, device="cpu", optimizer=OPT, batch_size=64,
                          student_normalization=(bundle.mean, bundle.std))
    history = distiller.fit(train, val, epochs=2)
    for k, peer in enumerate(cohort.peers):
        for name, value in peer.state_dict().items():
            assert not torch.equal(value, before[k][name]), f"peer {k} {name} did not change"
    for key in ("train/mutual.ce0", "train/mutual.kl0", "train/mutual.ce1", "train/mutual.kl1"):
        assert math.isfinite(history[-1][key])
    assert history[-1]["train/mutual.kl0"] > 0
    assert history[-1]["val/acc"] > 0.6
    assert all(not p._forward_hooks for p in cohort.peers)  # taps removed after training
    with pytest.raises(ValueError, match="at least 2 peers"):
        Cohort([cohort.peers[0]])


# transfer to a related task -----------------------------------------------------------------------------------
def test_feature_transfer_from_a_teacher_with_other_classes(digits):
    bundle, train, val = digits
    norm = (bundle.mean, bundle.std)
    keep = train.labels < 7
    seven = InMemoryDataset(train.inputs[keep], train.labels[keep])
    torch.manual_seed(5)
    teacher = build_model("mlp", 7, (1, 8, 8), {"hidden": [48]})
    Distiller(None, teacher, [HardLabel()], optimizer=OPT, batch_size=64, progress=False, device="cpu",
              student_normalization=norm).fit(seven, epochs=2)
    assert check_teachers(teacher, 7, (1, 8, 8)) == [7]

    methods = [HardLabel(), Hint("hidden.0", "hidden.0", weight=1.0), RKD("hidden.0", "hidden.0")]
    check_label_spaces(methods, 7, 10)  # feature methods: fine
    with pytest.raises(ValueError, match=r"\['soft_target'\] compare logits.*teacher 0: 7 classes; data: 10.*hint"):
        check_label_spaces([SoftTarget(), HardLabel()], 7, 10)
    with pytest.raises(ValueError, match="teacher 1: 7 classes"):
        check_label_spaces([SoftTarget()], [10, 7], 10)
    check_label_spaces([SoftTarget()], [10, 10], 10)

    torch.manual_seed(6)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    distiller = Distiller(teacher, student, methods, optimizer=OPT, batch_size=64, progress=False, device="cpu",
                          student_normalization=norm, teacher_normalization=norm)
    history = distiller.fit(train, val, epochs=3)
    for key in ("train/hint", "train/rkd.distance", "train/rkd.angle"):
        assert math.isfinite(history[-1][key])
    assert history[-1]["train/hint"] < history[0]["train/hint"]
    assert history[-1]["val/acc"] > 0.6
