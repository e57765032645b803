"""A user's DataLoader over an IterableDataset (a stream): one with set_epoch is told each epoch, as
Hugging Face's streaming data sets need to reshuffle; one without a length, or one given with the
teacher cache (which keys outputs by sample index), is refused with the fix before any work."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.engine.cache import CacheSettings
from kdistill.engine.interrupt import TrainingInterrupted
from kdistill.errors import BadInput
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

SAMPLES, BATCH = 96, 32


class Stream(IterableDataset):
    """Random digits-shaped samples in an order shuffled by the epoch it was last told."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(SAMPLES, 1, 8, 8, generator=generator)
        self.labels = torch.randint(0, 10, (SAMPLES,), generator=generator)
        self.epoch = -1
        self.iterations: list[int] = []  # the epoch in force at each pass over the stream

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.iterations.append(self.epoch)
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(100 + self.epoch))
        for i in order.tolist():
            yield self.inputs[i], self.labels[i]


class SizedStream(Stream):
    def __len__(self) -> int:
        return SAMPLES


def distiller(run_dir=None, cache=None) -> Distiller:
    torch.manual_seed(0)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    teacher = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]}) if cache else None
    methods = [SoftTarget(weight=0.9), HardLabel(weight=0.1)] if cache else [HardLabel()]
    return Distiller(teacher, student, methods, batch_size=BATCH, progress=False, device="cpu", run_dir=run_dir,
                     teacher_cache=cache)


def test_a_stream_with_set_epoch_is_told_every_epoch():
    stream = SizedStream()
    distiller().fit(DataLoader(stream, batch_size=BATCH), epochs=3)
    # one pass an epoch: epoch 0 goes on from the batch read to build the methods' parts
    assert stream.iterations == [0, 1, 2]


def test_a_stream_without_a_length_is_refused_before_any_work(tmp_path):
    stream = Stream()
    with pytest.raises(BadInput, match=r"Stream is an IterableDataset without __len__.*give the data set a __len__"):
        distiller(tmp_path / "run").fit(DataLoader(stream, batch_size=BATCH), epochs=1)
    assert stream.iterations == [] and not (tmp_path / "run").exists()


def test_a_stream_with_the_teacher_cache_is_refused_before_any_work(tmp_path):
    stream = SizedStream()
    with pytest.raises(BadInput, match=r"SizedStream\) is an IterableDataset.*run without the cache"):
        distiller(tmp_path / "run", CacheSettings(tmp_path / "cache")).fit(DataLoader(stream, batch_size=BATCH))
    assert stream.iterations == [] and not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_data_set_without_a_fingerprint_with_the_teacher_cache_is_refused_before_any_work(tmp_path):
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.randn(SAMPLES, 1, 8, 8), torch.randint(0, 10, (SAMPLES,)))
    with pytest.raises(BadInput, match=r"TensorDataset has no fingerprint\(\)\. Use an InMemoryDataset"):
        distiller(tmp_path / "run", CacheSettings(tmp_path / "cache")).fit(DataLoader(data, batch_size=BATCH))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_sampler_without_a_length_is_named_in_the_refusal():
    from torch.utils.data import Sampler, TensorDataset

    class Endless(Sampler):
        def __iter__(self):
            while True:
                yield 0

    data = TensorDataset(torch.randn(SAMPLES, 1, 8, 8), torch.randint(0, 10, (SAMPLES,)))
    with pytest.raises(BadInput, match=r"its BatchSampler has no __len__ \(an endless sampler\?\)"):
        distiller().fit(DataLoader(data, batch_size=BATCH, sampler=Endless()))


class OneShotStream(SizedStream):
    """A stream that yields each sample once (a socket, a queue, a generator): a second pass is empty."""

    def __iter__(self):
        if self.iterations:
            return iter(())
        return super().__iter__()


def test_a_one_shot_stream_trains_on_every_batch_as_a_hand_written_loop_does():
    torch.manual_seed(0)
    start = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    ours = copy.deepcopy(start)
    sgd = OptimizerSettings(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0)
    Distiller(None, ours, [HardLabel()], optimizer=sgd, schedule=ScheduleSettings(name="constant"), progress=False,
              device="cpu").fit(DataLoader(OneShotStream(), batch_size=BATCH), epochs=1)

    def hand_loop(skip: int) -> nn.Module:
        model, stream = copy.deepcopy(start), OneShotStream()
        stream.set_epoch(0)  # as the user's loop over a reshuffling stream does, and kdistill
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in itertools.islice(DataLoader(stream, batch_size=BATCH), skip, None):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return model

    for (name, value), by_hand in zip(ours.state_dict().items(), hand_loop(0).state_dict().values(), strict=True):
        torch.testing.assert_close(value, by_hand, msg=name)
    # what the build's read used to cost: training on the stream without its first batch
    lost = hand_loop(1).state_dict()
    assert max((lost[name] - value).abs().max().item() for name, value in ours.state_dict().items()) > 1e-4


class GlobalShuffle(SizedStream):
    """A stream that shuffles with torch's global generator when a pass starts (a common pattern)."""

    def __iter__(self):
        self.iterations.append(self.epoch)
        for i in torch.randperm(SAMPLES).tolist():
            yield self.inputs[i], self.labels[i]


def test_a_stream_shuffled_by_the_global_generator_follows_the_runs_seed_not_what_ran_before_fit():
    torch.manual_seed(0)
    start = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})

    def train(before: int, seed: int = 0) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(start)
        run = Distiller(None, model, [HardLabel()], seed=seed, progress=False, device="cpu",
                        optimizer=OptimizerSettings(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0))
        torch.manual_seed(before)  # whatever the user's script did before fit()
        run.fit(DataLoader(GlobalShuffle(), batch_size=BATCH), epochs=2)
        assert run._begun_pass is None  # the begun pass ends with the fit
        return model.state_dict()

    first, second = train(1), train(2)
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=0, atol=0, msg=name)
    other_seed = train(1, seed=1)  # and the run's seed does decide the order
    assert max((other_seed[name] - value).abs().max().item() for name, value in first.items()) > 1e-4


def test_a_fit_that_fails_in_its_set_up_ends_the_pass_it_began():
    # the best-checkpoint metric needs validation data: refused once the methods' parts are built
    run = Distiller(None, build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), [HardLabel()], progress=False,
                    device="cpu", best_metric="val/acc")
    with pytest.raises(ValueError, match="validation"):
        run.fit(DataLoader(SizedStream(), batch_size=BATCH), epochs=1)
    assert run._begun_pass is None


def test_a_users_loader_stopped_mid_epoch_0_is_refused_on_resume_not_replayed_from_its_start(tmp_path):
    from kdistill.engine.callbacks import Callback

    class StopAtStep2(Callback):
        def on_step_end(self, distiller, step_info):
            if step_info.global_step == 2:
                distiller.request_stop()

    def run(callbacks=()) -> Distiller:
        torch.manual_seed(0)
        return Distiller(None, build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), [HardLabel()], progress=False,
                         device="cpu", run_dir=tmp_path / "run", callbacks=list(callbacks))

    with pytest.raises(TrainingInterrupted):
        run([StopAtStep2()]).fit(DataLoader(SizedStream(), batch_size=BATCH), epochs=1)
    with pytest.raises(RuntimeError, match="mid-epoch resume needs kdistill's own loader"):
        run().fit(DataLoader(SizedStream(), batch_size=BATCH), epochs=1, resume=True)
