"""A Distiller run is the hand-written distillation loop, step for step (issue 8): Hinton's MNIST
recipe, the CIFAR-10 benchmarks' recipe, and a feature method read through hooks.

Issue 8 measures kdistill against "a plain-PyTorch reference" (benchmarks/hinton_reference.py);
on seeds the two can only be compared within noise. Here they are compared exactly: the same
initial weights, the same batches (one DataLoader generator seed), Hinton's loss typed in by hand,
Adam with a per-step linear warm-up and cosine, the last partial batch dropped. Any difference in
the loss, its temperature scaling, the teacher's mode, the order of zero_grad / step / schedule or
the warm-up's first step shows as different weights after three epochs."""

from __future__ import annotations

import copy
import hashlib
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data.base import InMemoryDataset
from kdistill.engine.sampler import EpochBatchSampler
from kdistill.methods import AttentionTransfer, HardLabel, SoftTarget
from kdistill.settings import CacheSettings

TEMPERATURE, SOFT, LR, WARMUP, BATCH, EPOCHS, LOADER_SEED = 20.0, 0.9, 1e-3, 20, 32, 3, 5


class _Samples(TensorDataset):
    """(pixels, label, index); fingerprint() is what the teacher cache asks a data set for."""

    def fingerprint(self) -> str:
        return hashlib.sha256(self.tensors[0].numpy().tobytes() + self.tensors[1].numpy().tobytes()).hexdigest()


def _data(digits) -> _Samples:
    _, train, _ = digits
    x = train.inputs.float().flatten(1)
    x = x / x.max()  # pixels in [0, 1], no normalisation: the Hinton recipe's inputs
    return _Samples(x, train.labels, torch.arange(len(x)))  # indices: the teacher cache's key


def _loader(data: TensorDataset, setting: str) -> DataLoader:
    """The user's loader, seeded; with persistent workers, or sharded by torch's DistributedSampler."""
    if setting == "DistributedSampler":  # one replica: the order changes only if someone calls set_epoch
        sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=LOADER_SEED)
        return DataLoader(data, batch_size=BATCH, sampler=sampler, drop_last=True)
    workers = {"num_workers": 1, "persistent_workers": True} if setting == "persistent workers" else {}
    return DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(LOADER_SEED), **workers)


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)  # the teacher keeps dropout: both loops must read it in eval mode
    teacher = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.5), nn.Linear(48, 10))
    with torch.no_grad():
        teacher[-1].weight.mul_(8)  # confident enough that T = 20 still leaves a signal
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    return teacher, student


def _hand_loop(teacher: nn.Module, student: nn.Module, epochs: list, warmup_offset: int = 0) -> nn.Module:
    """Hinton's recipe in plain PyTorch over `epochs`, each a list of (x, y) batches; the warm-up
    multiplies the lr by (step + offset) / WARMUP."""
    total = sum(len(batches) for batches in epochs)
    optimizer = torch.optim.Adam(student.parameters(), lr=LR)

    def factor(step: int) -> float:
        if step < WARMUP:
            return (step + warmup_offset) / WARMUP
        return 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (total - WARMUP)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    teacher.eval()
    for batches in epochs:
        student.train()
        for x, y in batches:
            with torch.no_grad():
                soft_targets = F.softmax(teacher(x) / TEMPERATURE, dim=1)
            logits = student(x)
            kl = (soft_targets * (soft_targets.log() - F.log_softmax(logits / TEMPERATURE, dim=1))).sum(1).mean()
            loss = SOFT * TEMPERATURE**2 * kl + (1 - SOFT) * F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return student


def _user_loader_epochs(data: TensorDataset, setting: str) -> list:
    """The batches a user's own loop gets from the loader, epoch by epoch (torch's documented
    DistributedSampler use: set_epoch before each epoch)."""
    loader, epochs = _loader(data, setting), []
    for epoch in range(EPOCHS):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        epochs.append([(x, y) for x, y, _ in loader])
    return epochs


@pytest.mark.parametrize("setting", ["live teacher", "float32 teacher cache", "persistent workers",
                                     "DistributedSampler"])
def test_a_distiller_run_equals_the_hand_written_loop(digits, tmp_path, setting):
    data = _data(digits)
    teacher, student = _models()
    start = copy.deepcopy(student.state_dict())
    cached = setting == "float32 teacher cache"
    ours_teacher = copy.deepcopy(teacher).train()  # left as a user might: the engine must switch it
    teacher_calls = []
    ours_teacher.register_forward_hook(lambda *_: teacher_calls.append(1))
    distiller = Distiller(ours_teacher, student, [SoftTarget(weight=SOFT, temperature=TEMPERATURE),
                                                  HardLabel(weight=1 - SOFT)],
                          optimizer=OptimizerSettings(name="adam", lr=LR),
                          schedule=ScheduleSettings(name="cosine", warmup_steps=WARMUP), progress=False,
                          teacher_cache=CacheSettings(tmp_path / "cache", dtype="float32") if cached else None)
    distiller.fit(_loader(data, setting), epochs=EPOCHS)
    ours = distiller.student.model.state_dict()
    steps = EPOCHS * (len(data) // BATCH)
    # the cached run reads the teacher's logits from the cache: the teacher ran once per cache batch only
    assert len(teacher_calls) < 10 if cached else len(teacher_calls) >= steps

    by_hand = copy.deepcopy(student)
    by_hand.load_state_dict(start)
    by_hand = _hand_loop(copy.deepcopy(teacher), by_hand, _user_loader_epochs(data, setting)).state_dict()
    assert not torch.equal(ours["2.weight"], start["2.weight"])  # it trained
    for name, value in by_hand.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-5, atol=5e-6, msg=name)

    # the comparison can fail: a warm-up that starts one step later moves the weights beyond the tolerance
    shifted = copy.deepcopy(student)
    shifted.load_state_dict(start)
    shifted = _hand_loop(copy.deepcopy(teacher), shifted, _user_loader_epochs(data, setting),
                         warmup_offset=1).state_dict()
    assert max((shifted[name] - by_hand[name]).abs().max().item() for name in by_hand) > 1e-4


def test_the_benchmarks_path_equals_the_hand_written_loop(digits):
    """hinton_mnist.py's path: uint8 images in kdistill's own data set and sampler (drop_last), turned
    into [0, 1] floats by the engine. The hand loop takes the sampler's batches (their order is the
    sampler's, tested in test_augment_randomness.py and the resume tests) and divides by 255 itself."""
    _, train, _ = digits
    images = (train.inputs * 255).round().to(torch.uint8)
    dataset = InMemoryDataset(images, train.labels)
    teacher, student = (nn.Sequential(nn.Flatten(), model) for model in _models())  # images in
    start = copy.deepcopy(student.state_dict())
    distiller = Distiller(copy.deepcopy(teacher), student, [SoftTarget(weight=SOFT, temperature=TEMPERATURE),
                                                            HardLabel(weight=1 - SOFT)],
                          optimizer=OptimizerSettings(name="adam", lr=LR),
                          schedule=ScheduleSettings(name="cosine", warmup_steps=WARMUP),
                          batch_size=BATCH, drop_last=True, seed=4, progress=False)
    distiller.fit(dataset, epochs=EPOCHS)
    ours = distiller.student.model.state_dict()

    sampler = EpochBatchSampler(len(dataset), BATCH, shuffle=True, seed=4, drop_last=True)
    epochs = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        epochs.append([(images[index].float() / 255, train.labels[index])
                       for index in map(torch.as_tensor, sampler)])
    assert all(len(batch[1]) == BATCH for batches in epochs for batch in batches)  # the partial one dropped
    by_hand = copy.deepcopy(student)
    by_hand.load_state_dict(start)
    by_hand = _hand_loop(copy.deepcopy(teacher), by_hand, epochs).state_dict()
    for name, value in by_hand.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-5, atol=5e-6, msg=name)


def _cnn(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * channels, 10))


def test_the_cifar_recipe_equals_the_hand_written_loop(digits):
    """The CIFAR-10 benchmarks' recipe (mdistiller's shape): CNNs with BatchNorm, SGD with momentum
    and weight decay on every parameter, a per-epoch step decay, CE 1 + KD 1 at T = 4. BatchNorm is
    where a loop can quietly differ: the teacher's running statistics must be used (eval mode) and
    left untouched, the student's updated once per step."""
    data = _data(digits)
    torch.manual_seed(2)
    teacher = _cnn(16)
    with torch.no_grad():  # running statistics unlike any batch's, so a teacher in train mode shows
        for module in teacher.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    torch.manual_seed(3)
    student = _cnn(8)
    start = copy.deepcopy(student.state_dict())
    teacher_start = copy.deepcopy(teacher.state_dict())

    distiller = Distiller(copy.deepcopy(teacher), student, [SoftTarget(weight=1.0, temperature=4.0),
                                                            HardLabel(weight=1.0)],
                          optimizer=OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                          schedule=ScheduleSettings(name="multistep", milestones=[2], gamma=0.1), progress=False)
    distiller.fit(_loader(data, "live teacher"), epochs=EPOCHS)
    ours = distiller.student.model.state_dict()
    for name, value in distiller.teachers[0].model.state_dict().items():
        assert torch.equal(value, teacher_start[name]), f"the teacher's {name} changed"

    by_hand = copy.deepcopy(student)
    by_hand.load_state_dict(start)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.1)
    teacher.eval()
    loader = _loader(data, "live teacher")
    for _ in range(EPOCHS):
        by_hand.train()
        for x, y, _ in loader:
            with torch.no_grad():
                soft_targets = F.softmax(teacher(x) / 4, dim=1)
            logits = by_hand(x)
            kl = F.kl_div(F.log_softmax(logits / 4, dim=1), soft_targets, reduction="batchmean")
            loss = 16 * kl + F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    for name, value in by_hand.state_dict().items():  # BatchNorm's running statistics and counter too
        torch.testing.assert_close(ours[name], value, rtol=1e-5, atol=5e-6, msg=name)


def test_attention_transfer_through_hooks_equals_a_loop_that_splits_the_forward(digits):
    """The layers a feature method reads are reached by name with hooks, without touching the
    models' forward. The hand loop instead splits each model's forward at the layer (what users of
    other toolkits rewrite their models for) and types in AT's loss: CE + 1000 x mean((Q_s - Q_t)^2),
    Q = L2-normalised mean over channels of A^2 at the ReLU's output. Equal weights mean the hooks
    read the same tensors, in the same modes, and the gradient flows through the student's only."""
    data = _data(digits)
    torch.manual_seed(4)
    teacher = _cnn(16)
    torch.manual_seed(5)
    student = _cnn(8)
    start = copy.deepcopy(student.state_dict())
    distiller = Distiller(copy.deepcopy(teacher), student, [HardLabel(weight=1.0),
                                                            AttentionTransfer(["3"], ["3"], weight=1000.0)],
                          optimizer=OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                          schedule=ScheduleSettings(name="constant"), progress=False)
    distiller.fit(_loader(data, "live teacher"), epochs=EPOCHS)
    ours = distiller.student.model.state_dict()

    def attention(features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)

    by_hand = copy.deepcopy(student)
    by_hand.load_state_dict(start)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    teacher.eval()
    for batches in _user_loader_epochs(data, "live teacher"):
        by_hand.train()
        for x, y in batches:
            with torch.no_grad():
                teacher_map = attention(teacher[:4](x))
            features = by_hand[:4](x)  # Unflatten, Conv, BatchNorm, ReLU: layer "3"'s output
            logits = by_hand[4:](features)
            loss = F.cross_entropy(logits, y) + 1000.0 * (attention(features) - teacher_map).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert not torch.equal(ours["1.weight"], start["1.weight"])
    for name, value in by_hand.state_dict().items():
        torch.testing.assert_close(ours[name], value, rtol=1e-5, atol=5e-6, msg=name)


class _PythonNoise(_Samples):
    """Samples with noise drawn from Python's random module in __getitem__, as many augmentation
    libraries draw: the run must read the loader as the user's loop does, not one batch ahead."""

    def __getitem__(self, index):
        x, y, i = super().__getitem__(index)
        return x + random.gauss(0.0, 0.2), y, i


def test_a_data_set_drawing_pythons_random_state_trains_as_the_hand_written_loop(digits):
    data = _PythonNoise(*_data(digits).tensors)
    _, student = _models()
    start = copy.deepcopy(student.state_dict())

    def loader() -> DataLoader:
        return DataLoader(data, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(LOADER_SEED))

    random.seed(3)
    sgd = OptimizerSettings(name="sgd", lr=0.05, momentum=0.0, weight_decay=0.0)
    Distiller(None, student, [HardLabel()], optimizer=sgd, schedule=ScheduleSettings(name="constant"),
              progress=False).fit(loader(), epochs=2)

    def hand_loop(skip_first: bool) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(student)
        model.load_state_dict(start)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        random.seed(3)
        if skip_first:  # what a separate read of one batch before training did to the draws
            next(iter(loader()))
        batches = loader()
        for _ in range(2):
            for x, y, _ in batches:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
        return model.state_dict()

    ours, by_hand = student.state_dict(), hand_loop(False)
    for name, value in by_hand.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-6, atol=1e-7, msg=name)
    ahead = hand_loop(True)
    assert max((ahead[name] - value).abs().max().item() for name, value in by_hand.items()) > 1e-4


class _TorchNoise(torch.utils.data.Dataset):
    """Features drawn from torch's global generator in __getitem__ (random transforms draw so)."""

    def __init__(self) -> None:
        self.drawn: list[torch.Tensor] = []

    def __len__(self) -> int:
        return 48

    def __getitem__(self, index):
        x = torch.rand(4)
        self.drawn.append(x)
        return x, index % 3


def test_torch_draws_in_a_data_set_go_on_past_the_build_batch_as_in_the_users_loop():
    # each epoch draws from the run's (seed, epoch) seed; epoch 0 from where the build's batch left it
    from kdistill.engine.seed import derive_seed

    data = _TorchNoise()
    Distiller(None, nn.Linear(4, 3), [HardLabel()], seed=0, progress=False,
              device="cpu").fit(DataLoader(data, batch_size=8), epochs=2)
    users = _TorchNoise()
    for epoch in range(2):
        torch.manual_seed(derive_seed(0, epoch))
        list(DataLoader(users, batch_size=8))
    assert torch.equal(torch.stack(data.drawn), torch.stack(users.drawn))
