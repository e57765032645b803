"""CIFAR-10 or MNIST: who teaches whom. One student architecture, the same epochs throughout.

Rows (last-epoch test accuracy, mean +- std over seeds):
- four teachers and their ensemble (mean of probabilities). CIFAR-10 (JPEG copy): the pretrained
  ResNets 20/32/44/56. MNIST: four architectures trained from the labels at the start of the run,
  once for all seeds (fixed seeds; --teacher-epochs on a seeded --train-limit subset, no augmentation):
  MLPs 784-1200-1200 (dropout 0.3) and 784-800-800, CNNs with 32-64 and 16-32 channels;
- the student from scratch; by KD from the single best teacher; by KD from the four-teacher
  ensemble under each aggregation (mean, weighted, confidence = CA-MKD's per-sample weights);
- born-again generations 1-3 (generation 1 from labels, k+1 from k, KD recipe below) and the
  ensemble of the three generations;
- deep mutual learning of two students (each peer, and the two as an ensemble);
- a teacher-assistant chain: best teacher -> assistant -> student.
Students: CIFAR-10 resnet8, assistant resnet14; MNIST an MLP 784-64-10, assistant 784-256-10
(--student / --assistant, --student-hidden / --assistant-hidden).
The single best teacher: on CIFAR-10 the most accurate on the test set (the pretrained teachers saw
the whole training set, so no held-out split is left to choose on: a choice made on test data); on
MNIST the most accurate on a stratified validation split (1/12 of the training set, 5,000 images)
held out from the teachers' and the students' training data. The 'weighted' aggregation's default
weights (--weights): proportional to depth on CIFAR-10, to the inverse of the validation error on MNIST.
KD everywhere is 0.9 * KL at T = 4 + 0.1 * CE (aggregators at the same T); SGD 0.05, momentum 0.9,
wd 5e-4, cosine, batch 64 (the MNIST teachers too), crop + flip on CIFAR-10, no augmentation on MNIST.
The "training" column counts what a row costs in runs of the student (teacher forward passes and
the MNIST teachers' training, shared by all rows, not counted): BAN generation k includes the
generations before it, mutual learning trains two students, the TA row includes the assistant
(counted by its parameter count relative to the student's). Sized for a 2-core CPU: a seeded
subset of the training set (drawn per seed) and a short schedule (see --train-limit / --epochs);
absolute numbers are far below full-schedule figures, the comparison between rows is what the
table is for.

The four teachers run as one module (their logits concatenated) so that one teacher-output cache
per seed, with one augmented view per epoch (exactly the inputs the uncached loop would give them),
serves the single-teacher, the three ensemble rows and the TA chain's first stage; the single best
teacher is the 'weighted' aggregation with a one-hot weight (the same soft targets, exactly).

    python benchmarks/strategies.py --dataset cifar10 [--student resnet8] [--assistant resnet14]
        [--train-limit 5000] [--epochs 5] [--seeds 0 1 2] [--variants ...] [--test-limit N] [--json out.json]
    python benchmarks/strategies.py [--dataset mnist] [--teacher-epochs 3] [--student-hidden 64]
        [--assistant-hidden 256] [--train-limit 10000] [--epochs 5] [--seeds 0 1 2] [--variants ...]
        [--test-limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import keep_freed_memory, machine, markdown_table, mean_std, shared_data
from torch import nn

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import InMemoryDataset, limit_samples, load_image_folder_bundle, load_mnist_bundle, split_validation
from kdistill.data.transforms import Augment
from kdistill.engine.cache import CacheSettings
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model, load_weights
from kdistill.strategies import (
    ConfidenceAggregator,
    MeanAggregator,
    WeightedAggregator,
    born_again,
    check_teachers,
    evaluate_ensemble,
    kd_methods,
    mutual_learning,
    teacher_assistant_chain,
)

NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # what the pretrained teachers were trained with
TEACHERS = ("resnet20", "resnet32", "resnet44", "resnet56")
MNIST_TEACHERS = (  # (name, architecture, options)
    ("mlp-1200-1200", "mlp", {"hidden": [1200, 1200], "dropout": 0.3}),
    ("mlp-800-800", "mlp", {"hidden": [800, 800]}),
    ("cnn-32-64", "cnn", {"channels": [32, 64]}),
    ("cnn-16-32", "cnn", {"channels": [16, 32]}),
)
MNIST_TEACHER_SEED = 1000  # teacher k: seed 1000 + k; also the seed of the validation split and the teachers' subset
MNIST_VAL_FRACTION = 1 / 12  # 5,000 of the 60,000 training images
TEMPERATURE = 4.0
VARIANTS = ("scratch", "kd-best", "ensemble-mean", "ensemble-weighted", "ensemble-confidence", "born-again",
            "mutual", "assistant")


class StackedTeachers(nn.Module):
    """Several teachers as one: their logits concatenated, (B, K * C), so one cache holds them all."""

    def __init__(self, teachers: list[nn.Module]) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([teacher(inputs) for teacher in self.teachers], dim=1)


class Unstack:
    """Splits StackedTeachers' (B, K * C) logits back into K teachers and hands them to `aggregator`."""

    def __init__(self, aggregator, count: int) -> None:
        self.aggregator, self.count = aggregator, count

    def __call__(self, teacher_logits: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        return self.aggregator(list(teacher_logits[0].chunk(self.count, dim=1)), labels)


def kd() -> list:
    return [SoftTarget(weight=0.9, temperature=TEMPERATURE), HardLabel(weight=0.1)]


def training_settings(seed: int, augment: Augment, norm: tuple, device: str) -> dict[str, Any]:
    """The Distiller settings of every run (students, assistants, the MNIST teachers)."""
    return {
        "optimizer": OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
        "schedule": ScheduleSettings(name="cosine"), "batch_size": 64, "seed": seed, "augment": augment,
        "student_normalization": norm, "progress": False, "device": device,
    }


@dataclass
class Setup:
    """What differs between the data sets; everything after it is shared."""

    title: str  # the table's caption
    train: InMemoryDataset  # the pool each seed's --train-limit subset is drawn from
    test: InMemoryDataset
    norm: tuple  # input normalisation of the teachers and of every student
    teachers: list[nn.Module]  # in eval mode
    teacher_names: list[str]
    teacher_note: str  # how the teachers came to be, for their table rows
    selection: list[float] | None  # validation accuracies the best teacher is chosen by (None: test accuracy)
    weights: list[float]  # the 'weighted' aggregation's default teacher weights
    student: str  # names in the table
    assistant: str
    make_student: Callable[[], nn.Module]
    make_assistant: Callable[[], nn.Module]
    augment: Callable[[int], Augment]  # seed -> the students' augmentation


def cifar10_setup(args: argparse.Namespace, root: Path) -> Setup:
    bundle = load_image_folder_bundle(root / "cifar10-jpeg.tar.gz")
    shape = (3, 32, 32)
    teachers = [load_weights(build_model(name, 10, shape), root / "teachers" / f"cifar10-{name}.th")
                for name in TEACHERS]
    check_teachers(teachers, bundle.num_classes, shape)
    student, assistant = args.student or "resnet8", args.assistant or "resnet14"
    return Setup(
        "CIFAR-10 JPEG", bundle.train, bundle.test, NORM, [t.eval() for t in teachers], list(TEACHERS), "pretrained",
        None, [20, 32, 44, 56], student, assistant, lambda: build_model(student, 10, shape),
        lambda: build_model(assistant, 10, shape),
        lambda seed: Augment(crop_padding=4, horizontal_flip=True, seed=seed))


def mnist_setup(args: argparse.Namespace, root: Path) -> Setup:
    bundle = load_mnist_bundle(root / "mnist")
    shape, norm = (1, 28, 28), (bundle.mean, bundle.std)
    pool, val = split_validation(bundle.train, MNIST_VAL_FRACTION, seed=MNIST_TEACHER_SEED)
    teacher_train = limit_samples(pool, args.train_limit, seed=MNIST_TEACHER_SEED)
    teachers = []
    for k, (name, architecture, options) in enumerate(MNIST_TEACHERS):
        torch.manual_seed(MNIST_TEACHER_SEED + k)
        teacher = build_model(architecture, 10, shape, options)
        settings = training_settings(MNIST_TEACHER_SEED + k, Augment(), norm, args.device)
        Distiller(None, teacher, [HardLabel()], description=f"teacher {name}", **settings).fit(
            teacher_train, epochs=args.teacher_epochs)
        teachers.append(teacher.eval())
    check_teachers(teachers, bundle.num_classes, shape)
    val_acc = [100 * evaluate_ensemble([t], val, norm, args.device)["acc"] for t in teachers]
    floor = 100 / len(val)  # one error: keeps the inverse finite for a perfect teacher
    student_hidden, assistant_hidden = args.student_hidden or [64], args.assistant_hidden or [256]
    return Setup(
        "MNIST", pool, bundle.test, norm, teachers, [name for name, _, _ in MNIST_TEACHERS],
        f"trained from labels, {args.teacher_epochs} epochs", val_acc, [1 / max(100 - a, floor) for a in val_acc],
        "mlp-" + "-".join(map(str, student_hidden)), "mlp-" + "-".join(map(str, assistant_hidden)),
        lambda: build_model("mlp", 10, shape, {"hidden": student_hidden}),
        lambda: build_model("mlp", 10, shape, {"hidden": assistant_hidden}),
        lambda seed: Augment(seed=seed))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("cifar10", "mnist"), default="mnist",
                        help="mnist (default) fits a 2-core CPU; cifar10 uses the pretrained ResNet teachers")
    parser.add_argument("--student", help="cifar10: student architecture (default resnet8)")
    parser.add_argument("--assistant", help="cifar10: assistant architecture (default resnet14)")
    parser.add_argument("--student-hidden", type=int, nargs="+", help="mnist: the student MLP's widths (default 64)")
    parser.add_argument("--assistant-hidden", type=int, nargs="+",
                        help="mnist: the assistant MLP's widths (default 256)")
    parser.add_argument("--teacher-epochs", type=int, help="mnist: epochs of each teacher (default 3)")
    parser.add_argument("--train-limit", type=int, help="training images per seed (default cifar10 5000, mnist 10000)")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on a seeded subset (smoke runs)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--weights", type=float, nargs=4,
                        help="the 'weighted' aggregation's teacher weights (default: cifar10 proportional to depth, "
                             "20 32 44 56; mnist the inverse of each teacher's validation error)")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--no-cache", action="store_true", help="run the teachers at every step instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", help="stage folders and caches (default: a temporary directory)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    other = {"cifar10": ("student_hidden", "assistant_hidden", "teacher_epochs"),
             "mnist": ("student", "assistant")}[args.dataset]
    for name in other:
        if getattr(args, name) is not None:
            parser.error(f"--{name.replace('_', '-')} does not apply to --dataset {args.dataset}")
    if args.train_limit is None:
        args.train_limit = 5000 if args.dataset == "cifar10" else 10000
    if args.dataset == "mnist" and args.teacher_epochs is None:
        args.teacher_epochs = 3
    return args


def main() -> None:
    args = parse_args()
    keep_freed_memory()
    root = shared_data()
    started = time.time()
    setup = (cifar10_setup if args.dataset == "cifar10" else mnist_setup)(args, root)
    test = limit_samples(setup.test, args.test_limit, seed=0) if args.test_limit else setup.test
    teachers, names = setup.teachers, setup.teacher_names
    teacher_acc = [100 * evaluate_ensemble([t], test, setup.norm, args.device)["acc"] for t in teachers]
    ensemble_acc = 100 * evaluate_ensemble(teachers, test, setup.norm, args.device)["acc"]
    selection = setup.selection or teacher_acc
    best = max(range(len(teachers)), key=lambda i: selection[i])
    chosen_by = "test accuracy" if setup.selection is None else \
        "validation accuracy " + ", ".join(f"{a:.2f}" for a in setup.selection)
    weights = args.weights or setup.weights
    print("teachers: " + ", ".join(f"{n} {a:.2f} %" for n, a in zip(names, teacher_acc, strict=True))
          + f"; ensemble {ensemble_acc:.2f} %; best {names[best]} (by {chosen_by}); weights "
          + ", ".join(f"{w:.3g}" for w in weights) + f" ({time.time() - started:.0f} s)", flush=True)
    stacked = StackedTeachers(teachers).eval()
    one_hot = [1.0 if i == best else 0.0 for i in range(len(teachers))]
    aggregators = {
        "kd-best": WeightedAggregator(one_hot, temperature=TEMPERATURE),
        "ensemble-mean": MeanAggregator(temperature=TEMPERATURE),
        "ensemble-weighted": WeightedAggregator(weights, temperature=TEMPERATURE),
        "ensemble-confidence": ConfidenceAggregator(temperature=TEMPERATURE),
    }

    scores: dict[str, list[float]] = defaultdict(list)
    cost: dict[str, int] = {}
    seconds: dict[str, list[float]] = defaultdict(list)
    work_context = tempfile.TemporaryDirectory(prefix="kdistill-strategies-") if not args.work_dir else None
    work = Path(args.work_dir or work_context.name)

    def score(model_or_models) -> float:
        models = model_or_models if isinstance(model_or_models, list) else [model_or_models]
        return 100 * evaluate_ensemble(models, test, setup.norm, args.device)["acc"]

    def record(row: str, value: float, student_epochs: int) -> None:
        scores[row].append(value)
        cost[row] = student_epochs
        print(f"  {row}: {value:.2f} % ({time.time() - started:.0f} s)", flush=True)

    try:
        for seed in args.seeds:
            train = limit_samples(setup.train, args.train_limit, seed=seed)
            common = training_settings(seed, setup.augment(seed), setup.norm, args.device)
            cache = None if args.no_cache else CacheSettings(directory=work / "cache", dtype="float32",
                                                             views=args.epochs)
            seed_dir = work / f"seed-{seed}"
            make_student = setup.make_student

            print(f"seed {seed}", flush=True)
            for variant in args.variants:  # interleaved: every variant sees the same machine state per seed
                tick = time.time()
                if variant == "scratch" or variant in aggregators:
                    torch.manual_seed(seed)  # same initial student for scratch, KD and the ensembles
                    student = make_student()
                    teacher = None if variant == "scratch" else stacked
                    distiller = Distiller(
                        teacher, student, [HardLabel()] if teacher is None else kd(),
                        teacher_normalization=setup.norm if teacher is not None else None,
                        teacher_aggregator=Unstack(aggregators[variant], len(teachers)) if teacher is not None
                        else None,
                        teacher_cache=cache if teacher is not None else None, description=variant, **common)
                    distiller.fit(train, epochs=args.epochs)
                    row = {"scratch": "scratch", "kd-best": f"KD from {names[best]}"}.get(
                        variant, f"KD from 4 teachers, {variant.removeprefix('ensemble-')}")
                    record(row, score(student), 1)
                elif variant == "born-again":
                    result = born_again(make_student, train, None, args.generations, seed_dir / "born-again",
                                        epochs=args.epochs, methods_factory=kd_methods, distiller_kwargs=common)
                    for k, model in enumerate(result.generations, start=1):
                        record(f"born-again generation {k}", score(model), k)
                    record(f"born-again ensemble of generations 1-{args.generations}", score(result.generations),
                           args.generations)
                elif variant == "mutual":
                    cohort, _ = mutual_learning(make_student, train, None, args.epochs, peers=2,
                                                distiller_kwargs=common)
                    peers = list(cohort.peers)
                    record("mutual learning, peer (mean of the 2)", statistics.mean(score(p) for p in peers), 2)
                    record("mutual learning, 2-peer ensemble", score(peers), 2)
                elif variant == "assistant":
                    result = teacher_assistant_chain(
                        stacked, [setup.make_assistant], make_student, train, None,
                        seed_dir / "assistant", epochs=args.epochs, teacher_normalization=setup.norm,
                        teacher_aggregator=Unstack(aggregators["kd-best"], len(teachers)), methods_factory=kd_methods,
                        distiller_kwargs={**common, "teacher_cache": cache} if cache is not None else common)
                    assistant_cost = max(1, round(sum(p.numel() for p in result.assistants[0].parameters())
                                                  / sum(p.numel() for p in result.student.parameters())))
                    record(f"TA: assistant {setup.assistant} (from {names[best]})", score(result.assistants[0]),
                           assistant_cost)
                    record(f"TA: student via {setup.assistant}", score(result.student), 1 + assistant_cost)
                seconds[variant].append(time.time() - tick)
    finally:
        if work_context is not None:
            work_context.cleanup()

    scratch = statistics.mean(scores["scratch"]) if scores.get("scratch") else None
    rows = [[f"teacher {n} ({setup.teacher_note})", f"{a:.2f}", "", ""]
            for n, a in zip(names, teacher_acc, strict=True)]
    rows.append(["ensemble of the 4 teachers", f"{ensemble_acc:.2f}", "", ""])
    for row, values in scores.items():
        delta = f"{statistics.mean(values) - scratch:+.2f}" if scratch is not None else ""
        rows.append([f"{setup.student} {row}", mean_std(values), delta, str(cost[row])])
    print()
    print(f"{setup.title} test accuracy % ({len(test)} test images), last epoch; {setup.student} student, "
          f"{args.train_limit} training images, {args.epochs} epochs, seeds {args.seeds}; {machine()}; "
          f"{time.time() - started:.0f} s")
    print(markdown_table(["model", "test acc % (mean +- std)", "vs scratch", "training (student runs)"], rows))
    print()
    print("seconds per seed: " + ", ".join(f"{v} {statistics.mean(s):.0f}" for v, s in seconds.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"dataset": args.dataset, "teachers": dict(zip(names, teacher_acc, strict=True)),
                       "teacher_ensemble": ensemble_acc, "best_teacher": names[best],
                       "teacher_selection": dict(zip(names, setup.selection, strict=True)) if setup.selection
                       else "test accuracy", "weights": weights,
                       "results": scores, "seconds": seconds, "args": vars(args)}, handle, indent=2)


if __name__ == "__main__":
    main()
