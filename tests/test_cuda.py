"""The GPU paths: mixed precision, the teacher cache and the CLI on CUDA against the CPU's results,
and one process per GPU under DDP. CI has no GPU: the CUDA cases skip there (the device checks run
them; see docs/benchmarks.md "GPU checks"); the GPU-count checks run everywhere with a stand-in count.

On a machine with CUDA the rest of the suite runs there too: `device: auto` (the default) picks the
GPU, so the engine, cache, resume and LM tests exercise the CUDA path as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from kdistill import Distiller, OptimizerSettings, ScheduleSettings, cli_run
from kdistill.cli import main
from kdistill.config import validate
from kdistill.engine.cache import CacheSettings
from kdistill.engine.device import check_processes_fit, deterministic_algorithms, resolve_device
from kdistill.engine.distributed import process_group_backend
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device checks run it)")
OPT = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)


def test_a_device_torch_does_not_know_is_named_with_the_choices():
    for device in ("gpu", "cuda:x"):  # torch's own message lists its twenty-odd device types
        with pytest.raises(ValueError, match=f"device: '{device}' is not a device; use auto, cpu, cuda"):
            resolve_device(device)


def test_a_gpu_beyond_the_machines_count_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"GPU 3, but this machine has 1 GPU\(s\): use cuda:0\.\.cuda:0"):
        resolve_device("cuda:3")
    # the second process of `--nproc 2` on a one-GPU machine: local rank 1
    from kdistill import collectives

    monkeypatch.setattr(collectives, "current_world", lambda: collectives.World(1, 2, 1))
    import kdistill.engine.device as device_module

    monkeypatch.setattr(device_module, "current_world", lambda: collectives.World(1, 2, 1))
    with pytest.raises(ValueError, match="for 2 processes: run with --nproc 1 or fewer, or --device cpu"):
        resolve_device("auto")


def test_one_process_group_serves_cpu_and_gpu_tensors(monkeypatch):
    """`--device cpu` on a GPU machine: nccl alone cannot reduce CPU tensors, so gloo serves them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert process_group_backend() == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert process_group_backend() == "cpu:gloo,cuda:nccl"


def test_more_processes_than_gpus_are_refused_before_any_launch(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_processes_fit("cpu", 4)  # CPU processes need no GPU
    check_processes_fit("auto", 1)
    with pytest.raises(ValueError, match="--nproc 2 needs one GPU per process, but this machine has 1: use "
                                         "--nproc 1, or --device cpu to run 2 processes on the CPU"):
        check_processes_fit("auto", 2)
    launched = []
    monkeypatch.setattr(cli_run, "launch_processes", lambda *a: launched.append(a) or 0)
    out = tmp_path / "run"
    assert main(["run", "--nproc", "2", "--output-dir", str(out), "--no-progress"]) == 2
    assert "--nproc 2 needs one GPU per process" in capsys.readouterr().err
    assert not launched and not out.exists()
    assert main(["run", "--nproc", "2", "--device", "cpu", "--output-dir", str(out), "--no-progress"]) == 0
    assert len(launched) == 1


def test_a_teacher_trained_here_runs_on_the_runs_device_unless_it_names_its_own(tmp_path):
    def config(teacher_training):
        return validate({"student": {"name": "mlp"}, "training": {"device": "cpu"},
                         "teacher": {"name": "cnn", "training": teacher_training}})

    assert config({"epochs": 2}).teacher.training.device == "cpu"  # was "auto": the GPU when there is one
    own = config({"epochs": 2, "device": "auto"})
    assert own.teacher.training.device == "auto"
    own.set_device("cpu")  # `--device` moves every stage
    assert (own.training.device, own.teacher.training.device) == ("cpu", "cpu")


@pytest.mark.slow
def test_deterministic_runs_set_the_process_flags_only_for_the_run(monkeypatch, tmp_path):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    # through the CLI: every op of a run has a deterministic kernel (none raises), same student
    seen = []
    import kdistill.experiment as experiment

    original = experiment.run_experiment
    monkeypatch.setattr(experiment, "run_experiment",
                        lambda *a, **k: seen.append(torch.are_deterministic_algorithms_enabled()) or original(*a, **k))
    short = ["--set", "training.epochs=3", "--set", "teacher.training.epochs=2", "--set", "baseline=false",
             "--no-progress"]
    assert main(["run", "--output-dir", str(tmp_path / "plain"), *short]) == 0
    assert main(["run", "--output-dir", str(tmp_path / "det"), "--set", "training.deterministic=true", *short]) == 0
    assert seen == [False, True] and not torch.are_deterministic_algorithms_enabled()
    plain = torch.load(tmp_path / "plain" / "student-distilled" / "student.pt", weights_only=True)
    det = torch.load(tmp_path / "det" / "student-distilled" / "student.pt", weights_only=True)
    assert all(torch.equal(plain[k], det[k]) for k in plain)


def _teacher(digits):
    bundle, train, _ = digits
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [16, 32]})
    Distiller(None, teacher, [HardLabel()], optimizer=OPT, batch_size=64, device="cpu", progress=False,
              student_normalization=(bundle.mean, bundle.std)).fit(train, epochs=8)
    return teacher.eval()


def _student_accuracy(digits, teacher, device: str, precision: str) -> tuple[float, Distiller]:
    bundle, train, _ = digits
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    distiller = Distiller(teacher, student, [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1)],
                          optimizer=OPT, schedule=ScheduleSettings(name="cosine"), batch_size=64, seed=0,
                          device=device, precision=precision, progress=False,
                          student_normalization=(bundle.mean, bundle.std),
                          teacher_normalization=(bundle.mean, bundle.std))
    distiller.fit(train, epochs=12)
    return distiller.evaluate(bundle.test)["acc"], distiller


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_gpu_run_learns_what_the_cpu_run_learns(digits, precision):
    teacher = _teacher(digits)
    cpu_acc, _ = _student_accuracy(digits, teacher, "cpu", "fp32")
    gpu_acc, distiller = _student_accuracy(digits, teacher, "cuda", precision)
    assert cpu_acc > 0.85
    assert abs(gpu_acc - cpu_acc) < 0.03, (precision, gpu_acc, cpu_acc)
    assert all(p.device.type == "cuda" for p in distiller.student.model.parameters())
    assert (distiller.scaler is not None) == (precision == "fp16")  # loss scaling only for fp16
    assert all(p.dtype == torch.float32 for p in distiller.student.model.parameters())  # master weights


@needs_cuda
def test_a_cache_built_on_the_gpu_holds_the_teachers_outputs(digits, tmp_path):
    bundle, train, _ = digits
    teacher = _teacher(digits)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    distiller = Distiller(teacher, student, [SoftTarget()], batch_size=64, device="cuda", progress=False,
                          student_normalization=(bundle.mean, bundle.std),
                          teacher_normalization=(bundle.mean, bundle.std),
                          teacher_cache=CacheSettings(tmp_path / "cache", dtype="float16"))
    distiller._build(distiller.make_loader(train, train=True), epochs=1)
    indices = torch.arange(len(train))
    cached = distiller.cache.lookup(indices, 0, torch.device("cuda"))
    assert cached.device.type == "cuda"
    images = (train.inputs - bundle.mean[0]) / bundle.std[0]
    with torch.no_grad():
        expected = teacher.cpu()(images)
    assert torch.allclose(cached.float().cpu(), expected, atol=2e-2, rtol=1e-2)


@needs_cuda
def test_the_demo_runs_on_the_gpu_in_bf16(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--device", "cuda", "--set", "training.precision=bf16", "--set", "training.epochs=10",
                 "--set", "teacher.training.epochs=5", "--output-dir", str(out), "--no-progress"]) == 0
    rows = {row["role"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert "device: cuda" in capsys.readouterr().out
    assert rows["student (distilled)"]["accuracy"] > 0.8, rows


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() != 1, reason="checks the one-GPU machine's refusal")
def test_two_processes_on_one_gpu_are_refused_and_run_on_the_cpu(tmp_path):
    command = [sys.executable, "-m", "kdistill.cli", "run", "--nproc", "2", "--no-progress",
               "--set", "training.epochs=2", "--set", "teacher.training.epochs=1", "--set", "baseline=false"]
    refused = subprocess.run([*command, "--output-dir", str(tmp_path / "gpu")], capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "kdistill: --nproc 2 needs one GPU per process, but this machine has 1: use --nproc 1, or --device cpu to "
        "run 2 processes on the CPU"]
    on_cpu = subprocess.run([*command, "--device", "cpu", "--output-dir", str(tmp_path / "cpu")],
                            capture_output=True, text=True, timeout=600)
    assert on_cpu.returncode == 0, on_cpu.stderr


@needs_cuda
def test_profiling_and_scoring_a_gpu_model_leave_it_trainable(digits):
    """Moving a model inside `torch.inference_mode` makes its parameters inference tensors, which
    can never train again; on a CPU-only machine the move is a no-op and hides it."""
    from kdistill.evaluate import cpu_latency_ms
    from kdistill.evaluate.profile import flops, torch_latency

    model = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]}).cuda()
    sample = torch.randn(2, 1, 8, 8)
    cpu_latency_ms(model, sample, repeats=2, warmup=1)
    torch_latency(model, sample, repeats=2, warmup=1)
    flops(model, sample)
    assert all(p.device.type == "cuda" and not p.is_inference() for p in model.parameters())
    model(sample.cuda()).sum().backward()  # trains again
    assert all(p.grad is not None for p in model.parameters())


@needs_cuda
def test_the_lm_helpers_leave_a_gpu_model_trainable(tmp_path):
    from lm_fixtures import VOCAB, corpus, tiny_lm

    from kdistill.lm import generate_blocks, open_topk_cache, perplexity

    _, train, _ = corpus()
    blocks = train.subset(torch.arange(8))
    model = tiny_lm(1).cuda()
    perplexity(model, blocks, device="cuda")
    open_topk_cache(tmp_path / "cache", model, blocks, VOCAB, k=4, dtype="float32", device="cuda")
    generate_blocks(model, count=2, block_size=4, start_id=0, device="cuda")
    assert all(p.device.type == "cuda" and not p.is_inference() for p in model.parameters())


@needs_cuda
def test_two_deterministic_gpu_runs_are_bit_identical(digits):
    bundle, train, _ = digits
    weights = []
    for _ in range(2):
        torch.manual_seed(123)
        student = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
        with deterministic_algorithms():
            Distiller(None, student, [HardLabel()], optimizer=OPT, batch_size=64, seed=0, device="cuda", progress=False,
                      student_normalization=(bundle.mean, bundle.std)).fit(train, epochs=2)
        weights.append(student.head.weight.detach().cpu())
    assert torch.equal(weights[0], weights[1])
