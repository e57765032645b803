"""Every shipped example validates (paths included) where the shared data folder is present."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, shared_data

from kdistill.config import load_config

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path: Path, monkeypatch):
    text = path.read_text()
    if "shared/data" in text and shared_data() is None:
        pytest.skip("shared data folder absent")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("KDISTILL_DATA", str(shared_data())) if shared_data() else None
    config = load_config(path)
    assert config.methods and config.training.epochs > 0


def test_digits_example_is_the_builtin_demo():
    assert (REPO / "examples" / "digits.yaml").read_text() == (
        REPO / "src" / "kdistill" / "presets" / "digits.yaml").read_text()
