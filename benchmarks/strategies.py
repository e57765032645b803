"""CIFAR-10 (JPEG copy): who teaches whom. One student architecture, the same epochs throughout.

Rows (last-epoch test accuracy, mean +- std over seeds):
- the four pretrained ResNets (20/32/44/56) and their ensemble (mean of probabilities);
- the student from scratch; by KD from the single best teacher; by KD from the four-teacher
  ensemble under each aggregation (mean, weighted, confidence = CA-MKD's per-sample weights);
- born-again generations 1-3 (generation 1 from labels, k+1 from k, KD recipe below) and the
  ensemble of the three generations;
- deep mutual learning of two students (each peer, and the two as an ensemble);
- a teacher-assistant chain: best teacher -> assistant (resnet14 by default) -> student.
KD everywhere is 0.9 * KL at T = 4 + 0.1 * CE (aggregators at the same T); SGD 0.05, momentum 0.9,
wd 5e-4, cosine, batch 64, crop + flip. The "training" column counts what a row costs in runs
of the student (teacher forward passes not counted): BAN generation k includes the generations
before it, mutual learning trains two students, the TA row includes the assistant (counted by its
parameter count relative to the student's). Sized for a 2-core CPU: a seeded subset of the training set and a short
schedule (see --train-limit / --epochs); absolute numbers are far below full-schedule CIFAR
figures, the comparison between rows is what the table is for.

The four teachers run as one module (their logits concatenated) so that one teacher-output cache
per seed, with one augmented view per epoch (exactly the inputs the uncached loop would give them),
serves the single-teacher, the three ensemble rows and the TA chain's first stage; the single best
teacher is the 'weighted' aggregation with a one-hot weight (the same soft targets, exactly).

    python benchmarks/strategies.py [--student resnet8] [--assistant resnet14] [--train-limit 5000]
        [--epochs 5] [--seeds 0 1 2] [--variants ...] [--test-limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from _common import keep_freed_memory, machine, markdown_table, mean_std, shared_data
from torch import nn

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import limit_samples, load_image_folder_bundle
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--assistant", default="resnet14")
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on a seeded subset (smoke runs)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--weights", type=float, nargs=4, default=[20, 32, 44, 56],
                        help="the 'weighted' aggregation's teacher weights (default: proportional to depth)")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--no-cache", action="store_true", help="run the teachers at every step instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", help="stage folders and caches (default: a temporary directory)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    keep_freed_memory()
    root = shared_data()
    started = time.time()
    bundle = load_image_folder_bundle(root / "cifar10-jpeg.tar.gz")
    test = limit_samples(bundle.test, args.test_limit, seed=0) if args.test_limit else bundle.test
    shape = (3, 32, 32)
    teachers = [load_weights(build_model(name, 10, shape), root / "teachers" / f"cifar10-{name}.th")
                for name in TEACHERS]
    check_teachers(teachers, bundle.num_classes, shape)
    for teacher in teachers:
        teacher.eval()
    teacher_acc = [100 * evaluate_ensemble([t], test, NORM, args.device)["acc"] for t in teachers]
    ensemble_acc = 100 * evaluate_ensemble(teachers, test, NORM, args.device)["acc"]
    best = max(range(len(teachers)), key=lambda i: teacher_acc[i])
    print("teachers: " + ", ".join(f"{n} {a:.2f} %" for n, a in zip(TEACHERS, teacher_acc, strict=True))
          + f"; ensemble {ensemble_acc:.2f} %; best {TEACHERS[best]} ({time.time() - started:.0f} s)", flush=True)
    stacked = StackedTeachers(teachers).eval()
    one_hot = [1.0 if i == best else 0.0 for i in range(len(teachers))]
    aggregators = {
        "kd-best": WeightedAggregator(one_hot, temperature=TEMPERATURE),
        "ensemble-mean": MeanAggregator(temperature=TEMPERATURE),
        "ensemble-weighted": WeightedAggregator(args.weights, temperature=TEMPERATURE),
        "ensemble-confidence": ConfidenceAggregator(temperature=TEMPERATURE),
    }

    scores: dict[str, list[float]] = defaultdict(list)
    cost: dict[str, int] = {}
    seconds: dict[str, list[float]] = defaultdict(list)
    work_context = tempfile.TemporaryDirectory(prefix="kdistill-strategies-") if not args.work_dir else None
    work = Path(args.work_dir or work_context.name)

    def score(model_or_models) -> float:
        models = model_or_models if isinstance(model_or_models, list) else [model_or_models]
        return 100 * evaluate_ensemble(models, test, NORM, args.device)["acc"]

    def record(row: str, value: float, student_epochs: int) -> None:
        scores[row].append(value)
        cost[row] = student_epochs
        print(f"  {row}: {value:.2f} % ({time.time() - started:.0f} s)", flush=True)

    try:
        for seed in args.seeds:
            train = limit_samples(bundle.train, args.train_limit, seed=seed)
            common = {
                "optimizer": OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                "schedule": ScheduleSettings(name="cosine"), "batch_size": 64, "seed": seed,
                "augment": Augment(crop_padding=4, horizontal_flip=True, seed=seed),
                "student_normalization": NORM, "progress": False, "device": args.device,
            }
            cache = None if args.no_cache else CacheSettings(directory=work / "cache", dtype="float32",
                                                             views=args.epochs)
            seed_dir = work / f"seed-{seed}"

            def make_student() -> nn.Module:
                return build_model(args.student, 10, shape)

            print(f"seed {seed}", flush=True)
            for variant in args.variants:  # interleaved: every variant sees the same machine state per seed
                tick = time.time()
                if variant == "scratch" or variant in aggregators:
                    torch.manual_seed(seed)  # same initial student for scratch, KD and the ensembles
                    student = make_student()
                    teacher = None if variant == "scratch" else stacked
                    distiller = Distiller(
                        teacher, student, [HardLabel()] if teacher is None else kd(),
                        teacher_normalization=NORM if teacher is not None else None,
                        teacher_aggregator=Unstack(aggregators[variant], len(teachers)) if teacher is not None
                        else None,
                        teacher_cache=cache if teacher is not None else None, description=variant, **common)
                    distiller.fit(train, epochs=args.epochs)
                    row = {"scratch": "scratch", "kd-best": f"KD from {TEACHERS[best]}"}.get(
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
                        stacked, [lambda: build_model(args.assistant, 10, shape)], make_student, train, None,
                        seed_dir / "assistant", epochs=args.epochs, teacher_normalization=NORM,
                        teacher_aggregator=Unstack(aggregators["kd-best"], len(teachers)), methods_factory=kd_methods,
                        distiller_kwargs={**common, "teacher_cache": cache} if cache is not None else common)
                    assistant_cost = max(1, round(sum(p.numel() for p in result.assistants[0].parameters())
                                                  / sum(p.numel() for p in result.student.parameters())))
                    record(f"TA: assistant {args.assistant} (from {TEACHERS[best]})", score(result.assistants[0]),
                           assistant_cost)
                    record(f"TA: student via {args.assistant}", score(result.student), 1 + assistant_cost)
                seconds[variant].append(time.time() - tick)
    finally:
        if work_context is not None:
            work_context.cleanup()

    scratch = statistics.mean(scores["scratch"]) if scores.get("scratch") else None
    rows = [[f"teacher {n} (pretrained)", f"{a:.2f}", "", ""] for n, a in zip(TEACHERS, teacher_acc, strict=True)]
    rows.append(["ensemble of the 4 teachers", f"{ensemble_acc:.2f}", "", ""])
    for row, values in scores.items():
        delta = f"{statistics.mean(values) - scratch:+.2f}" if scratch is not None else ""
        rows.append([f"{args.student} {row}", mean_std(values), delta, str(cost[row])])
    print()
    print(f"CIFAR-10 JPEG test accuracy % ({len(test)} test images), last epoch; {args.student} student, "
          f"{args.train_limit} training images, {args.epochs} epochs, seeds {args.seeds}; {machine()}; "
          f"{time.time() - started:.0f} s")
    print(markdown_table(["model", "test acc % (mean +- std)", "vs scratch", "training (student runs)"], rows))
    print()
    print("seconds per seed: " + ", ".join(f"{v} {statistics.mean(s):.0f}" for v, s in seconds.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"teachers": dict(zip(TEACHERS, teacher_acc, strict=True)), "teacher_ensemble": ensemble_acc,
                       "results": scores, "seconds": seconds, "args": vars(args)}, handle, indent=2)


if __name__ == "__main__":
    main()
