"""CIFAR-10 (JPEG copy): a born-again student that beats its own teacher (Furlanello et al. 2018).

The teacher is the scratch resnet8 of `cifar10_methods.py` (seed 0: labels only, 20 epochs, the
same recipe); each born-again student is a fresh resnet8 with the same architecture, recipe,
budget and augmentation, trained on the teacher's temperature-softened outputs mixed with the
labels (mdistiller's KD settings, as in the methods table: T 4, 0.9 soft, 0.1 hard). The teacher's
logits are cached with one view per epoch (the crops and flips every student sees). Students use
seeds 10, 11, 12 so that none shares the teacher's initial weights or data order.

The claim tested: a student that learns from a network of its own size can end up more accurate
than that network, on the test set, over 3 seeds.

    python benchmarks/cifar10_born_again.py [--seeds 10 11 12] [--threads 1]
    python benchmarks/table.py cifar10_born_again
"""

from __future__ import annotations

import argparse

import torch
from _common import REPO, keep_freed_memory, shared_data
from _records import WORK, Records, Timer, train_seconds
from cifar10_methods import BENCHMARK as METHODS_BENCHMARK
from cifar10_methods import CE, KD, accuracy, fit, make_distiller, recipe
from table import render

from kdistill.data import load_image_folder_bundle
from kdistill.digest import model_digest
from kdistill.engine.cache import CacheSettings
from kdistill.evaluate import count_parameters, cpu_latency_ms
from kdistill.methods import build_method
from kdistill.models import build_model

BENCHMARK = "cifar10_born_again"
TEACHER_SEED = 0


def teacher_config(epochs: int, model: str, train_samples: int) -> dict:
    """The scratch variant's config in cifar10_methods.py, so its recorded run is this teacher."""
    return {**recipe(epochs), "student": model, "methods": [CE], "train_samples": train_samples}


def prepare_teacher(bundle, norm, model: str, epochs: int):
    """The methods benchmark's scratch student (seed 0), trained there or here in the same run dir."""
    methods_records = Records(METHODS_BENCHMARK)
    config = teacher_config(epochs, model, len(bundle.train))
    kept = REPO / "benchmarks" / "artifacts" / f"{BENCHMARK}-teacher-{model}-seed{TEACHER_SEED}.pt"
    teacher = build_model(model, 10, (3, 32, 32))
    if kept.exists():
        teacher.load_state_dict(torch.load(kept, weights_only=True))
    else:
        torch.manual_seed(TEACHER_SEED)
        trainer = make_distiller(None, teacher, [build_method("hard_label", {})], config, TEACHER_SEED, norm,
                                 description="scratch (the born-again teacher)",
                                 run_name=f"scratch-seed{TEACHER_SEED}")
        fit(trainer, bundle.train, epochs)  # the methods benchmark's run dir: a finished run is loaded
        kept.parent.mkdir(parents=True, exist_ok=True)
        torch.save(teacher.state_dict(), kept)
    found = accuracy(teacher, norm, bundle.test)
    recorded = methods_records.find("scratch", TEACHER_SEED, config)
    if recorded is not None and abs(recorded["metrics"]["test_acc"] - found) > 1e-6:
        raise SystemExit(f"teacher: {found:.2f} % here but {recorded['metrics']['test_acc']:.2f} % recorded in "
                         f"{METHODS_BENCHMARK}; the weights are not that run's")
    print(f"teacher {model} (scratch seed {TEACHER_SEED}): {found:.2f} % on the test set", flush=True)
    return teacher.eval(), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    bundle = load_image_folder_bundle(shared_data() / "cifar10-jpeg.tar.gz")
    norm = (bundle.mean, bundle.std)
    teacher, teacher_acc = prepare_teacher(bundle, norm, args.model, args.epochs)
    teacher_record = {**teacher_config(args.epochs, args.model, len(bundle.train)), "role": "teacher",
                      "teacher_digest": model_digest(teacher)}
    if not records.find("teacher (scratch)", TEACHER_SEED, teacher_record):
        latency = cpu_latency_ms(teacher, torch.randn(1, 3, 32, 32))
        records.append("teacher (scratch)", TEACHER_SEED, teacher_record, {"test_acc": teacher_acc}, 0.0,
                       params=count_parameters(teacher), latency_ms_b1=latency,
                       notes=[f"the scratch seed-{TEACHER_SEED} run of {METHODS_BENCHMARK}; not trained here"])
    cache = CacheSettings(WORK / BENCHMARK / "cache", dtype="float16")
    for seed in args.seeds:
        config = {**recipe(args.epochs), "student": args.model, "methods": KD, "train_samples": len(bundle.train),
                  "teacher": f"{args.model} scratch seed {TEACHER_SEED}", "teacher_digest": model_digest(teacher),
                  "teacher_source": "cache"}
        variant = "born-again (KD from the teacher)"
        if records.find(variant, seed, config):
            continue
        torch.manual_seed(seed)
        student = build_model(args.model, 10, (3, 32, 32))
        methods = [build_method(s["name"], {k: v for k, v in s.items() if k != "name"}) for s in KD]
        with Timer() as timer:
            distiller = make_distiller(teacher, student, methods, config, seed, norm, cache,
                                       f"born-again seed {seed}", run_name=f"born-again-seed{seed}")
            # (run dirs live beside the methods benchmark's, under its work folder)
            fit(distiller, bundle.train, args.epochs)
        found = accuracy(student, norm, bundle.test)
        last = distiller.history[-1]
        records.append(variant, seed, config, {"test_acc": found, "train_acc": 100 * last["train/acc"],
                                               "teacher_test_acc": teacher_acc},
                       timer.seconds, params=count_parameters(student),
                       latency_ms_b1=cpu_latency_ms(student, torch.randn(1, 3, 32, 32)),
                       notes=distiller.notes, train_seconds=train_seconds(distiller.history))
        print(f"{variant} seed {seed}: {found:.2f} % (teacher {teacher_acc:.2f} %; {timer.seconds:.0f} s)",
              flush=True)
    print(render(BENCHMARK))


if __name__ == "__main__":
    main()
