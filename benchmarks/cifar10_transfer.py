"""CIFAR-10 methods: what each student took from the teacher, measured on the test images.

The methods table ranks students by accuracy alone; it cannot tell a method that transferred little
from one that transferred something that does not pay at this scale. CRD's authors argue (with a
figure on CIFAR-100 in the CRD paper) that cross-entropy and KD ignore the correlations between
class logits and that CRD's students match the teacher's correlations most closely. This reads every
student of `cifar10_methods.py` whose weights are still in its run directory and measures, on the
10,000 test images, against the benchmark's teacher:

- `agreement`: the share of images on which the student's top class is the teacher's (%);
- `kl_t4`: KL(teacher || student) of the temperature-4 distributions (the KD rows' own target);
- `corr_gap`: the mean absolute difference between the teacher's and the student's class-logit
  correlation matrices (Pearson over the test images, off-diagonal entries): the CRD paper's
  "inter-class correlations" check;
- `feature_cka`: linear CKA between the teacher's and the student's penultimate features (the
  embeddings CRD and RKD read; 1 = the same geometry up to rotation and scale);
- `feature_r2`: how much of the teacher's penultimate features a linear map of the student's
  explains (R^2, fitted by least squares on the even-numbered test images, measured on the odd
  ones: the images are stored class by class): CRD contrasts the two through learned linear
  heads, so a student that carries the teacher's representation in any linear form scores high
  here even where CKA does not.

`test_acc` is measured again; where it differs from the methods record (a student retrained after
its run directory was lost, not bit-identical to the recorded run), the probe record says so.
Records go to benchmarks/results/cifar10_transfer.jsonl, keyed by the student's own run.

    python benchmarks/cifar10_transfer.py [--threads 1]
    python benchmarks/cifar10_transfer.py --table
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import markdown_table, shared_data
from _records import WORK, Records, Timer, load
from cifar10_methods import BENCHMARK as METHODS
from cifar10_methods import prepare_teacher
from table import cell, latest_runs

from kdistill.data import load_image_folder_bundle
from kdistill.data.transforms import Normalize, to_float
from kdistill.digest import model_digest
from kdistill.models import build_model
from kdistill.taps import LayerTaps

BENCHMARK = "cifar10_transfer"
FEATURES = "linear:input"
TEMPERATURE = 4.0
KEYS = ("test_acc", "agreement", "kl_t4", "corr_gap", "feature_cka", "feature_r2")


@torch.no_grad()
def outputs(model: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, penultimate features) of `model` on normalised `images`, in eval mode."""
    model.eval()
    logits, features = [], []
    with LayerTaps(model, [FEATURES], owner=type(model).__name__) as taps:
        for start in range(0, len(images), batch):
            logits.append(model(images[start:start + batch]).double())
            features.append(taps.collect()[FEATURES].flatten(1).double())
    return torch.cat(logits), torch.cat(features)


def class_correlations(logits: torch.Tensor) -> torch.Tensor:
    return torch.corrcoef(logits.t())


def corr_gap(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Mean |corr_teacher - corr_student| over the off-diagonal class pairs."""
    gap = (class_correlations(teacher_logits) - class_correlations(student_logits)).abs()
    classes = gap.shape[0]
    return float(gap.sum() / (classes * (classes - 1)))  # the diagonal is 1 - 1 = 0


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of (n, d1) and (n, d2) features of the same n inputs."""
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    cross = (y.t() @ x).pow(2).sum()
    return float(cross / ((x.t() @ x).norm() * (y.t() @ y).norm()))


def linear_r2(student: torch.Tensor, teacher: torch.Tensor, ridge: float = 1e-6) -> float:
    """R^2 of the teacher's features predicted linearly from the student's: fitted on the even rows,
    scored on the odd ones (summed over the teacher's dimensions)."""
    fit_x, fit_y = student[0::2], teacher[0::2]
    x_mean, y_mean = fit_x.mean(dim=0), fit_y.mean(dim=0)
    x, y = fit_x - x_mean, fit_y - y_mean
    gram = x.t() @ x
    weights = torch.linalg.solve(gram + ridge * gram.trace() / len(gram) * torch.eye(len(gram), dtype=x.dtype),
                                 x.t() @ y)
    predicted = (student[1::2] - x_mean) @ weights + y_mean
    held = teacher[1::2]
    return float(1 - (held - predicted).pow(2).sum() / (held - held.mean(dim=0)).pow(2).sum())


def kl_at(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> float:
    target = F.log_softmax(teacher_logits / temperature, dim=1)
    return float(F.kl_div(F.log_softmax(student_logits / temperature, dim=1), target, log_target=True,
                          reduction="batchmean"))


def probe(teacher_out: tuple[torch.Tensor, torch.Tensor], student_out: tuple[torch.Tensor, torch.Tensor],
          labels: torch.Tensor) -> dict[str, float]:
    (t_logits, t_features), (s_logits, s_features) = teacher_out, student_out
    return {"test_acc": round(100 * float((s_logits.argmax(1) == labels).double().mean()), 2),
            "agreement": round(100 * float((s_logits.argmax(1) == t_logits.argmax(1)).double().mean()), 2),
            "kl_t4": round(kl_at(t_logits, s_logits, TEMPERATURE), 4),
            "corr_gap": round(corr_gap(t_logits, s_logits), 4),
            "feature_cka": round(linear_cka(t_features, s_features), 4),
            "feature_r2": round(linear_r2(s_features, t_features), 4)}


def student_path(record: dict):
    """The final weights of a methods run (its run directory is named as cifar10_methods names it)."""
    name = f"{record['variant'].replace(' ', '_')}-seed{record['seed']}-{record['config_digest']}"
    return WORK / METHODS / "runs" / name / "student.pt"


def table() -> str:
    runs, notes = latest_runs(load(BENCHMARK))
    header = ["variant", "test_acc", "agreement with teacher (%)", "KL at T = 4", "class-correlation gap",
              "feature CKA", "feature R^2", "n"]
    rows = [[variant, *(cell([r["metrics"][k] for r in found], 2 if k in ("test_acc", "agreement") else 3)
                        for k in KEYS), str(len(found))] for variant, found in runs.items()]
    return "\n".join([markdown_table(header, rows), *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the table of the records and stop")
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    torch.set_num_threads(args.threads)
    bundle = load_image_folder_bundle(shared_data() / "cifar10-jpeg.tar.gz")
    norm = (bundle.mean, bundle.std)
    images = Normalize(*norm)(to_float(bundle.test.inputs))  # what the engine's evaluation feeds the models
    labels = bundle.test.labels
    methods_records = Records(METHODS)
    teacher = prepare_teacher(methods_records, bundle, norm, "resnet20", 4, 0.02)
    teacher_out = outputs(teacher, images)
    records = Records(BENCHMARK)
    teacher_config = {"model": "resnet20", "teacher": model_digest(teacher), "probe": "test set"}
    if not records.find("teacher", 1000, teacher_config):
        records.append("teacher", 1000, teacher_config, probe(teacher_out, teacher_out, labels), 0.0)
    for record in load(METHODS):
        path = student_path(record)
        if record["variant"] == "teacher" or not path.exists():
            continue
        config = {"student_config_digest": record["config_digest"],  # the seed is the record's
                  "teacher": model_digest(teacher),
                  "probe": "test set", "temperature": TEMPERATURE, "features": FEATURES}
        if records.find(record["variant"], record["seed"], config):
            continue
        with Timer() as timer:
            student = build_model(record["config"]["student"], 10, (3, 32, 32))
            student.load_state_dict(torch.load(path, weights_only=True))
            metrics = probe(teacher_out, outputs(student, images), labels)
        recorded = round(record["metrics"]["test_acc"], 2)
        extra = {}
        if metrics["test_acc"] != recorded:  # the same config retrained (the run directory was lost) and not
            # bit-identical to the recorded run: kept, and said
            extra["note"] = f"retrained: {metrics['test_acc']} % against the methods record's {recorded} %"
            print(f"{path.parent.name}: {extra['note']}", flush=True)
        records.append(record["variant"], record["seed"], config, metrics, timer.seconds, **extra)
        print(f"{record['variant']} seed {record['seed']}: {metrics}", flush=True)
    print(table())


if __name__ == "__main__":
    main()
