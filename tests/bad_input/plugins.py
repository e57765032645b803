"""Bad plugins as users write them (issue 9, item 6): `module:factory` models and `module:function` data.

The module lives in the case's directory, which is the working directory of the command: it is
found there as `python -m` would find it. What the user's code gets wrong is named with the
field that points at it (`teacher.name`, `data.name`), in one line.
"""

from __future__ import annotations

from bad_input.harness import Case

OUT = ["--output-dir", "{tmp}/out"]
RUN = ["run", "exp.yaml", *OUT, "--no-progress"]

PLUGIN = '''
import torch
from torch import nn
from kdistill.data import DataBundle, InMemoryDataset


def teacher(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


def broken(num_classes):
    raise RuntimeError("weights server unreachable")


def not_a_model(num_classes):
    return {"layers": 2}


def picky(num_classes, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))


def load_fails():
    raise OSError("cannot reach /mnt/datasets")


def load_list():
    return [1, 2, 3]


def load_ok(size=40):
    x, y = torch.rand(size, 1, 8, 8), torch.arange(size) % 10
    return DataBundle("mine", InMemoryDataset(x, y), InMemoryDataset(x[:10], y[:10]), num_classes=10)
'''


def experiment(teacher: str = "{name: 'plugin:teacher', training: {epochs: 1}}", student: str = "{name: mlp}",
               data: str = "{name: digits}") -> str:
    return f"name: t\ndata: {data}\nteacher: {teacher}\nstudent: {student}\ntraining: {{epochs: 1}}\n"


def case(id: str, expect: tuple[str, ...], files: dict[str, str] | None = None, **fields: str) -> Case:
    return Case(f"plug-{id}", RUN, expect, files={"exp.yaml": experiment(**fields), "plugin.py": PLUGIN,
                                                   **(files or {})})


CASES = [
    case("unknown-module", ("teacher.name", "cannot import module 'nosuch'", "current directory"),
         teacher="{name: 'nosuch:teacher'}"),
    case("factory-name-missing", ("teacher.name", "has no attribute 'teachr'", "did you mean 'teacher'"),
         teacher="{name: 'plugin:teachr'}"),
    case("factory-raises", ("teacher.name", "plugin:broken", "RuntimeError", "weights server unreachable", "--debug"),
         teacher="{name: 'plugin:broken'}"),
    case("factory-returns-dict", ("teacher.name", "returned dict", "nn.Module"),
         teacher="{name: 'plugin:not_a_model'}"),
    case("student-factory-raises", ("student.name", "weights server unreachable"), student="{name: 'plugin:broken'}"),
    case("factory-unknown-option", ("teacher.options.depth", "width"),
         teacher="{name: 'plugin:picky', options: {depth: 3}}"),
    case("module-syntax-error", ("teacher.name", "SyntaxError", "line 2"), files={"badsyntax.py": "x = 1\ndef f(:\n"},
         teacher="{name: 'badsyntax:f'}"),
    case("module-raises-on-import", ("teacher.name", "KeyError while importing", "CUDA_HOME"),
         files={"envmod.py": "import os\nHOME = os.environ['CUDA_HOME_NOT_SET_ANYWHERE']\n"},
         teacher="{name: 'envmod:f'}"),
    case("module-imports-missing-package", ("teacher.name", "no module named 'not_installed_pkg'"),
         files={"needs.py": "import not_installed_pkg\n"}, teacher="{name: 'needs:f'}"),
    case("data-function-raises", ("data.name", "plugin:load_fails", "cannot reach /mnt/datasets"),
         data="{name: 'plugin:load_fails'}"),
    case("data-function-returns-list", ("data.name", "returned list", "DataBundle"), data="{name: 'plugin:load_list'}"),
    case("data-function-unknown-option", ("data.options", "shape"),
         data="{name: 'plugin:load_ok', options: {shape: 3}}"),
    case("data-function-missing", ("data.name", "has no attribute 'load'"), data="{name: 'plugin:load'}"),
]
