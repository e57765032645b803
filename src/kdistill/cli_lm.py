"""`kdistill lm CONFIG`: distil a causal language model token by token (see `kdistill.lm.experiment`).

    kdistill lm examples/lm_gpt2_tiny.yaml
    kdistill lm examples/lm_gpt2_tiny.yaml --set methods[0].name=reverse_kl --set baseline=false

The config is an ordinary kdistill experiment file; the command prints held-out perplexity,
parameters and tokens per second of the teacher, the scratch student (with `baseline: true`) and
the distilled student, and writes them to `results.json` in the run directory.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("lm", help="distil a causal language model token by token (held-out perplexity)")
    parser.add_argument("config", help="experiment YAML (data: kdistill.lm:text_corpus, models: kdistill.lm:causal_lm)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set training.epochs=1 (repeatable)")
    parser.add_argument("--output-dir", help="run directory (must not exist yet, or be empty)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace, console: Console) -> int:
    import torch

    from kdistill.config import load_config
    from kdistill.lm.experiment import LMExperiment
    from kdistill.run.directory import create_run_dir, new_run_dir

    values = {"output_dir": args.output_dir} if args.output_dir else None
    config = load_config(args.config, args.overrides, values)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = new_run_dir(config)
    create_run_dir(run_dir)
    console.print(f"run directory: {run_dir}")
    rows = LMExperiment(config, run_dir, progress=not args.no_progress).run()
    table = Table(title=f"{config.name}: held-out perplexity (lower is better)")
    for column in ("model", "perplexity", "parameters", "train tokens/s", "eval tokens/s"):
        table.add_column(column)
    for row in rows:
        speed = row["train_tokens_per_s"]
        table.add_row(row["model"], f"{row['perplexity']:.2f}", f"{row['parameters']:,}",
                      "-" if speed is None else f"{speed:,.0f}", f"{row['eval_tokens_per_s']:,.0f}")
    console.print(table)
    return 0
