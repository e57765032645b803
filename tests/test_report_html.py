"""report.md and report.html of a real (demo-size) run: the diagnostics and label-noise sections,
`kdistill report RUN_DIR` rebuilding them from files alone, and the HTML opened in a real headless
browser (Debian's chromium): a screenshot that is not blank, every figure present and decoded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kdistill.cli import main

SMALL_RUN = ["--no-progress", "--threads", "1", "--set", "teacher.training.epochs=3", "--set", "training.epochs=5"]


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> Path:
    """The built-in digits demo, shortened, with 20 % symmetric label noise."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    code = main(["run", *SMALL_RUN, "--output-dir", str(run_dir), "--set", "data.label_noise={rate: 0.2, seed: 1}"])
    assert code == 0
    return run_dir


def stage_folders(run_dir: Path) -> list[str]:
    return sorted(p.parent.relative_to(run_dir).as_posix() for p in run_dir.rglob("metrics.jsonl"))


def expected_figures(run_dir: Path) -> set[str]:
    slugs = {re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-") for stage in stage_folders(run_dir)}
    return {f"curves-{s}" for s in slugs} | {"reliability", "per-class", "confusion"}


def test_every_run_writes_both_reports_with_diagnostics_and_noise(noisy_run):
    markdown = (noisy_run / "report.md").read_text()
    for heading in ("## Label noise", "## Diagnostics", "### Per-class accuracy", "### Confusion matrices"):
        assert heading in markdown
    noise = json.loads((noisy_run / "label_noise.json").read_text())
    assert noise["requested_rate"] == 0.2 and abs(noise["realised_rate"] - 0.2) < 0.001
    assert f"{100 * noise['realised_rate']:.2f} % realised" in markdown
    assert (noisy_run / "report.html").stat().st_size > 10_000


def test_diagnostics_agree_with_the_results_table(noisy_run):
    """Two paths to the same accuracy: the diagnostics' own predictions and the run's evaluation."""
    diagnostics = json.loads((noisy_run / "diagnostics.json").read_text())
    results = json.loads((noisy_run / "results.json").read_text())
    for row in results["rows"]:
        assert diagnostics["models"][row["role"]]["accuracy"] == pytest.approx(row["accuracy"], abs=1e-9)
    assert diagnostics["roles"] == {"teacher": "teacher", "scratch": "student (scratch)",
                                    "distilled": "student (distilled)"}
    for role, summary in diagnostics["models"].items():
        confusion = summary["confusion"]
        assert sum(map(sum, confusion)) == diagnostics["test_samples"]
        assert sum(confusion[c][c] for c in range(10)) / diagnostics["test_samples"] == pytest.approx(
            summary["accuracy"]), role
        assert sum(summary["reliability"]["count"]) == diagnostics["test_samples"]
    assert set(diagnostics["pairs"]) == {"student (scratch)", "student (distilled)"}


def test_kdistill_report_rebuilds_from_files_alone(noisy_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(noisy_run, copy)
    for model_file in copy.rglob("*.pt"):  # no model is needed to rebuild
        model_file.unlink()
    (copy / "report.md").unlink()
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    original = (noisy_run / "report.md").read_text().replace(str(noisy_run), "RUN")
    # the same report, but for the directory it names (the config keeps the original output_dir)
    assert (copy / "report.md").read_text().replace(str(copy), "RUN").replace(str(noisy_run), "RUN") == original
    assert (copy / "report.html").exists()
    assert main(["report", str(tmp_path)]) == 2  # not a run: one line, exit 2
    assert "no results.json" in capsys.readouterr().err


class Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str] = []
        self.rendered: list[str] = []
        self.ready = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs.get("data-figure"))
        if tag == "img":
            self.rendered.append(attrs.get("data-rendered"))
        if tag == "body":
            self.ready = attrs.get("data-ready") == "yes"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium): no headless browser check")
    return found


def browse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


def test_html_report_in_a_headless_browser_has_every_figure_rendered(noisy_run):
    dom = browse("--virtual-time-budget=5000", "--dump-dom", (noisy_run / "report.html").as_uri()).stdout
    parsed = Figures()
    parsed.feed(dom)
    assert parsed.ready, "the page's load handler did not run"
    assert set(parsed.figures) == expected_figures(noisy_run)
    assert parsed.rendered and all(value == "yes" for value in parsed.rendered), parsed.rendered
    profile = dom.split("<h2>Profile</h2>", 1)[1].split("<h2>", 1)[0]  # every model's deployment columns
    assert "MFLOPs / sample" in profile and "student (distilled)" in profile


def test_html_report_screenshot_is_not_blank(noisy_run, tmp_path):
    from PIL import Image, ImageStat

    shot = tmp_path / "report.png"
    browse("--virtual-time-budget=5000", f"--screenshot={shot}", "--window-size=1200,3000",
           (noisy_run / "report.html").as_uri())
    assert shot.exists(), "chromium wrote no screenshot"
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 3000)
    # a blank page has one grey level; text, tables and plots spread them
    assert ImageStat.Stat(image).stddev[0] > 20
    assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50
    # the plots themselves are in view: part of the page well below the tables is not blank either
    lower = image.crop((0, 1000, 1200, 2000))
    assert ImageStat.Stat(lower).stddev[0] > 20


def test_a_run_without_diagnostics_still_gets_both_reports(noisy_run, tmp_path):
    """An older run directory (no diagnostics.json, no label_noise.json): tables and curves, and a note."""
    copy = tmp_path / "old"
    shutil.copytree(noisy_run, copy, ignore=shutil.ignore_patterns("*.pt", "diagnostics.json", "label_noise.json"))
    assert main(["report", str(copy)]) == 0
    markdown = (copy / "report.md").read_text()
    assert "No `diagnostics.json`" in markdown and "## Label noise" not in markdown
    parsed = Figures()
    parsed.feed((copy / "report.html").read_text())
    assert set(parsed.figures) == {f for f in expected_figures(copy) if f.startswith("curves-")}


def test_compression_table_and_other_tools_figures_are_picked_up(noisy_run, tmp_path):
    from PIL import Image

    copy = tmp_path / "with-extras"
    shutil.copytree(noisy_run, copy, ignore=shutil.ignore_patterns("*.pt"))
    rows = [{"stage": "start", "accuracy": 0.97, "profile": {"parameters": 1810}, "accepted": True},
            {"stage": "prune", "accuracy": 0.95, "profile": {"parameters": 905}, "accepted": False}]
    (copy / "compress.json").write_text(json.dumps({"rows": rows, "files": {}}))
    (copy / "figures").mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(copy / "figures" / "tune_history.png")
    assert main(["report", str(copy)]) == 0
    markdown = (copy / "report.md").read_text()
    assert "## Compression (`compress.json`)" in markdown
    assert "| stage | accuracy | profile.parameters | accepted |" in markdown
    assert "| prune | 0.95 | 905 | False |" in markdown
    parsed = Figures()
    parsed.feed((copy / "report.html").read_text())
    assert "extra-tune-history" in parsed.figures


def test_a_broken_results_file_is_bad_input(noisy_run, tmp_path, capsys):
    copy = tmp_path / "broken"
    shutil.copytree(noisy_run, copy, ignore=shutil.ignore_patterns("*.pt"))
    (copy / "results.json").write_text('{"rows": [')
    assert main(["report", str(copy)]) == 2
    assert "results.json: damaged, not readable JSON" in capsys.readouterr().err
    (copy / "results.json").write_text('{"rows": [{"role": "x"}]}')  # readable, but not a table of results
    assert main(["report", str(copy)]) == 2
    assert "not the results of a kdistill run" in capsys.readouterr().err


def test_a_torn_metrics_line_or_a_damaged_diagnostics_file_is_named(noisy_run, tmp_path, capsys):
    copy = tmp_path / "torn"
    shutil.copytree(noisy_run, copy, ignore=shutil.ignore_patterns("*.pt"))
    for metrics in copy.rglob("metrics.jsonl"):
        metrics.write_text(metrics.read_text() + '{"epoch": 9, "tr')  # a write cut short: skipped, as training does
    assert main(["report", str(copy)]) == 0
    capsys.readouterr()
    (copy / "diagnostics.json").write_text('{"models": [1')
    assert main(["report", str(copy)]) == 2
    assert "diagnostics.json: damaged, not readable JSON" in capsys.readouterr().err


def test_a_failing_html_report_or_diagnostics_does_not_fail_a_finished_run(tmp_path, monkeypatch, caplog):
    import kdistill.report_html
    import kdistill.run.diagnostics

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(kdistill.report_html, "write_html", broken)
    monkeypatch.setattr(kdistill.run.diagnostics, "run_diagnostics", broken)
    run_dir = tmp_path / "run"
    assert main(["run", "--no-progress", "--threads", "1", "--output-dir", str(run_dir), "--set",
                 "teacher.training.epochs=1", "--set", "training.epochs=1"]) == 0
    assert (run_dir / "results.json").exists() and "No `diagnostics.json`" in (run_dir / "report.md").read_text()
    assert not (run_dir / "report.html").exists()
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "report.html could not be written" in warnings and "no diagnostics for this run" in warnings
