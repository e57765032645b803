"""Bad inputs found before any training (issue 9, item 1): taps, shapes, labels, class counts, option types.

Every case here would otherwise fail after the teacher (and a scratch student) had trained, or
with a Python error that names no field. Each config trains for one epoch if it got that far, so a
case that regresses still ends quickly.
"""

from __future__ import annotations

from pathlib import Path

from bad_input.harness import Case

OUT = ["--output-dir", "{tmp}/out"]
RUN = ["run", "exp.yaml", *OUT, "--no-progress"]

HEAD = """name: t
data: {name: digits, batch_size: 32}
training: {epochs: 1}
"""
TEACHER = "teacher: {name: cnn, options: {channels: [8, 16]}, training: {epochs: 1}}\n"
STUDENT = "student: {name: mlp, options: {hidden: [16]}}\n"
KD = "  - {name: soft_target, weight: 0.9, temperature: 4}\n  - {name: hard_label, weight: 0.1}\n"


def experiment(methods: str = KD, teacher: str = TEACHER, student: str = STUDENT, head: str = HEAD) -> str:
    return head + teacher + student + "methods:\n" + methods


# a checkpoint of the registered mlp (hidden [16]) trained for 100 classes, for 10-class digits
MLP100 = "teacher: {name: mlp, options: {hidden: [16]}, checkpoint: mlp100.pt}\n"


def write_mlp100(tmp: Path) -> None:
    import torch

    from kdistill.models import build_model

    torch.save(build_model("mlp", 100, (1, 8, 8), {"hidden": [16]}).state_dict(), tmp / "mlp100.pt")


# a user's data function: digits with something wrong, chosen by an option
DATA = '''
import torch
from kdistill.data import DataBundle, InMemoryDataset


def load(fault="none"):
    x = torch.rand(40, 1, 8, 8)
    y = torch.arange(40) % 10
    if fault == "labels":
        y = y + 1  # 1..10 for 10 classes
    train = InMemoryDataset(x[:0] if fault == "empty" else x, y[:0] if fault == "empty" else y)
    classes = 1 if fault == "classes" else 10  # one output for a two-class problem
    return DataBundle("mine", train, InMemoryDataset(x[:10], y[:10] % 10), num_classes=classes)
'''
DATA_HEAD = ("name: t\ndata: {{name: 'mydata:load', options: {{fault: {fault}}}, val_fraction: 0}}\n"
             "training: {{epochs: 1}}\n")

# a user's teacher with a module that forward() never calls, and one with 100 outputs whatever it is asked
MODELS = '''
import torch
from torch import nn


class WithSpare(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Linear(64, 32)
        self.spare = nn.Linear(32, 32)  # kept for a later experiment, never called
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x.flatten(1))))


def spare(num_classes):
    return WithSpare(num_classes)


def hundred():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 100))


def mnist_sized(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
'''


def case(id: str, expect: tuple[str, ...], methods: str = KD, teacher: str = TEACHER, student: str = STUDENT,
         head: str = HEAD, argv: list[str] | None = None, **kwargs) -> Case:
    files = {"exp.yaml": experiment(methods, teacher, student, head), "mymodels.py": MODELS, "mydata.py": DATA}
    return Case(f"pre-{id}", argv or RUN, expect, files=files, **kwargs)


CASES = [
    case("teacher-layer-misspelt", ("methods[0].teacher_layer", "featurs.1", "closest: features.1"),
         methods="  - {name: hint, student_layer: hidden.0, teacher_layer: featurs.1}\n"),
    case("student-layer-misspelt", ("methods[0].student_layer", "hiden.0", "closest"),
         methods="  - {name: hint, student_layer: hiden.0, teacher_layer: features.1}\n"),
    case("layer-never-runs", ("methods[0].student_layer", "'hidden'", "does not run"),
         methods="  - {name: rkd, student_layer: hidden, teacher_layer: features}\n"),
    case("teacher-layer-never-runs", ("methods[0].teacher_layer", "'spare'", "does not run"),
         methods="  - {name: rkd, student_layer: hidden.0, teacher_layer: spare}\n",
         teacher="teacher: {name: 'mymodels:spare', training: {epochs: 1}}\n"),
    case("tap-on-model-without-it", ("methods[0].student_layers", "no module 'layer1'"),
         methods="  - {name: at, student_layers: [layer1, layer2], teacher_layers: [features.0, features.1]}\n"),
    case("shapes-cannot-adapt", ("methods[0]", "hint", "(16, 16)", "(16, 16, 2, 2)"),
         methods="  - {name: hint, student_layer: hidden.0, teacher_layer: features.1}\n"),
    case("attention-on-vectors", ("methods[0]", "attention_transfer", "feature maps"),
         methods="  - {name: at, student_layers: [hidden.0], teacher_layers: [features.1]}\n"),
    case("teacher-index-too-high", ("methods[0].teacher", "1 teacher"),
         methods="  - {name: hint, student_layer: hidden.0, teacher_layer: head, teacher: 1}\n"),
    case("string-temperature", ("methods[0].temperature", "must be a number", "'abc'"),
         methods="  - {name: soft_target, temperature: abc}\n  - {name: hard_label}\n"),
    case("list-weight", ("methods[1].weight", "must be a number"),
         methods="  - {name: soft_target}\n  - {name: hard_label, weight: [0.1, 0.2]}\n"),
    case("yaml-exponent-string", ("methods[0].weight", "1.0e-3"),
         methods="  - {name: rkd, student_layer: hidden.0, teacher_layer: head, weight: 1e-3}\n"),
    case("layers-not-strings", ("methods[0].student_layers", "list of strings"),
         methods="  - {name: sp, student_layers: 3, teacher_layers: [features]}\n"),
    case("teacher-number-as-text", ("methods[0].teacher", "integer"),
         methods="  - {name: hint, student_layer: hidden.0, teacher_layer: head, teacher: first}\n"),
    case("labels-out-of-range", ("labels", "[0, 10)", "1..10"), head=DATA_HEAD.format(fault="labels")),
    case("one-class", ("data.name", "num_classes=1"), head=DATA_HEAD.format(fault="classes")),
    case("empty-training-set", ("training set", "empty"), head=DATA_HEAD.format(fault="empty")),
    case("empty-validation-split", ("data.val_fraction", "empty"),
         head=HEAD.replace("batch_size: 32", "batch_size: 32, train_limit: 5, val_fraction: 0.01")),
    case("checkpoint-100-classes", ("teacher.checkpoint", "100 outputs", "10 classes"), teacher=MLP100,
         setup=write_mlp100),
    case("transfer-teacher-with-kd", ("methods", "soft_target", "100 classes"),
         teacher=MLP100.replace("checkpoint:", "num_classes: 100, checkpoint:"), setup=write_mlp100),
    case("factory-100-outputs", ("teacher", "(16, 100)", "10 classes"),
         teacher="teacher: {name: 'mymodels:hundred', training: {epochs: 1}}\n"),
    case("student-wrong-input-size", ("student", "forward pass", "(16, 1, 8, 8)"),
         student="student: {name: 'mymodels:mnist_sized'}\n"),
]
