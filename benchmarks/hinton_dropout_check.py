"""Why a teacher-size student distilled at T = 20 lost to its teacher on MNIST: dropout or the cache?

A diagnostic, not a table: the Hinton benchmark's teacher (784-1200-1200, trained there) teaches a
student of its own size for 10 epochs (the benchmark's optimiser and per-step schedule, +-2 px
jitter, seed 0), once per variant: the teacher's own recipe on labels alone, KD at T = 20 with the
teacher cached and live (the same run twice: they must agree to the last digit), KD at T = 4, and
KD at T = 20 without dropout. Prints test errors per variant.

    python benchmarks/hinton_dropout_check.py [hard cached live t4 nodrop] [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _common import shared_data
from _records import WORK

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import load_mnist_bundle
from kdistill.data.transforms import Augment
from kdistill.engine.cache import CacheSettings
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

TEACHER = {"hidden": [1200, 1200], "dropout": 0.5, "input_dropout": 0.2}
VARIANTS = {  # name -> (description, temperature or None for labels only, cached, architecture)
    "hard": ("hard labels only, with dropout (the teacher's recipe)", None, False, TEACHER),
    "cached": ("KD T 20, with dropout, teacher cached", 20.0, True, TEACHER),
    "live": ("KD T 20, with dropout, teacher live", 20.0, False, TEACHER),
    "t4": ("KD T 4, with dropout, teacher live", 4.0, False, TEACHER),
    "nodrop": ("KD T 20, no dropout, teacher live", 20.0, False, {"hidden": TEACHER["hidden"]}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_mnist_bundle(shared_data() / "mnist")
    teacher = build_model("mlp", 10, (1, 28, 28), TEACHER)
    teacher.load_state_dict(torch.load(WORK / "hinton_mnist" / "teacher-120ep.pt", weights_only=True))
    teacher.eval()
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in args.variants:
            description, temperature, cached, architecture = VARIANTS[name]
            torch.manual_seed(0)
            student = build_model("mlp", 10, (1, 28, 28), architecture)
            methods = [HardLabel()] if temperature is None else \
                [SoftTarget(weight=0.9, temperature=temperature), HardLabel(weight=0.1)]
            distiller = Distiller(teacher if temperature is not None else None, student, methods,
                                  optimizer=OptimizerSettings(name="adamw", lr=1e-3, weight_decay=0.0),
                                  schedule=ScheduleSettings(name="cosine", warmup_steps=500), batch_size=128,
                                  drop_last=True, seed=0, augment=Augment(crop_padding=2, seed=0), progress=False,
                                  teacher_cache=CacheSettings(cache_dir, dtype="float32") if cached else None)
            started = time.perf_counter()
            distiller.fit(bundle.train, epochs=args.epochs)
            errors = round((1 - distiller.evaluate(bundle.test)["acc"]) * len(bundle.test))
            last = {k: round(v, 6) for k, v in distiller.history[-1].items() if k.startswith("train/")}
            print(f"{description}: {errors} test errors; last epoch {last} ({time.perf_counter() - started:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
