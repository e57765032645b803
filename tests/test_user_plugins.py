"""The README's "Your own models and data" example runs as written: a user's own teacher, defined in a
module beside the experiment file and loaded from its checkpoint, evaluated and distilled through the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from kdistill.data.transforms import Normalize
from kdistill.engine import Distiller
from kdistill.methods import HardLabel

# the README's three blocks, verbatim (test_readme_shows_this_example keeps them in step)
MODULE = '''# mymodels.py, in the directory you run kdistill from
import math

from torch import nn


def teacher(num_classes, input_shape, width=256):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                         nn.Linear(width, num_classes))
'''
EXPERIMENT = '''# distill.yaml
data: {name: digits}
teacher:
  name: mymodels:teacher
  options: {width: 256}
  checkpoint: teacher.pt     # no normalize: a checkpoint gets none (add `normalize: dataset` if it was trained so)
student: {name: mlp, options: {hidden: [32]}}
'''
COMMANDS = '''kdistill eval mymodels:teacher --options '{width: 256}' --checkpoint teacher.pt   # its accuracy first
kdistill run distill.yaml
'''


def cli(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "KDISTILL_THREADS": "1", "PATH": "", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "kdistill.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_own_teacher_from_a_checkpoint_is_evaluated_and_distilled(tmp_path, digits):
    bundle, train, _ = digits
    (tmp_path / "mymodels.py").write_text(MODULE)
    (tmp_path / "distill.yaml").write_text(EXPERIMENT)
    namespace: dict = {}
    exec(MODULE, namespace)  # the user trains their teacher their own way: here on raw pixels in [0, 1]
    torch.manual_seed(0)
    teacher = namespace["teacher"](10, (1, 8, 8))
    Distiller(None, teacher, [HardLabel()], progress=False, device="cpu").fit(train, epochs=5)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    expected = Distiller(None, teacher, progress=False, device="cpu", student_normalization=Normalize(None, None)
                         ).evaluate(bundle.test)["acc"]
    assert expected > 0.9

    evaluated = cli(tmp_path, "eval", "mymodels:teacher", "--options", "{width: 256}", "--checkpoint", "teacher.pt",
                    "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["acc"] == pytest.approx(expected)

    ran = cli(tmp_path, "run", "distill.yaml", "--set", "training.epochs=2", "--output-dir", "out", "--no-progress")
    assert ran.returncode == 0, ran.stderr
    assert "input normalisation of teacher: none (the default for a loaded checkpoint)" in ran.stdout
    rows = {r["role"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["rows"]}
    assert rows["teacher"]["accuracy"] == pytest.approx(expected)
    assert rows["teacher"]["parameters"] == 64 * 256 + 256 + 256 * 10 + 10 == sum(
        p.numel() for p in teacher.parameters())
    assert not math.isnan(rows["student (distilled)"]["accuracy"])


def test_readme_shows_this_example():
    readme = (REPO / "README.md").read_text()
    assert "## Your own models and data" in readme
    for block in (MODULE, EXPERIMENT, COMMANDS):
        assert block in readme
