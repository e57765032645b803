"""`kdistill report RUN_DIR`: rebuild a run's `report.md` and `report.html` from its files.

No model or data is loaded: the tables and plots come from `results.json`, `diagnostics.json`,
`label_noise.json`, every stage's `metrics.jsonl`, `config.yaml` and any compression table or
`figures/*.png`. Useful after a report's code changed, after a run was copied elsewhere, or to add
plots (matplotlib) to a run made without them.

    kdistill report runs/digits-demo-20260101-120000
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("report", help="rebuild report.md and report.html of a finished run from its files")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (the one kdistill run printed)")
    return parser


def run(args: argparse.Namespace, console: Console) -> int:
    from kdistill.report import rebuild_reports

    markdown = rebuild_reports(Path(args.run_dir))
    console.print(f"report: {markdown}\nreport: {markdown.with_suffix('.html')}", highlight=False)
    return 0
