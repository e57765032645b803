"""Epoch time of distillation with and without the teacher-output cache, against the student alone.

For each pair, three variants train the same student for two epochs on the same data (no
augmentation): the student alone (labels only), distillation running the teacher every step,
and distillation from the cache (built in epoch 1, read in epoch 2). The second epoch's time is
compared; each variant runs in its own process so its peak memory (max RSS) is its own. The pair
`mlp-ensemble` has three MLP teachers: every step runs all three (mean aggregator), the cache holds
their mixture once (`TeacherEnsemble`).

    python benchmarks/speed.py [--pairs mlp resnet mlp-ensemble] [--train-limit 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import keep_freed_memory, machine, markdown_table, shared_data

from kdistill import Distiller, OptimizerSettings
from kdistill.data import limit_samples, load_image_folder_bundle, load_mnist_bundle
from kdistill.engine.cache import CacheSettings
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model, load_weights
from kdistill.strategies import MeanAggregator, TeacherEnsemble

VARIANTS = ("student only", "distill, teacher every step", "distill, cached teacher")


def load_pair(pair: str, train_limit: int):
    root = shared_data()
    torch.manual_seed(0)
    if pair in ("mlp", "mlp-ensemble"):
        bundle = load_mnist_bundle(root / "mnist")
        teacher = build_model("mlp", 10, (1, 28, 28), {"hidden": [1200, 1200]})
        if pair == "mlp-ensemble":
            teacher = [teacher] + [build_model("mlp", 10, (1, 28, 28), {"hidden": [1200, 1200]}) for _ in range(2)]
        student = build_model("mlp", 10, (1, 28, 28), {"hidden": [800, 800]})
        return bundle, bundle.train, teacher, student, 128
    bundle = load_image_folder_bundle(root / "cifar10-jpeg.tar.gz")
    teacher = load_weights(build_model("resnet56", 10, (3, 32, 32)), root / "teachers" / "cifar10-resnet56.th")
    student = build_model("resnet20", 10, (3, 32, 32))
    return bundle, limit_samples(bundle.train, train_limit, seed=0), teacher, student, 64


def run_one(pair: str, variant: str, train_limit: int, cache_dir: Path) -> dict:
    import resource

    keep_freed_memory()
    bundle, train, teacher, student, batch = load_pair(pair, train_limit)
    norm = (bundle.mean, bundle.std)
    distill = variant != "student only"
    cache = CacheSettings(cache_dir, dtype="float16") if variant == "distill, cached teacher" else None
    aggregator, teacher_norm = None, norm if distill else None
    if distill and isinstance(teacher, list):  # several teachers: one mixture, cached as one model or run every step
        if cache is not None:
            teacher = TeacherEnsemble(teacher, temperature=4.0)
        else:
            aggregator, teacher_norm = MeanAggregator(temperature=4.0), [norm] * len(teacher)
    distiller = Distiller(teacher if distill else None, student,
                          [SoftTarget(0.9, 4.0), HardLabel(0.1)] if distill else [HardLabel()],
                          optimizer=OptimizerSettings(name="sgd", lr=0.05), batch_size=batch, progress=False,
                          device="cpu", student_normalization=norm, teacher_normalization=teacher_norm,
                          teacher_aggregator=aggregator, teacher_cache=cache)
    started = time.perf_counter()
    history = distiller.fit(train, epochs=2)
    total = time.perf_counter() - started
    return {"epoch2_s": history[1]["epoch_time_s"], "total_s": total,
            "cache_bytes": distiller.cache.size_bytes() if distiller.cache else 0,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "samples": len(train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["mlp", "resnet"], choices=["mlp", "resnet", "mlp-ensemble"])
    parser.add_argument("--train-limit", type=int, default=5000, help="CIFAR-10 training images for the ResNet pair")
    parser.add_argument("--one", nargs=2, metavar=("PAIR", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.train_limit, Path(args.cache_dir))))
        return
    rows = []
    for pair in args.pairs:
        results = {}
        with tempfile.TemporaryDirectory() as cache_dir:
            for variant in VARIANTS:
                out = subprocess.run([sys.executable, __file__, "--one", pair, variant, "--train-limit",
                                      str(args.train_limit), "--cache-dir", cache_dir],
                                     capture_output=True, text=True, check=True)
                results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
                print(pair, variant, results[variant], flush=True)
        alone = results["student only"]["epoch2_s"]
        uncached = results["distill, teacher every step"]["epoch2_s"]
        cached = results["distill, cached teacher"]
        rows.append([
            f"{pair} ({results['student only']['samples']} samples)", f"{alone:.1f}", f"{uncached:.1f}",
            f"{cached['epoch2_s']:.1f}", f"{cached['epoch2_s'] / alone:.2f}", f"{uncached / cached['epoch2_s']:.2f}",
            f"{cached['cache_bytes'] / 2**20:.1f}",
            " / ".join(f"{results[v]['max_rss_mib']:.0f}" for v in VARIANTS),
        ])
    print(f"\nsecond-epoch wall time, seconds; {machine()}")
    print(markdown_table(["pair", "student only s", "teacher every step s", "cached s", "cached / student only",
                          "uncached / cached", "cache MiB (fp16)", "peak RSS MiB (alone / uncached / cached)"], rows))


if __name__ == "__main__":
    main()
