"""`kdistill tune`: search the experiment's `tune.space` with Optuna, scored on a validation split.

    kdistill tune experiment.yaml --trials 20            # a new search in runs/<name>-tune-<time>/
    kdistill tune experiment.yaml --set training.epochs=3 --output-dir runs/t1
    kdistill tune --resume runs/t1 [--trials 30]         # an interrupted (or finished) search goes on

The test split is never read: each trial runs on the training data split into train and validation
(`kdistill.tune.data`). The search's directory holds the study (SQLite), every trial's run, the best
experiment as `best.yaml`, `tune.md` and the plots; `kdistill run best.yaml` then measures it on test.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdistill.errors import EXIT_INTERRUPTED, BadInput


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("tune", help="search hyper-parameters (the experiment's tune: section) with "
                                   "Optuna, on a validation split; resumable")
    parser.add_argument("config", nargs="?", help="experiment YAML with a tune: section")
    parser.add_argument("--trials", type=int, help="finished trials to reach (default: tune.trials)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, as for kdistill run (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a search from its directory")
    parser.add_argument("--output-dir", help="the search's directory (must not exist yet, or be empty)")
    parser.add_argument("--progress", action="store_true", help="progress bars for each trial's training")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default as for kdistill run)")
    return parser


def _run_dir(name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, suffix = Path("runs") / f"{name}-tune-{stamp}", 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{name}-tune-{stamp}-{suffix}"
    return path


def run(args: argparse.Namespace, console: Console) -> int:
    from kdistill.config import load_raw
    from kdistill.config_overrides import apply_override
    from kdistill.run.threads import apply_threads, choose_threads
    from kdistill.tune.study import run_search

    apply_threads(choose_threads(args.threads, 1))
    raw = None
    if args.resume:
        if args.config or args.overrides or args.output_dir:
            raise BadInput("--resume takes the search's own experiment; drop the config file, --set and --output-dir")
        run_dir = Path(args.resume)
    else:
        if not args.config:
            raise BadInput("CONFIG: give the experiment file to search (with a tune: section), or --resume RUN_DIR")
        raw = load_raw(args.config)
        for assignment in args.overrides:
            apply_override(raw, assignment)
        run_dir = Path(args.output_dir) if args.output_dir else _run_dir(str(raw.get("name", "experiment")))
    console.print(f"search directory: {run_dir}", highlight=False)
    try:
        result = run_search(raw, run_dir, args.trials, resume=bool(args.resume), progress=args.progress,
                            announce=lambda text: console.print(text, highlight=False))
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; finished trials are kept: continue with: kdistill tune --resume {run_dir}",
                      highlight=False)
        return EXIT_INTERRUPTED
    print_summary(console, result)
    return 0


def print_summary(console: Console, result: Any) -> None:
    import json

    from kdistill.tune.study import SUMMARY_JSON, noise_sentence, sampler_sentence

    summary = json.loads((result.run_dir / SUMMARY_JSON).read_text())
    table = Table(title=f"trials ({summary['metric']} on the validation split, {summary['direction']})")
    for column in ("trial", "state", *summary["space"], summary["metric"]):
        table.add_column(column, justify="right")
    for trial in summary["trials"]:
        values = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in
                  (trial["params"].get(p, "-") for p in summary["space"])]
        score = "-" if trial["value"] is None else f"{trial['value']:.4f}"
        table.add_row(str(trial["number"]), trial["state"], *values, score)
    console.print(table)
    confirmation = summary.get("confirmation")
    if confirmation:
        for row in confirmation:
            mean = "diverged with a seed" if row["mean"] is None else f"{row['mean']:.4f} +- {row['std']:.4f}"
            console.print(f"trial {row['number']} over seeds {row['seeds']}: mean {summary['metric']} {mean}",
                          highlight=False)
    if result.best_config is not None:
        chosen = f"mean over {len(confirmation[0]['seeds'])} seeds " if "mean" in summary["best"] else ""
        console.print(f"best: trial {summary['best']['number']} ({chosen}{summary['metric']} {result.best_value:.4f}); "
                      f"its experiment: {result.best_config}\nmeasure it on the test set with: kdistill run "
                      f"{result.best_config}", highlight=False)
    warning = noise_sentence(summary)
    if warning:
        console.print(f"within noise: {warning}", highlight=False)
    sampling = sampler_sentence(summary)
    if sampling and sampling.startswith("**A random search.**"):
        console.print("random search: " + sampling.removeprefix("**A random search.** "), highlight=False)
    console.print(f"summary: {result.run_dir / 'tune.md'}", highlight=False)
