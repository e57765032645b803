"""CIFAR-10 methods: loss-weight sweeps on a validation split, never the test set.

Issue 8 asks, where DIST or CRD ends below KD, for a measured explanation rather than a tuned
test number. This holds out a stratified 10 % of the 50,000 training images (seed 0) as the
validation split, trains resnet8 on the other 45,000 with exactly the recipe, teacher and
augmentation of `cifar10_methods.py`, and records the validation accuracy of KD (the reference)
and of DIST and CRD at half, once and twice the authors' loss weight. If the authors' weight is
not the best on validation, the methods table's gap to KD is a weight question; if no weight
reaches KD, it is not. CRD is also run with negatives drawn from other classes only, as its
authors' CIFAR data loader does, and with a queue of recent keys instead of the per-sample memory
(is the memory too stale in 20 epochs?). AT ended below scratch on the methods table's seed 0, so AT at 100, 300
and 1,000 (the authors') is swept too, against scratch on the same split (AT runs the teacher
live: its three stages are too large to cache for 20 views).

    python benchmarks/cifar10_sweep.py [--epochs 20] [--variants ...] [--threads 1]
    python benchmarks/cifar10_sweep.py --epochs 10 --variants KD  # another budget: rows "KD (10 epochs)", ...
    python benchmarks/cifar10_sweep.py --epochs 40 --variants scratch "AT 1000"  # AT's rows against scratch's
    python benchmarks/table.py cifar10_sweep --baseline KD
"""

from __future__ import annotations

import argparse

import torch
from _common import keep_freed_memory, shared_data
from _records import WORK, Records, Timer, config_digest, train_seconds
from cifar10_methods import AT, CACHE_TAPS, CE, KD, fit, make_distiller, prepare_teacher, recipe
from table import render

from kdistill.data import limit_samples, load_image_folder_bundle, split_validation
from kdistill.digest import model_digest
from kdistill.engine.cache import CacheSettings
from kdistill.methods import build_method
from kdistill.models import build_model

BENCHMARK = "cifar10_sweep"
VAL_FRACTION, VAL_SEED = 0.1, 0
SWEEP_SEED = 0
CACHE_VIEWS = 20  # the default budget's views: 20 epochs, one teacher view each


def dist(weight: float) -> list[dict]:
    return [CE, {"name": "dist", "beta": weight, "gamma": weight, "temperature": 4}]


def crd(weight: float, **options: str) -> list[dict]:
    return [CE, {"name": "crd", "student_layer": "linear:input", "teacher_layer": "linear:input", "weight": weight,
                 "feature_dim": 128, "num_negatives": 16384, "nce_temperature": 0.07, "momentum": 0.5, **options}]


def attention(weight: float) -> list[dict]:
    return [CE, {**AT, "weight": weight}]


# the authors' weights are DIST beta = gamma = 2, CRD 0.8 and AT 1,000 (see cifar10_methods.VARIANTS)
VARIANTS: dict[str, list[dict]] = {
    "KD": KD,
    "DIST beta=gamma=1": dist(1.0), "DIST beta=gamma=2": dist(2.0), "DIST beta=gamma=4": dist(4.0),
    "CRD 0.4": crd(0.4), "CRD 0.8": crd(0.8), "CRD 1.6": crd(1.6),
    # CRD's CIFAR loader draws negatives from other classes only: 10 % of all-sample negatives are
    # same-class on CIFAR-10 (1 % on the CIFAR-100 CRD was tuned on)
    "CRD 0.8 other-class negatives": crd(0.8, negatives="other_classes"),
    # staleness: in 20 epochs each dataset-memory row is refreshed 20 times (240 in the authors' runs)
    # and the first epoch only fills the memory; a MoCo queue holds the last 16,384 keys (a third of an
    # epoch old at most) and contrasts from the first step
    "CRD 0.8 other-class negatives, queue": crd(0.8, negatives="other_classes", memory="queue"),
    # the weight question for the authors' negatives (all-sample: 0.4 / 0.8 / 1.6 within 0.3 points)
    "CRD 1.6 other-class negatives": crd(1.6, negatives="other_classes"),
    # the reference's own objective (NCE with a fixed normaliser) instead of InfoNCE
    "CRD 0.8 other-class negatives, NCE": crd(0.8, negatives="other_classes", objective="nce"),
    "scratch": [CE], "AT 100": attention(100), "AT 300": attention(300), "AT 1000": attention(1000),
}


def teacher_source(specs: list[dict]) -> str | None:
    """None (labels only), "live" (attention transfer: layer1-3 are too large to cache) or "cache"."""
    names = {spec["name"] for spec in specs}
    if names == {"hard_label"}:
        return None
    return "live" if "attention_transfer" in names else "cache"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-limit", type=int, help="a seeded subset (smoke checks only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    bundle = load_image_folder_bundle(shared_data() / "cifar10-jpeg.tar.gz")
    norm = (bundle.mean, bundle.std)
    # the methods benchmark's teacher (its record and kept weights; fine-tuned on all 50,000: the
    # students below never see the held-out images, so its knowing them reaches no student)
    teacher = prepare_teacher(Records("cifar10_methods"), bundle, norm, "resnet20", 4, 0.02)
    train, val = split_validation(bundle.train, VAL_FRACTION, seed=VAL_SEED)
    if args.train_limit:
        train = limit_samples(train, args.train_limit, seed=0)
    records = Records(BENCHMARK)
    # one view per epoch at the default budget; another budget reads the same 20 views (a shorter run the
    # first ones, a longer one replays them in a cycle, which its notes say) rather than building 16 GB more
    cache = CacheSettings(WORK / BENCHMARK / "cache", dtype="float16", features=True, extra_taps=CACHE_TAPS,
                          views=CACHE_VIEWS)
    for name in args.variants:
        specs = VARIANTS[name]
        # another budget is another row: the table shows one config per variant
        variant = name if args.epochs == CACHE_VIEWS else f"{name} ({args.epochs} epochs)"
        source = teacher_source(specs)
        config = {**recipe(args.epochs), "student": "resnet8", "methods": specs, "train_samples": len(train),
                  "val_fraction": VAL_FRACTION, "val_seed": VAL_SEED}
        if source is not None:  # (the DIST, CRD and KD records keep their digests: same keys as before)
            config.update(teacher="resnet20", teacher_digest=model_digest(teacher), teacher_source=source)
        if records.find(variant, SWEEP_SEED, config):
            continue
        torch.manual_seed(SWEEP_SEED)
        student = build_model("resnet8", 10, (3, 32, 32))
        methods = [build_method(s["name"], {k: v for k, v in s.items() if k != "name"}) for s in specs]
        with Timer() as timer:
            distiller = make_distiller(teacher if source else None, student, methods, config, SWEEP_SEED, norm,
                                       cache if source == "cache" else None, variant,
                                       run_name=f"sweep-{variant.replace(' ', '_')}")
            fit(distiller, train, args.epochs)
        found = 100 * distiller.evaluate(val)["acc"]
        # another budget's rows are compared with the same budget's reference, not with a 20-epoch run:
        # attention transfer with scratch (the question is AT against the labels alone), the rest with KD
        reference = "scratch" if source == "live" else "KD"
        baseline = {} if args.epochs == CACHE_VIEWS else {"baseline": f"{reference} ({args.epochs} epochs)"}
        records.append(variant, SWEEP_SEED, config, {"val_acc": found}, timer.seconds, notes=distiller.notes,
                       train_seconds=train_seconds(distiller.history), **baseline)
        print(f"{variant}: {found:.2f} % on the validation split ({timer.seconds:.0f} s; {config_digest(config)})",
              flush=True)
    print(render(BENCHMARK, baseline="KD"))


if __name__ == "__main__":
    main()
