"""`kdistill compare RUN_DIR...`: finished runs side by side, one column per run.

Test accuracy of every model, gap recovered, label noise, and the diagnostics (ECE, agreement and
KL with the teacher, inherited weak classes), read from each run's files (no model is loaded).
`--html FILE` also writes a self-contained page with each shared stage's validation curves overlaid;
`--markdown FILE` the table as markdown.

    kdistill compare runs/noise-0 runs/noise-20 runs/noise-40 --html compare.html
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compare", help="put finished runs side by side (accuracy, gap, diagnostics)")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to compare")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with the curves")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    return parser


def run(args: argparse.Namespace, console: Console) -> int:
    from kdistill.compare import compare_html, compare_runs
    from kdistill.report_sections import md_table

    header, rows, summaries = compare_runs([Path(d) for d in args.run_dirs])
    table = Table(title="kdistill compare")
    for index, column in enumerate(header):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(md_table(header, rows)) + "\n")
        console.print(f"markdown: {args.markdown}", highlight=False)
    if args.html:
        Path(args.html).write_text(compare_html(header, rows, summaries))
        console.print(f"html: {args.html}", highlight=False)
    return 0
