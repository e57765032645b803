"""Time of one distillation training step through kdistill over a hand-written PyTorch loop.

Both do the same work on the same batch: normalise inputs, teacher forward without gradients,
student forward, 0.9 * T^2 KL(teacher_T || student_T) + 0.1 * CE, backward, SGD step, LR schedule.
The two are interleaved in blocks (so drift of the machine hits both) and the median per-step time
of each is compared; the floor of the ratio is 1.0. Page faults per step are reported because
glibc returning memory to the OS can make either side slower (see design.md).

    python benchmarks/step_overhead.py [--pairs mlp resnet] [--blocks 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from _common import keep_freed_memory, machine, markdown_table

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data.base import InMemoryDataset
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

PAIRS = {
    "mlp": ("mlp", {"hidden": [1200, 1200]}, "mlp", {"hidden": [800, 800]}, (1, 28, 28), 128),
    "resnet": ("resnet56", {}, "resnet20", {}, (3, 32, 32), 64),
}
MEAN, STD = (0.5,), (0.25,)


def make_models(pair: str):
    teacher_name, teacher_opts, student_name, student_opts, shape, batch = PAIRS[pair]
    torch.manual_seed(0)
    teacher = build_model(teacher_name, 10, shape, teacher_opts).eval()
    student = build_model(student_name, 10, shape, student_opts)
    return teacher, student, shape, batch


def hand_written(teacher, student, batch, steps_per_epoch=100):
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / (10 * steps_per_epoch))))
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    temperature = 4.0

    def step():
        x = (batch["input"] - mean) / std
        with torch.inference_mode():
            teacher_logits = teacher(x)
        teacher_logits = teacher_logits.clone()
        logits = student(x)
        soft = F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                        reduction="batchmean", log_target=True) * temperature**2
        loss = 0.9 * soft + 0.1 * F.cross_entropy(logits, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    return step


def kdistill_step(teacher, student, batch, shape):
    data = InMemoryDataset(batch["input"], batch["label"])
    distiller = Distiller(teacher, student, [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1)],
                          optimizer=OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                          schedule=ScheduleSettings(name="cosine"), batch_size=len(data), progress=False,
                          device="cpu", student_normalization=(MEAN, STD), teacher_normalization=(MEAN, STD))
    distiller._build(distiller.make_loader(data, train=True), epochs=10)
    prepared = data.__getitems__(list(range(len(data))))
    return lambda: distiller.train_step(prepared, 0, 10)


def timed(step, steps: int) -> tuple[float, float]:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = (time.perf_counter() - started) / steps
    return elapsed, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps


def measure(pair: str, blocks: int, steps: int) -> list[str]:
    teacher, student, shape, batch_size = make_models(pair)
    torch.manual_seed(1)
    batch = {"input": torch.rand(batch_size, *shape), "label": torch.randint(0, 10, (batch_size,))}
    hand_student = build_model(PAIRS[pair][2], 10, shape, PAIRS[pair][3])
    hand_student.load_state_dict(student.state_dict())
    variants = {"hand": hand_written(teacher, hand_student, batch), "kdistill": kdistill_step(teacher, student, batch,
                                                                                             shape)}
    for step in variants.values():  # warm-up
        timed(step, 3)
    times: dict[str, list[float]] = {k: [] for k in variants}
    faults: dict[str, list[float]] = {k: [] for k in variants}
    for block in range(blocks):
        order = list(variants) if block % 2 == 0 else list(reversed(variants))
        for name in order:
            seconds, page_faults = timed(variants[name], steps)
            times[name].append(seconds)
            faults[name].append(page_faults)
    hand, ours = statistics.median(times["hand"]), statistics.median(times["kdistill"])
    page_faults = f"{statistics.median(faults['hand']):.0f} / {statistics.median(faults['kdistill']):.0f}"
    return [f"{PAIRS[pair][0]} -> {PAIRS[pair][2]}, batch {batch_size}", f"{1000 * hand:.2f}", f"{1000 * ours:.2f}",
            f"{ours / hand:.3f}", page_faults]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    keep_freed_memory()
    rows = [measure(pair, args.blocks, args.steps) for pair in args.pairs]
    print(f"median step time over {args.blocks} interleaved blocks of {args.steps} steps; {machine()}")
    print(markdown_table(["pair", "hand-written ms/step", "kdistill ms/step", "ratio", "page faults/step hand / kd"],
                         rows))


if __name__ == "__main__":
    main()
