"""The README's two set-up commands stay true: CI runs exactly the test command."""

from __future__ import annotations

import re

from conftest import REPO


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks if b.strip().startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("kdistill run")
    assert commands[1].endswith("pytest -q")


def test_ci_runs_the_readme_test_command():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert readme_commands()[1] in ci
    assert "pytest -q -m slow" in ci  # the README's command leaves the slow tests out; CI runs them too


def test_readme_python_example_runs():
    """The README's Python example, run as written on tiny random CIFAR-shaped data."""
    import torch

    from kdistill.data.base import InMemoryDataset
    from kdistill.models import build_model

    code = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)[0]
    torch.manual_seed(0)
    data = InMemoryDataset(torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,)))
    namespace = {"teacher": build_model("resnet14", 10, (3, 32, 32)),
                 "student": build_model("resnet8", 10, (3, 32, 32)), "train_set": data, "val_set": data}
    exec(code, namespace)
    history = namespace["distiller"].history
    assert len(history) == 30 and "train/attention_transfer" in history[-1]
