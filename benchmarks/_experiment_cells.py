"""One benchmark cell = one `kdistill run` experiment (what a user's YAML gives), recorded per model.

The experiment is written with its data root symbolic (`KDISTILL_DATA/<folder>`), so its digest,
which names the run directory and keys the records, is the same on every machine; the real root is
put in only to run it. Each model of the run's table (teacher, scratch and distilled students) is
one record, its metrics measured by the benchmark's own function on the weights the run saved.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import keep_freed_memory, shared_data
from _records import WORK, Records, Timer, config_digest

from kdistill.config import validate
from kdistill.experiment import run_experiment
from kdistill.models import build_model

STAGES = {"teacher": "teacher", "student (scratch)": "student-scratch", "student (distilled)": "student-distilled"}


def cell_arguments(doc: str, epochs: int) -> argparse.ArgumentParser:
    """The options every cell benchmark takes (add its own to the parser it returns)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only print the table from the records")
    return parser


def start(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and set the process up as every benchmark does (thread count, freed memory returned)."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    return args


def record_config(raw: dict) -> dict:
    """What a variant's runs share (the seed is the record's own field, the name is made from it)."""
    return {k: v for k, v in raw.items() if k not in ("name", "seed")}


def stage_model(run_dir: Path, role: str, spec: dict, num_classes: int, input_shape: tuple[int, ...]
                ) -> torch.nn.Module:
    """The model a stage of the run trained, rebuilt from its spec and loaded from the stage's weights."""
    model = build_model(spec["name"], num_classes, input_shape, spec.get("options"))
    model.load_state_dict(torch.load(run_dir / STAGES[role] / "student.pt", weights_only=True))
    return model.eval()


def run_cell(records: Records, benchmark: str, raw: dict, variants: dict[str, str],
             metrics: Callable[[str, Path, Any], dict[str, Any]]) -> None:
    """Run `raw` (unless every variant of its seed is recorded) and record `metrics(role, run_dir, row)`
    for each role in `variants` (role -> variant name)."""
    key, seed = record_config(raw), raw["seed"]
    if all(records.find(name, seed, key) for name in variants.values()):
        return
    run_dir = WORK / benchmark / "runs" / f"{raw['name']}-{config_digest(raw)}"
    folder = raw["data"]["root"].removeprefix("KDISTILL_DATA/")
    config = validate({**raw, "data": {**raw["data"], "root": str(shared_data() / folder)},
                       "output_dir": str(run_dir), "baselines_dir": str(WORK / benchmark / "baselines")})
    with Timer() as timer:
        result = run_experiment(config, run_dir, resume=(run_dir / "config.yaml").exists(), progress=False)
    for row in result.rows:
        name = variants.get(row.role)
        if name is None or records.find(name, seed, key):
            continue
        found = metrics(row.role, run_dir, row)
        assert abs(found["test_acc"] - 100 * row.accuracy) < 0.01, (found, row.accuracy)  # the run's own figure
        records.append(name, seed, key, found, timer.seconds, params=row.parameters,
                       latency_ms_b1=row.extra.get("profile", {}).get("latency_b1_ms"),
                       run_dir=str(run_dir.relative_to(WORK)))
        print(f"{name} seed {seed}: {found}", flush=True)
