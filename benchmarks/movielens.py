"""Recommendation: MovieLens ratings, a NeuMF scoring model distilled into one with 16x narrower
embeddings.

MovieLens latest-small (`../shared/data/movielens-small`, `kdistill.data.movielens`): will a user
like a movie (4 stars or more)? Split by time per user: each user's last 20 % of ratings are the
test set (19,940 of 100,836), the models predict later tastes from earlier ones; 8 % of test pairs
are movies nobody rated in training (index 0, "unseen"). 10 % of the training ratings are held out
for validation.

Each seed is one `kdistill run` experiment: teacher NeuMF (He et al. 2017) with 64-wide user and
movie embeddings (GMF and MLP paths) and an MLP 128-64, dropout 0.2 (1.16 M parameters, nearly all
embeddings); student the same architecture with 4-wide embeddings and an MLP of 8 (71 k parameters,
6 %); AdamW (teacher 1e-3, students 3e-3, weight decay 1e-4) with a cosine schedule, 10 epochs,
batch 256; the scratch student learns from the labels, the distilled one from 0.9 x KL at T = 2 +
0.1 x labels.

Metrics per model on the test set: accuracy; AUC of the predicted probability of "liked" (how well
the scores rank liked above not-liked pairs, what a recommender's ranking needs); accuracy on the
pairs with an unseen movie (what the user's embedding alone carries).

    OMP_NUM_THREADS=1 python benchmarks/movielens.py [--seeds 0 1 2]
    python benchmarks/movielens.py --table
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _common import markdown_table, shared_data
from _experiment_cells import STAGES, cell_arguments, run_cell, stage_model, start
from _records import Records, load
from table import cell, latest_runs

from kdistill.data.movielens import MOVIES, USERS, load_movielens_bundle

BENCHMARK = "movielens"
VARIANTS = {"teacher": "teacher", "student (scratch)": "scratch", "student (distilled)": "KD"}
SIZES = {"users": USERS, "items": MOVIES}
TEACHER = {**SIZES, "dim": 64, "hidden": [128, 64], "dropout": 0.2}
STUDENT = {**SIZES, "dim": 4, "hidden": [8]}


def experiment(seed: int, epochs: int) -> dict:
    schedule = {"name": "cosine"}
    return {
        "name": f"movielens-seed{seed}", "seed": seed,
        "data": {"name": "movielens", "root": "KDISTILL_DATA/movielens-small", "val_fraction": 0.1,
                 "batch_size": 256},
        "teacher": {"name": "neumf", "options": TEACHER,
                    "training": {"epochs": epochs, "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 1e-4},
                                 "schedule": schedule, "best_metric": "val/acc"}},
        "student": {"name": "neumf", "options": STUDENT},
        "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 2}, {"name": "hard_label", "weight": 0.1}],
        "training": {"epochs": epochs, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 1e-4},
                     "schedule": schedule, "device": "cpu", "best_metric": "val/acc"},
        "baseline": True,
    }


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Probability that a random positive outscores a random negative (ties count half): Mann-Whitney."""
    ranks = torch.empty(len(scores), dtype=torch.float64)
    order = scores.argsort()
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique()[scores.unique(return_counts=True)[1] > 1]:  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def preference_metrics(model: torch.nn.Module, bundle) -> dict[str, float]:
    with torch.no_grad():
        logits = model(bundle.test.inputs)
    predicted, truth = logits.argmax(1), bundle.test.labels
    unseen = bundle.test.inputs[:, 1] == 0
    return {"test_acc": round(100 * float((predicted == truth).float().mean()), 2),
            "auc": round(auc(logits.softmax(1)[:, 1], truth == 1), 4),
            "unseen_movie_acc": round(100 * float((predicted[unseen] == truth[unseen]).float().mean()), 2)}


def best_checkpoint(stage: Path) -> Path:
    """The stage's best.pt; a reused scratch baseline keeps it in the baselines store."""
    path = stage / "checkpoints" / "best.pt"
    if not path.exists() and (stage / "baseline.json").exists():
        path = Path(json.loads((stage / "baseline.json").read_text())["store"]) / "checkpoints" / "best.pt"
    return path


def run_seed(records: Records, seed: int, epochs: int) -> None:
    bundle = load_movielens_bundle(shared_data() / "movielens-small")
    raw = experiment(seed, epochs)

    def metrics(role: str, run_dir: Path, row) -> dict:
        spec = raw["teacher"] if role == "teacher" else raw["student"]
        model = stage_model(run_dir, role, spec, bundle.num_classes, bundle.input_shape)
        found = preference_metrics(model, bundle)
        # the same model at its best validation epoch (every model overfits within 10 epochs here)
        best = torch.load(best_checkpoint(run_dir / STAGES[role]), weights_only=True)
        model.load_state_dict(best["student"])
        at_best = preference_metrics(model, bundle)
        found.update({f"best_epoch_{k}": v for k, v in at_best.items()}, best_epoch=best["epoch"])
        return found

    run_cell(records, BENCHMARK, raw, VARIANTS, metrics)


def table() -> str:
    runs, _ = latest_runs(load(BENCHMARK))
    rows = []
    for role, name in VARIANTS.items():
        found = runs.get(name, [])
        if found:
            scale = {"test_acc": 1, "auc": 100, "unseen_movie_acc": 1,  # AUC shown in percent
                     "best_epoch_test_acc": 1, "best_epoch_auc": 100}
            columns = [cell([scale[m] * r["metrics"][m] for r in found]) if m in found[0]["metrics"] else ""
                       for m in scale]
            rows.append([role, *columns, str(found[0]["params"]), f"{found[0]['latency_ms_b1']:.3f}", str(len(found))])
    return markdown_table(["model", "test acc %", "AUC %", "unseen-movie acc %", "best-epoch test acc %",
                           "best-epoch AUC %", "parameters", "latency b1 ms", "n"],
                          rows)


def main() -> None:
    args = start(cell_arguments(__doc__, epochs=10))
    if not args.table:
        records = Records(BENCHMARK)
        for seed in args.seeds:
            run_seed(records, seed, args.epochs)
    print(table())


if __name__ == "__main__":
    main()
