"""The Hinton search's students compared in pairs on its validation split (McNemar's exact test).

`kdistill tune benchmarks/hinton_mnist_tune.yaml` (2026-11-30) ranked 12 students by their errors on
5,999 held-out training images; its trials ran before runs kept per-sample outcomes, so its tune.md
could only apply the binomial yardstick. This reloads every trial's distilled student, the recipe's
own T = 20 / 0.1 student and the scratch student on the same split
(`kdistill run benchmarks/hinton_mnist_tune.yaml --baseline`, whose validation split is the search's),
and compares each with the search's best on the samples where the two disagree (Holm-corrected over
the search's own trials, as `kdistill tune` now does). Prints a table and writes
`benchmarks/results/hinton-tune-2026-11-30/paired.json`.

    python benchmarks/hinton_tune_paired.py [--search benchmarks/runs/hinton_mnist_tune]
        [--reference benchmarks/runs/hinton_mnist_tune_reference] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _records import RESULTS

from kdistill.config import load_config
from kdistill.engine.device import resolve_device
from kdistill.engine.distributed import World
from kdistill.engine.loaders import make_loader
from kdistill.evaluate.diagnostics import predict_logits
from kdistill.evaluate.paired import compare_outcomes, holm_differs
from kdistill.models import load_weights
from kdistill.run.build import build_participant
from kdistill.run.data import load_data
from kdistill.run.normalization import normalization_choice

HERE = Path(__file__).resolve().parent
OUTPUT = RESULTS / "hinton-tune-2026-11-30" / "paired.json"


def outcomes(run_dir: Path, weights: Path, val) -> torch.Tensor:
    """Right / wrong per validation sample of the student of `run_dir` with the weights `weights`."""
    config = load_config(run_dir / "config.yaml")
    bundle, _, _ = load_data(config)
    model = build_participant(config.student, bundle, "student", None, None)
    load_weights(model, weights)
    norm, _ = normalization_choice(config.student, bundle)
    cpu = resolve_device("cpu")
    loader = make_loader(val, train=False, batch_size=config.data.batch_size,
                         eval_batch_size=config.data.eval_batch_size, seed=0, world=World(), device=cpu)
    logits, labels = predict_logits(model, loader, cpu, norm)
    return logits.argmax(1) == labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", type=Path, default=HERE / "runs" / "hinton_mnist_tune")
    parser.add_argument("--reference", type=Path, default=HERE / "runs" / "hinton_mnist_tune_reference")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    summary = json.loads((args.search / "tune.json").read_text())
    # the reference run's own validation split: 10 % of the training images, seed 0, the search's split
    reference_config = load_config(args.reference / "config.yaml")
    _, _, val = load_data(reference_config)
    students: dict[str, tuple[torch.Tensor, dict, float | None]] = {}
    for trial in summary["trials"]:
        if trial["state"] != "complete":
            continue
        where = args.search / "trials" / f"trial-{trial['number']:04d}"
        correct = outcomes(where, where / "student-distilled" / "student.pt", val)
        students[f"trial {trial['number']}"] = (correct, trial["params"], trial["value"])
    baseline = json.loads((args.reference / "student-scratch" / "baseline.json").read_text())
    for name, weights in (("recipe (T 20, label weight 0.1)", args.reference / "student-distilled" / "student.pt"),
                          ("scratch", Path(baseline["store"]) / "student.pt")):
        students[name] = (outcomes(args.reference, weights, val), {}, None)
    best_name = f"trial {summary['best']['number']}"
    best = students[best_name][0]
    rows = []
    for name, (correct, params, value) in students.items():
        if value is not None:  # the reloaded student must be the one the search scored
            assert abs(float(correct.float().mean()) - value) < 0.5 / len(correct), (name, value)
        result = compare_outcomes(best, correct)
        rows.append({"student": name, "params": params, "errors": int((~correct).sum()),
                     "best_only": result.first_only, "this_only": result.second_only, "p_value": result.p_value})
    # Holm over the search's own comparisons with its best (what `kdistill tune` now does itself)
    searched = [row for row in rows if row["student"].startswith("trial ") and row["student"] != best_name]
    for row, shown in zip(searched, holm_differs([row["p_value"] for row in searched]), strict=True):
        row["differs_holm"] = shown
    print(f"against {best_name} on {len(best):,} validation samples (exact McNemar, two-sided; Holm over the "
          f"{len(searched)} other trials)")
    print("| student | errors | right only with the best | right only with this one | p | shown (Holm) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        shown = {True: "yes", False: "no"}.get(row.get("differs_holm"), "")
        print(f"| {row['student']} | {row['errors']} | {row['best_only']} | {row['this_only']} "
              f"| {row['p_value']:.3g} | {shown} |")
    OUTPUT.write_text(json.dumps({"what": __doc__.splitlines()[0], "best": best_name, "samples": len(best),
                                  "rows": rows}, indent=1))
    print(f"written: {OUTPUT}")


if __name__ == "__main__":
    main()
