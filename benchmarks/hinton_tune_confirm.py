"""The Hinton search's three leading trials trained again with seeds 1 and 2 (`tune.confirm_top`).

The search of `benchmarks/hinton_mnist_tune.yaml` (2026-11-30, 12 trials, one seed each) ran before
`kdistill tune` could confirm its leaders over seeds. This applies the same confirmation to the kept
search: its three best trials (52, 54 and 54 errors of 5,999) with seeds 1 and 2 on the same
validation split, through `kdistill.tune.confirm` (runs in `confirm/` of the search's directory,
resumable), and writes `benchmarks/results/hinton-tune-2026-11-30/confirm.json`.

    python benchmarks/hinton_tune_confirm.py [--search benchmarks/runs/hinton_mnist_tune] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml
from _records import RESULTS

from kdistill.tune.confirm import confirm, confirmation_lines
from kdistill.tune.data import tuning_raw
from kdistill.tune.study import EXPERIMENT_FILE, open_study, pretrain_teachers, search_plan

HERE = Path(__file__).resolve().parent
OUTPUT = RESULTS / "hinton-tune-2026-11-30" / "confirm.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", type=Path, default=HERE / "runs" / "hinton_mnist_tune")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = yaml.safe_load((args.search / EXPERIMENT_FILE).read_text())
    spec, dimensions = search_plan(raw)
    spec = spec.model_copy(update={"confirm_top": 3, "confirm_seeds": 3})
    base = tuning_raw(pretrain_teachers(raw, dimensions, args.search, False))
    study = open_study(args.search, spec, int(raw.get("seed", 0) or 0))
    rows = confirm(study, base, spec, args.search, announce=lambda text: print(text, flush=True))
    print("\n".join(confirmation_lines(rows, spec.metric)))
    for row in rows:
        row["errors"] = [None if v is None else round((1 - v) * 5999) for v in row["values"]]
    OUTPUT.write_text(json.dumps({"what": __doc__.splitlines()[0], "rows": rows}, indent=1) + "\n")
    print(f"written: {OUTPUT}")


if __name__ == "__main__":
    main()
