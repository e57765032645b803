"""Issue 13's benchmark: how distillation copes with noisy labels, tuned vs default KD, the pair tool.

Three parts, one records file (benchmarks/results/noise_and_tuning.jsonl):

- `--part noise` (this file): MNIST MLPs, scratch vs distilled student at 0 %, 20 % and 40 %
  symmetric label noise, 3 seeds. Each (noise, seed) cell is one `kdistill run` experiment
  (`run_experiment`, so the noise goes through `data.label_noise` exactly as a user's would): the
  noise is injected into the training labels after the validation split is carved (validation and
  test stay clean), the teacher (MLP 784-400-400) is trained on the SAME noisy labels (the realistic
  case: no clean teacher exists), then the student (MLP 784-32) is trained from the labels alone
  (scratch) and by soft-target KD (T=4, 0.9 soft + 0.1 hard) from that teacher's cached logits. A
  budget sized for one CPU thread: 20,000 training images (18,000 after the 10 % validation split),
  teacher 10 epochs, students 20, AdamW with a cosine schedule, batch 128. Test accuracy on the full
  10,000-image test set; the distilled rows also carry agreement, KL and ECE from the run's
  diagnostics, and every row the realised noise rate.
- `--part tuning` / `--part pair`: tuned vs default temperature and weights on one pair, and the
  pair tool's table; they live in benchmarks/tuning_parts.py (`run_tuning(records, args)`,
  `run_pair(records, args)`) and run here when that module exists.

Recorded cells are skipped; an interrupted cell resumes from its run directory
(benchmarks/runs/noise_and_tuning/).

    python benchmarks/noise_and_tuning.py --part noise [--seeds 0 1 2] [--rates 0 0.2 0.4] [--threads 1]
    python benchmarks/table.py noise_and_tuning
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch
import yaml
from _common import keep_freed_memory, markdown_table, shared_data
from _records import WORK, Records, Timer, config_digest, load

from kdistill.config import validate
from kdistill.experiment import run_experiment

BENCHMARK = "noise_and_tuning"
ROLES = {"teacher": "teacher", "student (scratch)": "scratch", "student (distilled)": "distilled"}


def experiment(rate: float, seed: int, args: argparse.Namespace) -> dict:
    """The experiment file of one (noise, seed) cell, as a mapping."""
    adamw = {"name": "adamw", "lr": 0.001, "weight_decay": 0.0}
    return {
        "name": f"mnist-noise{round(100 * rate)}-seed{seed}", "seed": seed,
        "data": {"name": "mnist", "root": str(shared_data() / "mnist"), "val_fraction": 0.1,
                 "train_limit": args.train_limit, "batch_size": 128,
                 "label_noise": {"rate": rate, "kind": "symmetric", "seed": seed}},
        "teacher": {"name": "mlp", "options": {"hidden": [400, 400]}, "cache": True,
                    "training": {"epochs": args.teacher_epochs, "optimizer": adamw, "schedule": {"name": "cosine"}}},
        "student": {"name": "mlp", "options": {"hidden": [32]}},
        "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 4.0}, {"name": "hard_label", "weight": 0.1}],
        "training": {"epochs": args.student_epochs, "optimizer": {**adamw, "lr": 0.003}, "schedule": {"name": "cosine"},
                     "device": "cpu"},
        "baseline": True,
    }


DEFAULT_EPOCHS = (10, 20)  # teacher, students: the variants' plain names; other budgets are named in them


def budget(args: argparse.Namespace) -> str:
    epochs = (args.teacher_epochs, args.student_epochs)
    return "" if epochs == DEFAULT_EPOCHS else f", teacher {epochs[0]} ep / students {epochs[1]} ep"


def variant(role: str, rate: float, args: argparse.Namespace) -> str:
    return f"{ROLES[role]}, noise {round(100 * rate)} %{budget(args)}"


def run_config(raw: dict) -> dict:
    """The experiment without machine-specific paths: its digest names the cell's run directory."""
    return {**raw, "data": {**raw["data"], "root": "KDISTILL_DATA/mnist"}}


def record_config(raw: dict) -> dict:
    """What a variant's runs share in the records (the seed is the record's own field): the experiment
    without the seed, the name made from it, or the noise draw's seed (which follows the run's)."""
    config = run_config(raw)
    noise = {**config["data"]["label_noise"], "seed": "the run's seed"}
    return {**{k: v for k, v in config.items() if k not in ("name", "seed")},
            "data": {**config["data"], "label_noise": noise}}


def run_cell(records: Records, rate: float, seed: int, args: argparse.Namespace) -> None:
    raw = experiment(rate, seed, args)
    config_key = record_config(raw)
    if all(records.find(variant(role, rate, args), seed, config_key) for role in ROLES):
        return
    run_dir = WORK / BENCHMARK / "runs" / f"{raw['name']}-{config_digest(run_config(raw))}"
    config = validate({**raw, "output_dir": str(run_dir), "baselines_dir": str(WORK / BENCHMARK / "baselines")})
    with Timer() as timer:
        result = run_experiment(config, run_dir, resume=(run_dir / "config.yaml").exists(), progress=False)
    diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
    noise_file = run_dir / "label_noise.json"
    realised = json.loads(noise_file.read_text())["realised_rate"] if noise_file.exists() else 0.0
    for row in result.rows:
        if row.role not in ROLES or records.find(variant(row.role, rate, args), seed, config_key):
            continue
        metrics = {"test_acc": round(100 * row.accuracy, 2), "noise_rate": rate, "realised_noise_rate": realised,
                   "ece": diagnostics["models"][row.role]["reliability"]["ece"]}
        pair = diagnostics["pairs"].get(row.role)
        if pair:
            metrics.update(agreement=pair["agreement"], kl=pair["kl"])
        records.append(variant(row.role, rate, args), seed, config_key, metrics, timer.seconds, params=row.parameters,
                       run_dir=str(run_dir.relative_to(WORK)))
    print(f"noise {rate:.0%} seed {seed}: " + ", ".join(f"{ROLES[r.role]} {100 * r.accuracy:.2f}"
                                                       for r in result.rows if r.role in ROLES)
          + f" ({timer.seconds:.0f} s)", flush=True)


def noise_table(rates: list[float], args: argparse.Namespace) -> str:
    """Mean +- std test accuracy per noise level; distilled - scratch per seed, then averaged."""
    records = [r for r in load(BENCHMARK) if "noise_rate" in r["metrics"]]
    rows = []
    for rate in rates:
        by_role = {}
        for role in ROLES.values():
            runs = {r["seed"]: r["metrics"] for r in records
                    if r["variant"] == f"{role}, noise {round(100 * rate)} %{budget(args)}"}
            by_role[role] = runs
        if not any(by_role.values()):
            continue

        def cell(values: list[float]) -> str:
            if not values:
                return ""
            return f"{values[0]:.2f}" if len(values) == 1 else (f"{statistics.mean(values):.2f} +- "
                                                                 f"{statistics.stdev(values):.2f}")

        seeds = sorted(set(by_role["scratch"]) & set(by_role["distilled"]))
        gains = [by_role["distilled"][s]["test_acc"] - by_role["scratch"][s]["test_acc"] for s in seeds]
        agreement = [100 * by_role["distilled"][s]["agreement"] for s in seeds]
        realised = [100 * m["realised_noise_rate"] for m in by_role["scratch"].values()]
        rows.append([f"{round(100 * rate)} %", cell(realised)] + [cell([m["test_acc"] for m in by_role[role].values()])
                                                                    for role in ROLES.values()]
                    + [cell(gains), cell(agreement), str(len(seeds))])
    header = ["noise", "realised %", "teacher acc %", "scratch acc %", "distilled acc %", "distilled - scratch",
              "distilled-teacher agreement %", "seeds"]
    return markdown_table(header, rows)


def forward_options(args: argparse.Namespace, unknown: list[str]) -> None:
    """The tuning / pair parts' own options (`--trials 10`, `--pair-epochs 3`) onto `args`, values read
    as YAML scalars (numbers stay numbers); an option given several values becomes a list."""
    name, values = None, []
    for token in [*unknown, "--"]:
        if token.startswith("--"):
            if name:
                parsed = [yaml.safe_load(v) for v in values]
                setattr(args, name, True if not parsed else parsed[0] if len(parsed) == 1 else parsed)
            name, values = token[2:].replace("-", "_"), []
        else:
            values.append(token)


def other_part(name: str, records: Records, args: argparse.Namespace) -> None:
    """tuning / pair: benchmarks/tuning_parts.py, written alongside `kdistill tune` and `kdistill pair`."""
    if importlib.util.find_spec("tuning_parts") is None:
        sys.exit(f"--part {name}: benchmarks/tuning_parts.py is not there yet (it provides run_{name}(records, args))")
    import tuning_parts

    getattr(tuning_parts, f"run_{name}")(records, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("noise", "tuning", "pair"), default="noise")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--teacher-epochs", type=int, default=DEFAULT_EPOCHS[0])
    parser.add_argument("--student-epochs", type=int, default=DEFAULT_EPOCHS[1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only print the noise table from the records")
    args, unknown = parser.parse_known_args()  # the tuning / pair parts may take their own options
    if unknown and args.part == "noise":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    if args.part != "noise":
        forward_options(args, unknown)
        other_part(args.part, records, args)
        return
    if not args.table:
        for seed in args.seeds:  # every noise level's first seed first
            for rate in args.rates:
                run_cell(records, rate, seed, args)
    print(noise_table(args.rates, args))


if __name__ == "__main__":
    Path(WORK / BENCHMARK).mkdir(parents=True, exist_ok=True)
    main()
