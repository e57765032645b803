"""`kdistill compare RUN_DIR...` on two real demo-size runs (clean and 40 % noisy labels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdistill.cli import main
from kdistill.evaluate.paired import exact_mcnemar_p, outcomes_from_bits

SMALL_RUN = ["--no-progress", "--threads", "1", "--set", "teacher.training.epochs=2", "--set", "training.epochs=3"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    clean, noisy = root / "clean", root / "noisy"
    assert main(["run", *SMALL_RUN, "--output-dir", str(clean)]) == 0
    assert main(["run", *SMALL_RUN, "--output-dir", str(noisy), "--set", "data.label_noise={rate: 0.4}"]) == 0
    return clean, noisy


def test_compare_puts_each_runs_numbers_in_its_column(two_runs, tmp_path):
    clean, noisy = two_runs
    markdown = tmp_path / "compare.md"
    assert main(["compare", str(clean), str(noisy), "--markdown", str(markdown)]) == 0
    lines = markdown.read_text().splitlines()
    assert lines[0] == "| measure | clean | noisy |"
    cells = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:] for line in lines[2:]}
    for column, run_dir in enumerate((clean, noisy)):
        for row in json.loads((run_dir / "results.json").read_text())["rows"]:
            assert cells[f"{row['role']}: test acc %"][column] == f"{100 * row['accuracy']:.2f}"
        diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
        pair = diagnostics["pairs"]["student (distilled)"]
        assert cells["student (distilled): agreement with teacher %"][column] == f"{100 * pair['agreement']:.2f}"
    noise = json.loads((noisy / "label_noise.json").read_text())
    assert cells["label noise realised %"] == ["none", f"{100 * noise['realised_rate']:.2f}"]
    # the noisy run's distilled student against the clean run's, sample by sample on the same test set
    outcomes = []
    for run_dir in (clean, noisy):
        diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
        bits = outcomes_from_bits(diagnostics["models"]["student (distilled)"]["correct"], diagnostics["test_samples"])
        assert int(bits.sum()) == round(diagnostics["models"]["student (distilled)"]["accuracy"] * len(bits))
        outcomes.append(bits)
    here, there = int((outcomes[1] & ~outcomes[0]).sum()), int((outcomes[0] & ~outcomes[1]).sum())
    assert cells["distilled: right only here / only in clean, McNemar p"] == [
        "", f"{here} / {there}, p = {exact_mcnemar_p(here, there):.3g}"]


def test_compare_html_overlays_the_shared_stages(two_runs, tmp_path, capsys):
    page = tmp_path / "compare.html"
    assert main(["compare", *map(str, two_runs), "--html", str(page)]) == 0
    text = page.read_text()
    for stage in ("teacher", "student-scratch", "student-distilled"):
        assert f'data-figure="val-{stage}"' in text
    assert "clean" in capsys.readouterr().out


def test_compare_refuses_a_directory_that_is_not_a_run(two_runs, tmp_path, capsys):
    assert main(["compare", str(two_runs[0]), str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
