"""Render a benchmark's table from its result records (mean +- std and n per cell).

    python benchmarks/table.py hinton_mnist [--baseline scratch] [--teacher teacher]

Rows are variants in the order they were first recorded. A variant recorded under several configs
shows only the latest config's runs (the older ones are counted in a note). "vs baseline" is the
difference of means; "gap recovered" is (variant - baseline) / (teacher - baseline), shown only
where the teacher is better than the baseline by more than the baseline's seed spread (a share of
a smaller gap is noise). A record may name its own baseline (`"baseline":
"scratch (jittered)"`): its row is compared with that variant instead, and the cell says so; a
row that is its own baseline shows no comparison. Likewise a record may name its own teacher row
(`"teacher_row": "teacher ensemble (...)"`): its share is of the gap to that row, and says so.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from typing import Any

from _common import markdown_table
from _records import load


def metric_of(record: dict[str, Any]) -> tuple[str, float]:
    metrics = record["metrics"]
    if "test_errors" in metrics:
        return "test_errors", float(metrics["test_errors"])
    if "perplexity" in metrics:  # language models: held-out perplexity, lower is better
        return "perplexity", float(metrics["perplexity"])
    if "test_acc" not in metrics and "val_acc" in metrics:  # sweeps: chosen on validation, never on test
        return "val_acc", float(metrics["val_acc"])
    return "test_acc", float(metrics["test_acc"])


def cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def latest_runs(records: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Per variant, the runs of its most recently recorded config (one per seed)."""
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_variant[record["variant"]].append(record)
    chosen, notes = {}, []
    for variant, runs in by_variant.items():
        digest = max(runs, key=lambda r: r["date"])["config_digest"]
        current = sorted((r for r in runs if r["config_digest"] == digest), key=lambda r: r["date"])
        kept = {r["seed"]: r for r in current}  # a seed run again under the same config: its latest run
        chosen[variant] = [kept[s] for s in sorted(kept)]
        older, repeated = len(runs) - len(current), len(current) - len(kept)
        if older:
            notes.append(f"{variant}: {older} run(s) under an older config not shown")
        if repeated:
            notes.append(f"{variant}: {repeated} earlier run(s) of the same seed and config not shown (the latest "
                         "is)")
    return chosen, notes


def render(benchmark: str, baseline: str = "scratch", teacher: str = "teacher") -> str:
    records = load(benchmark)
    if not records:
        return f"no records for {benchmark} (benchmarks/results/{benchmark}.jsonl)"
    known = ("test_errors", "perplexity", "val_acc", "test_acc")
    scored = [r for r in records if any(k in r["metrics"] for k in known)]
    unscored = sorted({r["variant"] for r in records} - {r["variant"] for r in scored})
    records = scored
    runs, notes = latest_runs(records)
    notes += [f"{variant}: no accuracy, errors or perplexity in its records (the benchmark's own --table shows it)"
              for variant in unscored]
    metric = metric_of(records[0])[0]
    digits = 1 if metric == "test_errors" else 2
    lower_is_better = metric in ("test_errors", "perplexity")
    rows = []
    for variant, variant_runs in runs.items():
        values = [metric_of(r)[1] for r in variant_runs]
        own_baseline = variant_runs[-1].get("baseline", baseline)
        own_teacher = variant_runs[-1].get("teacher_row", teacher)
        base = [metric_of(r)[1] for r in runs.get(own_baseline, [])]
        top = [metric_of(r)[1] for r in runs.get(own_teacher, [])]
        delta = gap = ""
        if base and variant not in (own_baseline, own_teacher):
            delta = f"{statistics.mean(values) - statistics.mean(base):+.2f}"
            if own_baseline != baseline:
                delta += f" (vs {own_baseline})"
            if top:
                span = statistics.mean(top) - statistics.mean(base)
                better = span < 0 if lower_is_better else span > 0
                spread = statistics.stdev(base) if len(base) > 1 else 0.0
                if better and abs(span) > spread:
                    gap = f"{100 * (statistics.mean(values) - statistics.mean(base)) / span:.0f} %"
                    if own_teacher != teacher:
                        gap += f" (of {own_teacher})"
                elif better:  # a share of a gap smaller than the baseline's own seed spread is noise
                    notes.append(f"{variant}: no gap recovered: the {own_teacher} leads {own_baseline} by "
                                 f"{abs(span):.2f}, less than {own_baseline}'s seed spread ({spread:.2f})")
        seconds = statistics.mean(r["seconds"] for r in variant_runs)
        rows.append([variant, cell(values, digits), str(len(values)), delta, gap, f"{seconds:.0f}"])
    header = ["variant", f"{metric} (mean +- std)", "n", f"vs {baseline}", "gap recovered", "s / run"]
    text = markdown_table(header, rows)
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark")
    parser.add_argument("--baseline", default="scratch")
    parser.add_argument("--teacher", default="teacher")
    args = parser.parse_args()
    print(render(args.benchmark, args.baseline, args.teacher))


if __name__ == "__main__":
    main()
