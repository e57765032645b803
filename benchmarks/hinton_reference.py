"""Hinton's MNIST recipe as a hand-written PyTorch loop, on the teachers hinton_mnist.py trained.

Issue 8 asks kdistill for "at least the 68 % of the gap that a plain-PyTorch reference reaches on this
machine". That reference had a teacher of its own (84 errors); hinton_mnist.py's teachers are better
(82 / 73 / 83), which widens the gap without necessarily helping the students. This script is the
reference's recipe written out without kdistill (no Distiller, no methods, no cache: plain tensors,
Adam, a LambdaLR, the loss typed in), taught by the same teachers as hinton_mnist.py's variant
"distilled (teacher of its own)": student seed k learns from teacher seed 1000 + k. The same share of
the gap, measured by both on the same teachers, tells whether kdistill falls short of the reference
or the 68 % belonged to the reference's weaker teacher.

Recipe (the issue's): students 784-800-800 (ReLU, no regularisation), 50 epochs, Adam 1e-3, a
500-step linear warm-up then a per-step cosine to 0, batch 128 with the last partial batch dropped,
pixels in [0, 1]; distillation at T = 20, 0.9 * T^2 * KL(teacher || student) + 0.1 * cross-entropy,
the teacher's logits computed once on the un-jittered training images (what the one-view cache holds).
Each epoch ends with a checkpoint, so an interrupted run resumes where it stopped.

Variant "distilled-1000" teaches every student seed with teacher seed 1000, as hinton_mnist.py's
main row "distilled" does, so the two tables compare seed for seed on one teacher.

    python benchmarks/hinton_reference.py [--seeds 0 1 2] [--variants scratch distilled distilled-1000]
    python benchmarks/table.py hinton_reference
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from _common import keep_freed_memory, shared_data
from _records import WORK, Records, Timer
from hinton_mnist import TEACHER, TEACHER_SEED
from table import render
from torch import nn

from kdistill.data import load_mnist_bundle
from kdistill.digest import model_digest
from kdistill.models import build_model

BENCHMARK = "hinton_reference"
DISTILLED = "distilled (teacher of its own: seed 1000 + student seed)"
DISTILLED_BY_1000 = "distilled (teacher seed 1000)"
TEACHERS = WORK / "hinton_mnist"  # hinton_mnist.py --variants own-teacher writes them
RECIPE = {"loop": "plain PyTorch", "model": [784, 800, 800, 10], "epochs": 50, "optimizer": "adam", "lr": 1e-3,
          "warmup_steps": 500, "schedule": "cosine to 0, per step", "batch_size": 128, "drop_last": True,
          "pixels": "[0, 1]"}
KD = {"temperature": 20.0, "soft_weight": 0.9}


def pixels(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return dataset.inputs.flatten(1).float() / 255, dataset.labels


def student_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 800), nn.ReLU(), nn.Linear(800, 800), nn.ReLU(), nn.Linear(800, 10))


def teacher_of(teacher_seed: int) -> nn.Module:
    """The teacher of this seed as hinton_mnist.py saved it (the first teacher's file has no suffix)."""
    suffix = "" if teacher_seed == TEACHER_SEED else f"-seed{teacher_seed}"
    path = TEACHERS / f"teacher-120ep{suffix}.pt"
    if not path.exists():
        raise SystemExit(f"{path} not found: run `python benchmarks/hinton_mnist.py --variants own-teacher "
                         f"--seeds {teacher_seed - TEACHER_SEED}` first (it trains and keeps the teacher)")
    teacher = build_model("mlp", 10, (1, 28, 28), TEACHER)
    teacher.load_state_dict(torch.load(path, weights_only=True))
    return teacher.eval()


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(chunk) for chunk in x.split(2000)])


def test_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits_of(model, x).argmax(1) != y).sum())


def warmup_cosine(total_steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
    return factor


def train(seed: int, x: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, checkpoint) -> nn.Module:
    """One student; soft is the teacher's training-set logits (None: labels only)."""
    model = student_net(seed)
    epochs, batch = RECIPE["epochs"], RECIPE["batch_size"]
    steps_per_epoch = len(x) // batch  # the last partial batch is dropped
    optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(epochs * steps_per_epoch,
                                                                            RECIPE["warmup_steps"]))
    order = torch.Generator().manual_seed(seed)
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        order.set_state(state["order"])
        start = state["epoch"]
    t = KD["temperature"]
    for epoch in range(start, epochs):
        model.train()
        permutation = torch.randperm(len(x), generator=order)
        for step in range(steps_per_epoch):
            index = permutation[step * batch:(step + 1) * batch]
            out = model(x[index])
            loss = F.cross_entropy(out, y[index])
            if soft is not None:
                kl = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(soft[index] / t, 1), reduction="batchmean",
                              log_target=True)
                loss = KD["soft_weight"] * t * t * kl + (1 - KD["soft_weight"]) * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "order": order.get_state(), "epoch": epoch + 1},
                   checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)  # never a half-written checkpoint
        print(f"  seed {seed} epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="*", default=["scratch", "distilled"],
                        choices=["scratch", "distilled", "distilled-1000"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    bundle = load_mnist_bundle(shared_data() / "mnist")
    x, y = pixels(bundle.train)
    x_test, y_test = pixels(bundle.test)
    for seed in args.seeds:
        for variant in args.variants:
            # which teacher seed teaches this student (None: labels only)
            teacher_seed = {"scratch": None, "distilled": TEACHER_SEED + seed, "distilled-1000": TEACHER_SEED}[variant]
            teacher = teacher_of(teacher_seed) if teacher_seed is not None else None
            # one config for every seed (the table shows one config per variant); the weights' digest rides along
            teacher_config = {"trained_by": "benchmarks/hinton_mnist.py", "model": TEACHER}
            if teacher is not None and not records.find("teacher", teacher_seed, teacher_config):
                with Timer() as timer:
                    found = test_errors(teacher, x_test, y_test)
                records.append("teacher", teacher_seed, teacher_config,
                               {"test_errors": found, "test_acc": 100 - found / 100}, timer.seconds,
                               teacher_digest=model_digest(teacher))
            name, config = {
                "scratch": ("scratch", RECIPE),
                "distilled": (DISTILLED, {**RECIPE, **KD, "teacher": "seed 1000 + student seed"}),
                "distilled-1000": (DISTILLED_BY_1000, {**RECIPE, **KD, "teacher": "seed 1000"}),
            }[variant]
            if records.find(name, seed, config):
                continue
            soft = logits_of(teacher, x) if teacher is not None else None
            # a student taught by teacher 1000 + seed is the same run under either distilled variant
            stem = "scratch" if teacher is None else "distilled" + (
                "" if teacher_seed == TEACHER_SEED + seed else f"-teacher{teacher_seed}")
            with Timer() as timer:
                student = train(seed, x, y, soft, WORK / BENCHMARK / f"{stem}-seed{seed}.pt")
            found = test_errors(student, x_test, y_test)
            records.append(name, seed, config, {"test_errors": found, "test_acc": 100 - found / 100},
                           timer.seconds, params=sum(p.numel() for p in student.parameters()),
                           **({"teacher_digest": model_digest(teacher)} if soft is not None else {}))
            print(f"{name} seed {seed}: {found} errors ({timer.seconds:.0f} s)", flush=True)
    print(render(BENCHMARK))


if __name__ == "__main__":
    main()
