"""CIFAR-10 (JPEG copy): a pretrained ResNet teacher, a smaller ResNet student, method by method.

Student from scratch vs KD vs FitNets vs AT vs DKD vs CRD vs KD+AT, same epochs, data and seeds;
last-epoch test accuracy, mean +- std over seeds. Sized for a 2-core CPU: a seeded subset of the
training set and a short schedule (see --train-limit / --epochs); the absolute numbers are far
below full-schedule CIFAR figures, the comparison between methods is what the table is for.

    python benchmarks/cifar10_methods.py [--teacher resnet20] [--student resnet8] [--train-limit 5000]
        [--epochs 5] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import keep_freed_memory, machine, markdown_table, mean_std, shared_data

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import limit_samples, load_image_folder_bundle
from kdistill.data.transforms import Augment
from kdistill.methods import build_method
from kdistill.models import build_model, load_weights

KD = {"name": "soft_target", "weight": 0.9, "temperature": 4}
CE = {"name": "hard_label", "weight": 1.0}
CE_SMALL = {"name": "hard_label", "weight": 0.1}
AT = {"name": "attention_transfer", "weight": 1000,
      "student_layers": ["layer1", "layer2", "layer3"], "teacher_layers": ["layer1", "layer2", "layer3"]}
VARIANTS = {
    "scratch": [CE],
    "KD": [KD, CE_SMALL],
    "FitNets": [CE, {"name": "hint", "weight": 100, "student_layer": "layer2", "teacher_layer": "layer2"}],
    "AT": [CE, AT],
    "DKD": [CE, {"name": "dkd", "warmup_epochs": 1}],
    "CRD": [CE, {"name": "crd", "student_layer": "linear:input", "teacher_layer": "linear:input",
                 "num_negatives": 4096}],
    "KD+AT": [KD, CE_SMALL, AT],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet20")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    keep_freed_memory()
    root = shared_data()
    bundle = load_image_folder_bundle(root / "cifar10-jpeg.tar.gz")
    norm = (bundle.mean, bundle.std)
    depth = args.teacher.removeprefix("resnet")
    teacher = load_weights(build_model(args.teacher, 10, (3, 32, 32)), root / "teachers" / f"cifar10-resnet{depth}.th")
    started = time.time()
    teacher_acc = Distiller(None, teacher, progress=False, student_normalization=norm).evaluate(bundle.test)["acc"]
    print(f"teacher {args.teacher}: {100 * teacher_acc:.2f} % ({time.time() - started:.0f} s)", flush=True)

    results: dict[str, list[float]] = {name: [] for name in args.variants}
    for seed in args.seeds:
        train = limit_samples(bundle.train, args.train_limit, seed=seed)
        for name in args.variants:  # interleaved: every variant sees the same machine state per seed
            methods = [build_method(spec["name"], {k: v for k, v in spec.items() if k != "name"})
                       for spec in VARIANTS[name]]
            torch.manual_seed(seed)
            student = build_model(args.student, 10, (3, 32, 32))
            uses_teacher = any(m.needs_teacher for m in methods)
            distiller = Distiller(
                teacher if uses_teacher else None, student, methods,
                optimizer=OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                schedule=ScheduleSettings(name="cosine"), batch_size=64, seed=seed,
                augment=Augment(crop_padding=4, horizontal_flip=True, seed=seed),
                student_normalization=norm, teacher_normalization=norm if uses_teacher else None,
                description=f"{name} seed {seed}")
            distiller.fit(train, epochs=args.epochs)
            results[name].append(100 * distiller.evaluate(bundle.test)["acc"])
            print(f"{name} seed {seed}: {results[name][-1]:.2f} % ({time.time() - started:.0f} s)", flush=True)

    scratch = sum(results["scratch"]) / len(results["scratch"]) if results.get("scratch") else None
    rows = [[f"teacher {args.teacher} (pretrained)", f"{100 * teacher_acc:.2f}", ""]]
    for name, values in results.items():
        delta = f"{sum(values) / len(values) - scratch:+.2f}" if scratch is not None else ""
        rows.append([f"{args.student} {name}", mean_std(values), delta])
    print()
    print(f"CIFAR-10 JPEG test accuracy %, last epoch; {args.student} student, {args.train_limit} training "
          f"images, {args.epochs} epochs, seeds {args.seeds}; {machine()}; {time.time() - started:.0f} s")
    print(markdown_table(["model", "test acc % (mean +- std)", "vs scratch"], rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"teacher": teacher_acc, "results": results, "args": vars(args)}, handle, indent=2)


if __name__ == "__main__":
    main()
