"""TeacherEnsemble: fixed teachers as one model whose soft targets are their mixture, so the teacher
cache (one teacher's outputs) can hold an ensemble. Checked against hand-computed mixtures, and a
cached ensemble run against the live multi-teacher run with the mean aggregator, step for step."""

from __future__ import annotations

import copy
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdistill import Distiller, OptimizerSettings
from kdistill.digest import model_digest
from kdistill.methods import HardLabel, SoftTarget
from kdistill.settings import CacheSettings
from kdistill.strategies import MeanAggregator, TeacherEnsemble


class _Fixed(nn.Module):
    """A teacher that answers every input with the same logits."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_softmax_of_the_ensemble_is_the_mixture_by_hand():
    # teacher a: softmax([0, ln 3]) = [1/4, 3/4]; teacher b: [1/2, 1/2]
    a, b = _Fixed([0.0, math.log(3.0)]), _Fixed([0.0, 0.0])
    x = torch.zeros(2, 5)
    mean = F.softmax(TeacherEnsemble([a, b])(x), dim=1)
    torch.testing.assert_close(mean, torch.tensor([[0.375, 0.625]] * 2))
    weighted = F.softmax(TeacherEnsemble([a, b], weights=[3, 1])(x), dim=1)  # 3/4 a + 1/4 b
    torch.testing.assert_close(weighted, torch.tensor([[0.3125, 0.6875]] * 2))
    # at T = 2: softmax([0, ln 3] / 2) = [1 / (1 + sqrt 3), sqrt 3 / (1 + sqrt 3)]
    r = math.sqrt(3.0)
    at_two = F.softmax(TeacherEnsemble([a, b], temperature=2.0)(x) / 2.0, dim=1)
    expected = [0.5 * (1 / (1 + r)) + 0.25, 0.5 * (r / (1 + r)) + 0.25]
    torch.testing.assert_close(at_two, torch.tensor([expected] * 2))


@pytest.mark.parametrize("kwargs, message", [
    ({"teachers": []}, "non-empty list"),
    ({"teachers": [_Fixed([0.0, 1.0])], "weights": [1, 2]}, "2 weights for 1 teachers"),
    ({"teachers": [_Fixed([0.0, 1.0]), _Fixed([1.0, 0.0])], "weights": [1, -1]}, ">= 0"),
    ({"teachers": [_Fixed([0.0, 1.0])], "temperature": 0}, "temperature"),
])
def test_bad_ensembles_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TeacherEnsemble(**kwargs)


def test_another_temperature_or_weighting_is_another_teacher_to_the_cache():
    # the cache keys a teacher's outputs by its state-dict digest
    members = [_Fixed([0.0, 1.0]), _Fixed([1.0, 0.0])]
    digests = {model_digest(TeacherEnsemble(members, temperature=t, weights=w))
               for t, w in [(4.0, None), (2.0, None), (4.0, [1, 3])]}
    assert len(digests) == 3
    assert model_digest(TeacherEnsemble(members, temperature=4.0)) == model_digest(TeacherEnsemble(members, 4.0))
    # a saved ensemble loaded into one built at another temperature mixes at the saved one
    loaded = TeacherEnsemble(members, temperature=1.0)
    loaded.load_state_dict(TeacherEnsemble(members, temperature=4.0).state_dict())
    torch.testing.assert_close(loaded(torch.zeros(1, 3)), TeacherEnsemble(members, temperature=4.0)(torch.zeros(1, 3)))


def test_teachers_over_other_classes_are_refused():
    with pytest.raises(ValueError, match="same classes"):
        TeacherEnsemble([_Fixed([0.0, 1.0]), _Fixed([0.0, 1.0, 2.0])])(torch.zeros(1, 3))


def test_a_teacher_list_with_the_cache_names_the_ensemble():
    teachers = [nn.Linear(4, 3), nn.Linear(4, 3)]
    with pytest.raises(ValueError, match="TeacherEnsemble"):
        Distiller(teachers, nn.Linear(4, 3), [SoftTarget()], teacher_cache=CacheSettings("unused"))


class _Samples(TensorDataset):
    def fingerprint(self) -> str:
        return hashlib.sha256(self.tensors[0].numpy().tobytes()).hexdigest()


def test_a_cached_ensemble_trains_as_the_live_teachers_with_the_mean_aggregator(digits, tmp_path):
    _, train, _ = digits
    x = train.inputs.float().flatten(1) / 16
    data = _Samples(x, train.labels, torch.arange(len(x)))
    torch.manual_seed(0)
    teachers = [nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)) for _ in range(3)]
    for teacher in teachers:
        with torch.no_grad():
            teacher[-1].weight.mul_(6)  # confident, and different from each other
    student = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    start = copy.deepcopy(student.state_dict())
    temperature = 4.0

    def run(teacher, **options) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(student)
        model.load_state_dict(start)
        distiller = Distiller(teacher, model, [SoftTarget(weight=0.9, temperature=temperature), HardLabel(weight=0.1)],
                              optimizer=OptimizerSettings(name="adam", lr=1e-3), progress=False, **options)
        distiller.fit(DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(3)),
                      epochs=2)
        return distiller.student.model.state_dict()

    live = run(copy.deepcopy(teachers), teacher_aggregator=MeanAggregator(temperature=temperature))
    ensemble = TeacherEnsemble(copy.deepcopy(teachers), temperature=temperature)
    calls = []
    ensemble.members[0].register_forward_hook(lambda *_: calls.append(1))
    cached = run(ensemble, teacher_cache=CacheSettings(tmp_path / "cache", dtype="float32"))
    steps = 2 * -(-len(data) // 32)
    assert 0 < len(calls) < steps / 2  # the cache was built and read: the members did not run every step
    assert not torch.equal(live["2.weight"], start["2.weight"])
    for name, value in live.items():
        torch.testing.assert_close(cached[name], value, rtol=1e-5, atol=5e-6, msg=name)
    # it can fail: the ensemble of the first two teachers only trains another student
    pair = run(TeacherEnsemble(copy.deepcopy(teachers[:2]), temperature=temperature))
    assert (pair["2.weight"] - live["2.weight"]).abs().max() > 1e-4
