"""Soft-target KD at several temperatures and weights against training from the labels (MNIST).

A small probe of when soft targets help a capacity-limited student: one teacher, one student
architecture, the same epochs and seeds for every row; last-epoch test accuracy.

    python benchmarks/kd_temperature.py [--student-hidden 16] [--epochs 10] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import machine, markdown_table, shared_data

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import limit_samples, load_mnist_bundle
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

RECIPES = [(None, None), (4.0, 0.9), (4.0, 0.5), (2.0, 0.5), (1.0, 0.5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--student-hidden", type=int, nargs="+", default=[16])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    bundle = load_mnist_bundle(shared_data() / "mnist")
    train = limit_samples(bundle.train, args.train_limit, seed=0)
    norm = (bundle.mean, bundle.std)
    settings = {"optimizer": OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                "schedule": ScheduleSettings(name="cosine"), "batch_size": 64, "progress": False,
                "student_normalization": norm}
    torch.manual_seed(1)
    teacher = build_model("mlp", 10, (1, 28, 28), {"hidden": [1200, 1200], "dropout": 0.3})
    Distiller(None, teacher, **settings).fit(train, epochs=args.epochs)
    teacher_acc = Distiller(None, teacher, progress=False, student_normalization=norm).evaluate(bundle.test)["acc"]
    rows = [["teacher mlp-1200-1200", f"{100 * teacher_acc:.2f}", ""]]
    for temperature, weight in RECIPES:
        accuracies = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            student = build_model("mlp", 10, (1, 28, 28), {"hidden": args.student_hidden})
            methods = [HardLabel()] if temperature is None else [
                SoftTarget(weight=weight, temperature=temperature), HardLabel(weight=1 - weight)]
            distiller = Distiller(teacher if temperature else None, student, methods, seed=seed,
                                  teacher_normalization=norm if temperature else None, **settings)
            distiller.fit(train, epochs=args.epochs)
            accuracies.append(100 * distiller.evaluate(bundle.test)["acc"])
        label = "scratch" if temperature is None else f"KD T={temperature:g}, soft weight {weight}"
        rows.append([label, f"{statistics.mean(accuracies):.2f}", ", ".join(f"{a:.2f}" for a in accuracies)])
        print(rows[-1], flush=True)
    print(f"\nMNIST, {args.train_limit} training images, student mlp-{args.student_hidden}, {args.epochs} epochs, "
          f"seeds {args.seeds}; {machine()}")
    print(markdown_table(["model", "test acc % (mean)", "per seed"], rows))


if __name__ == "__main__":
    main()
