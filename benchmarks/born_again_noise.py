"""Issue 8: a born-again student that beats its own teacher, and where it does not.

Born-again networks (Furlanello et al. 2018): a student of the teacher's own architecture, trained
to match the teacher's output distribution (KL at T = 1, no label term: the paper's recipe and
kdistill's `born_again` default), then generation 2 from generation 1. On clean data the earlier
attempts here did not beat their teachers (MNIST 784-1200-1200: 89.0 +- 6.1 errors against 82;
CIFAR-10 resnet8 at 20 epochs: 78.80 % against 79.89 %). Self-distillation is known to help most
where the labels are noisy (Li et al. 2017; Das & Sanghavi 2023, "Understanding self-distillation
in the presence of label noise"): a teacher trained on noisy labels predicts the true class for
many of the training images whose label is wrong, so its soft targets are cleaner than the labels
it learned from.

Set-up (the noise benchmark's, `noise_and_tuning.py`): MNIST, 20,000 training images (18,000 after
the 10 % validation split), symmetric label noise injected into the training labels only (validation
and test stay clean), teacher and every student an MLP 784-400-400 trained 10 epochs with AdamW
(lr 1e-3, cosine); the scratch row is the same architecture and recipe from the (noisy) labels, a
second teacher in all but seed. Each (noise, seed) cell is one `kdistill run` experiment with
`strategy: born_again`, so the result is what a user's YAML gives.

    python benchmarks/born_again_noise.py [--rates 0 0.2 0.4] [--seeds 0 1 2] [--threads 1]
    python benchmarks/born_again_noise.py --table
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import keep_freed_memory, markdown_table, shared_data
from _records import WORK, Records, Timer, config_digest, load
from noise_and_tuning import record_config, run_config
from table import cell, latest_runs

from kdistill.config import validate
from kdistill.experiment import run_experiment

BENCHMARK = "born_again_noise"
GENERATIONS = 2
# the report's row names -> the records' variant prefixes
ROLES = {"teacher": "teacher", "student (scratch)": "scratch", "born-again generation 1": "generation 1",
         "student (distilled)": f"generation {GENERATIONS}", f"ensemble of {GENERATIONS} generations": "ensemble"}


def experiment(rate: float, seed: int, epochs: int, train_limit: int) -> dict:
    """The experiment file of one (noise, seed) cell, as a mapping."""
    training = {"epochs": epochs, "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0},
                "schedule": {"name": "cosine"}}
    mlp = {"name": "mlp", "options": {"hidden": [400, 400]}}
    return {
        "name": f"mnist-ban-noise{round(100 * rate)}-seed{seed}", "seed": seed,
        "data": {"name": "mnist", "root": str(shared_data() / "mnist"), "val_fraction": 0.1,
                 "train_limit": train_limit, "batch_size": 128,
                 "label_noise": {"rate": rate, "kind": "symmetric", "seed": seed}},
        "teacher": {**mlp, "training": training},
        "student": mlp,
        "methods": [{"name": "soft_target", "weight": 1.0, "temperature": 1.0}],  # BAN: match the teacher
        "training": {**training, "device": "cpu"},
        "strategy": {"name": "born_again", "generations": GENERATIONS},
        "baseline": True,
    }


def variant(role: str, rate: float) -> str:
    return f"{ROLES[role]}, noise {round(100 * rate)} %"


def runcell(records: Records, rate: float, seed: int, args: argparse.Namespace) -> None:
    raw = experiment(rate, seed, args.epochs, args.train_limit)
    config_key = record_config(raw)
    if all(records.find(variant(role, rate), seed, config_key) for role in ROLES):
        return
    run_dir = WORK / BENCHMARK / "runs" / f"{raw['name']}-{config_digest(run_config(raw))}"
    config = validate({**raw, "output_dir": str(run_dir), "baselines_dir": str(WORK / BENCHMARK / "baselines")})
    with Timer() as timer:
        result = run_experiment(config, run_dir, resume=(run_dir / "config.yaml").exists(), progress=False)
    noise_file = run_dir / "label_noise.json"
    realised = json.loads(noise_file.read_text())["realised_rate"] if noise_file.exists() else 0.0
    for row in result.rows:
        if row.role not in ROLES or records.find(variant(row.role, rate), seed, config_key):
            continue
        records.append(variant(row.role, rate), seed, config_key,
                       {"test_acc": round(100 * row.accuracy, 2), "noise_rate": rate, "realised_noise_rate": realised},
                       timer.seconds, params=row.parameters, run_dir=str(run_dir.relative_to(WORK)))
    print(f"noise {rate:.0%} seed {seed}: " + ", ".join(f"{ROLES[r.role]} {100 * r.accuracy:.2f}"
                                                       for r in result.rows if r.role in ROLES)
          + f" ({timer.seconds:.0f} s)", flush=True)


def table(rates: list[float]) -> str:
    """Mean +- std test accuracy per noise level and role; each generation against the model that taught it
    (generation 1: the teacher; generation k: generation k - 1), per seed, then averaged."""
    runs, _ = latest_runs(load(BENCHMARK))  # per variant, its latest config's runs: no mixing across configs
    last, before_last = f"generation {GENERATIONS}", f"generation {GENERATIONS - 1}"
    assert before_last in ROLES.values(), "ROLES names the generation before the last (the last one's teacher)"
    rows = []
    for rate in rates:
        by_role = {name: {r["seed"]: r["metrics"]["test_acc"]
                          for r in runs.get(f"{name}, noise {round(100 * rate)} %", [])} for name in ROLES.values()}
        if not by_role["teacher"]:
            continue
        row = [f"{round(100 * rate)} %"] + [cell(list(by_role[name].values())) for name in ROLES.values()]
        for student, its_teacher in (("generation 1", "teacher"), (last, before_last)):
            seeds = sorted(set(by_role[its_teacher]) & set(by_role[student]))
            gains = [by_role[student][s] - by_role[its_teacher][s] for s in seeds]
            row += [cell(gains), f"{sum(g > 0 for g in gains)} of {len(gains)}"]
        rows.append(row)
    header = (["noise"] + [f"{name} acc %" for name in ROLES.values()]
              + ["gen 1 - teacher", "gen 1 above teacher", f"gen {GENERATIONS} - gen {GENERATIONS - 1} (its teacher)",
                 f"gen {GENERATIONS} above gen {GENERATIONS - 1}"])
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--epochs", type=int, default=10, help="teacher and every generation")
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only print the table from the records")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    if not args.table:
        records = Records(BENCHMARK)
        for seed in args.seeds:  # every noise level's first seed first
            for rate in args.rates:
                runcell(records, rate, seed, args)
    print(table(args.rates))


if __name__ == "__main__":
    main()
