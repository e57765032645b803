"""CRD's objective and memory start on real CNN features: which of them collapse the memories.

kdistill's CRD uses InfoNCE with memories that start empty; CRD's reference code uses NCE with a
normaliser Z fixed on its first batch and memories that start as random vectors (issue 8 lists
both as candidate reasons for CRD's gap to KD on CIFAR-10). This runs the set-up of
tests/test_crd_collapse.py (scikit-learn's digits, a small CNN teacher trained for 5 epochs, a
smaller CNN student, CE + CRD at the authors' settings but K = 512 for the 1,212 training images,
12 epochs, SGD 0.05 with cosine) for the four combinations and a CE-only student, over 3 student
seeds, and records the memories' mean pairwise cosine (1 = every row points the same way; the raw
penultimate features sit at 0.7-0.75), the CRD term's last / first active epoch, and test accuracy.

    python benchmarks/crd_objectives.py [--seeds 0 1 2] [--threads 1]
    python benchmarks/crd_objectives.py --table   # memories and accuracy, from the records
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import markdown_table
from _records import Records, Timer, load
from table import cell, latest_runs

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import load_digits_bundle, split_validation
from kdistill.methods import CRD, HardLabel
from kdistill.models import build_model

BENCHMARK = "crd_objectives"
EPOCHS, TEACHER_EPOCHS, NEGATIVES = 12, 5, 512
TEACHER = {"model": "cnn", "channels": (32, 64), "seed": 0}
STUDENT = {"model": "cnn", "channels": (8, 16)}
# variant -> (objective, memory start); None: no CRD term
VARIANTS: dict[str, tuple[str, str] | None] = {
    "scratch": None,
    "InfoNCE, empty memory (kdistill)": ("info_nce", "empty"),
    "InfoNCE, random memory": ("info_nce", "random"),
    "NCE, empty memory": ("nce", "empty"),
    "NCE, random memory (reference)": ("nce", "random"),
}


class RandomStartCRD(CRD):
    """CRD whose memories start as random unit rows, as the reference's do (uniform in a cube,
    then normalised; the reference leaves them unnormalised until first written)."""

    def build(self, ctx) -> None:
        super().build(ctx)
        generator = torch.Generator().manual_seed(0)
        for memory in (self.memory_s, self.memory_t):
            memory.copy_(F.normalize(torch.rand(memory.shape, generator=generator) * 2 - 1, dim=1))


def mean_pairwise_cosine(rows: torch.Tensor) -> float:
    rows = F.normalize(rows[rows.ne(0).any(dim=1)].double(), dim=1)
    n, total = len(rows), rows.sum(dim=0)
    return float((total @ total - n) / (n * (n - 1)))


def table() -> str:
    """Per variant (mean +- std over the recorded seeds): both memories' mean pairwise cosine, the CRD
    term's last / first active epoch, test accuracy."""
    runs, notes = latest_runs(load(BENCHMARK))
    keys = ("memory_s_cosine", "memory_t_cosine", "crd_last_over_first", "test_acc")
    rows = [[variant, *(cell([r["metrics"][k] for r in found if k in r["metrics"]], 3 if k != "test_acc" else 2)
                        for k in keys), str(len(found))] for variant, found in runs.items()]
    header = ["variant", "student memory cosine", "teacher memory cosine", "CRD term last / first", "test_acc", "n"]
    return "\n".join([markdown_table(header, rows), *notes])


def sgd() -> OptimizerSettings:
    return OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the table of the records and stop")
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    torch.set_num_threads(args.threads)
    bundle = load_digits_bundle()
    train, _ = split_validation(bundle.train, 0.1, seed=0)
    norm = (bundle.mean, bundle.std)
    torch.manual_seed(TEACHER["seed"])
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": TEACHER["channels"]})
    Distiller(None, teacher, [HardLabel()], optimizer=OptimizerSettings(lr=0.05), batch_size=64, seed=0,
              device="cpu", student_normalization=norm, progress=False).fit(train, epochs=TEACHER_EPOCHS)
    records = Records(BENCHMARK)
    teacher_config = {"teacher": TEACHER, "teacher_epochs": TEACHER_EPOCHS, "train_samples": len(train)}
    if not records.find("teacher", TEACHER["seed"], teacher_config):
        found = 100 * Distiller(None, teacher, progress=False, student_normalization=norm).evaluate(bundle.test)["acc"]
        records.append("teacher", TEACHER["seed"], teacher_config, {"test_acc": round(found, 2)}, 0.0)
    for seed in args.seeds:
        for variant, setting in VARIANTS.items():
            config = {"teacher": TEACHER, "teacher_epochs": TEACHER_EPOCHS, "student": STUDENT, "epochs": EPOCHS,
                      "optimizer": "sgd 0.05 momentum 0.9 wd 5e-4, cosine, batch 64", "train_samples": len(train),
                      "crd": None if setting is None else {"objective": setting[0], "memory_start": setting[1],
                                                           "num_negatives": NEGATIVES, "weight": 0.8}}
            if records.find(variant, seed, config):
                continue
            torch.manual_seed(seed + 1)
            student = build_model("cnn", 10, (1, 8, 8), {"channels": STUDENT["channels"]})
            methods = [HardLabel()]
            crd = None
            if setting is not None:
                kind = RandomStartCRD if setting[1] == "random" else CRD
                crd = kind("head:input", "head:input", num_negatives=NEGATIVES, objective=setting[0])
                methods.append(crd)
            with Timer() as timer:
                distiller = Distiller(teacher if crd else None, student, methods, optimizer=sgd(),
                                      schedule=ScheduleSettings(name="cosine"), batch_size=64, seed=seed,
                                      device="cpu", student_normalization=norm,
                                      teacher_normalization=norm if crd else None, progress=False)
                history = distiller.fit(train, epochs=EPOCHS)
            metrics = {"test_acc": round(100 * distiller.evaluate(bundle.test)["acc"], 2)}
            if crd is not None:
                terms = [r["train/crd"] for r in history if r["train/crd"] > 0]
                metrics.update(memory_s_cosine=round(mean_pairwise_cosine(crd.memory_s), 3),
                               memory_t_cosine=round(mean_pairwise_cosine(crd.memory_t), 3),
                               crd_last_over_first=round(terms[-1] / terms[0], 3))
            records.append(variant, seed, config, metrics, timer.seconds)
            print(f"{variant} seed {seed}: {metrics}", flush=True)
    print(table())


if __name__ == "__main__":
    main()
