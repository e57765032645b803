"""Hinton, Vinyals and Dean 2015, section 3: distillation on MNIST.

Teacher 784-1200-1200 (dropout, +-2 px jitter); student 784-800-800 trained plainly and by
distillation at T=20, same epochs; test errors out of 10,000 and the share of the gap recovered.
The paper: 67 / 146 / 74 errors, 91 % of the gap. Student figures are mean +- std over seeds.

    python benchmarks/hinton_mnist.py [--teacher-epochs 30] [--student-epochs 30] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import keep_freed_memory, machine, markdown_table, mean_std, shared_data

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import load_mnist_bundle
from kdistill.data.transforms import Augment
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model


def errors(distiller: Distiller, test) -> int:
    return round((1 - distiller.evaluate(test)["acc"]) * len(test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--soft-weight", type=float, default=0.9)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    keep_freed_memory()
    bundle = load_mnist_bundle(shared_data() / "mnist")
    norm = (bundle.mean, bundle.std)
    optimizer = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=0.0)
    schedule = ScheduleSettings(name="cosine", warmup_epochs=1)
    started = time.time()

    torch.manual_seed(1000)
    teacher = build_model("mlp", 10, (1, 28, 28), {"hidden": [1200, 1200], "dropout": 0.5, "input_dropout": 0.2})
    trainer = Distiller(None, teacher, [HardLabel()], optimizer=optimizer, schedule=schedule, batch_size=128,
                        seed=1000, augment=Augment(crop_padding=2, seed=1000), student_normalization=norm,
                        description="teacher")
    trainer.fit(bundle.train, epochs=args.teacher_epochs)
    teacher_errors = errors(trainer, bundle.test)
    print(f"teacher: {teacher_errors} errors ({time.time() - started:.0f} s)", flush=True)

    scratch, distilled = [], []
    for seed in args.seeds:
        for kind in ("scratch", "distilled"):
            torch.manual_seed(seed)
            student = build_model("mlp", 10, (1, 28, 28), {"hidden": [800, 800]})
            methods = [HardLabel()] if kind == "scratch" else [
                SoftTarget(weight=args.soft_weight, temperature=args.temperature),
                HardLabel(weight=1 - args.soft_weight)]
            distiller = Distiller(teacher if kind == "distilled" else None, student, methods, optimizer=optimizer,
                                  schedule=schedule, batch_size=128, seed=seed, student_normalization=norm,
                                  teacher_normalization=norm if kind == "distilled" else None,
                                  description=f"{kind} seed {seed}")
            distiller.fit(bundle.train, epochs=args.student_epochs)
            (scratch if kind == "scratch" else distilled).append(errors(distiller, bundle.test))
            print(f"student {kind} seed {seed}: {(scratch if kind == 'scratch' else distilled)[-1]} errors "
                  f"({time.time() - started:.0f} s)", flush=True)

    recovered = [(s - d) / (s - teacher_errors) for s, d in zip(scratch, distilled, strict=True)]
    rows = [
        ["teacher 784-1200-1200 (dropout, jitter)", str(teacher_errors), "67"],
        ["student 784-800-800, scratch", mean_std(scratch), "146"],
        [f"student 784-800-800, distilled T={args.temperature:g}", mean_std(distilled), "74"],
        ["gap recovered", f"{100 * statistics.mean(recovered):.0f} %"
         + (f" +- {100 * statistics.stdev(recovered):.0f}" if len(recovered) > 1 else ""), "91 %"],
    ]
    print()
    print(f"MNIST test errors / 10,000; teacher {args.teacher_epochs} epochs, students {args.student_epochs} "
          f"epochs, seeds {args.seeds}; {machine()}; {time.time() - started:.0f} s total")
    print(markdown_table(["model", "kdistill", "paper"], rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"teacher": teacher_errors, "scratch": scratch, "distilled": distilled,
                       "recovered": recovered, "args": vars(args)}, handle, indent=2)


if __name__ == "__main__":
    main()
