"""A search from start to finish: the study in SQLite in the run directory, resumable, and its results.

    run_dir/
      experiment.yaml        the experiment as given (with --set applied): what --resume reads
      study.db               the Optuna study (RDBStorage over SQLite): every trial, its values, its state
      teacher/               a teacher without a checkpoint, trained once for all trials (held-out data)
      trials/trial-NNNN/     each trial's run directory (config.yaml, metrics.jsonl, report.md, ...)
      best.yaml              the experiment with the best trial's values: `kdistill run best.yaml`
      tune.json, tune.md     every trial (state, value, values, evaluations) and the best
      tune-*.png             optimisation history, parameter importances, intermediate values

Resume: trials that finished (complete or pruned) are kept and count towards `--trials`; a trial
cut short (Ctrl-C, a killed process) is marked failed and its values are queued again, so the
search goes on where it stopped.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdistill.config_error import ConfigError
from kdistill.engine.checkpoint import atomic_write_text
from kdistill.engine.seed import derive_seed
from kdistill.errors import BadInput
from kdistill.tune.confirm import confirm, confirmation_lines
from kdistill.tune.data import tuning_raw
from kdistill.tune.noise import is_accuracy, noise_bound, noise_sentence
from kdistill.tune.objective import make_objective
from kdistill.tune.plots import write_plots
from kdistill.tune.space import SearchDimension, check_space, with_params
from kdistill.tune.spec import TuneSpec

STUDY_NAME = "kdistill-tune"
EXPERIMENT_FILE = "experiment.yaml"
DATABASE = "study.db"
BEST_CONFIG = "best.yaml"
SUMMARY_JSON, SUMMARY_MD = "tune.json", "tune.md"
TEACHER_SECTIONS = ("teacher", "teachers")
VALIDATION_SAMPLES = "validation_samples"  # the study's user attribute: the split's size, for the noise bound


@dataclass
class SearchResult:
    run_dir: Path
    study: Any  # optuna.Study
    best_params: dict[str, Any] | None
    best_value: float | None
    best_config: Path | None
    plots: dict[str, str]


def search_plan(raw: dict[str, Any]) -> tuple[TuneSpec, list[SearchDimension]]:
    """The `tune:` section and its dimensions, every path checked against the experiment."""
    from kdistill.config import validate

    config = validate(raw)
    if config.tune is None:
        raise BadInput("tune: the experiment has no tune: section; add one, e.g. "
                       "tune: {space: {methods[0].temperature: {low: 1, high: 8}}}")
    return config.tune, check_space(raw, config.tune)


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / DATABASE).resolve()}"


def _sampler(spec: TuneSpec, seed: int) -> Any:
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.random_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(run_dir: Path, spec: TuneSpec, seed: int) -> Any:
    """The search's study in `run_dir` (created, or loaded with every trial it holds)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial ends the search with its own one-line error
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs)
              if spec.pruner == "median" else optuna.pruners.NopPruner())
    storage = optuna.storages.RDBStorage(storage_url(run_dir))
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=_sampler(spec, seed), pruner=pruner,
                                direction=spec.resolved_direction(), load_if_exists=True)
    if study.trials:  # a resumed search: a fresh stream, or its first draws would repeat the first trials' values
        study.sampler = _sampler(spec, seed + len(study.trials))
    return study


def requeue_interrupted(study: Any) -> list[int]:
    """Trials cut short by an interrupt or a killed process: marked failed, their values queued again."""
    from optuna.trial import TrialState

    requeued = []
    for trial in study.get_trials(deepcopy=False):
        killed = trial.state == TrialState.RUNNING  # nothing runs now: its process died
        if killed:
            study.tell(trial.number, state=TrialState.FAIL)
        key = f"requeued-{trial.number}"
        cut_short = killed or (trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted"))
        if cut_short and not study.user_attrs.get(key):
            study.enqueue_trial(trial.params, skip_if_exists=False)
            study.set_user_attr(key, True)
            requeued.append(trial.number)
    return requeued


def finished_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def pretrain_teachers(raw: dict[str, Any], dimensions: list[SearchDimension], run_dir: Path,
                      progress: bool) -> dict[str, Any]:
    """Train each teacher that has no checkpoint once, on the held-out data, and point the experiment at it.

    Not when a searched field belongs to a teacher: then every trial trains its own."""
    from kdistill.config import validate
    from kdistill.run.data import load_data
    from kdistill.run.teachers import prepare_teachers
    from kdistill.strategies.stages import FINAL_WEIGHTS

    if any(d.path.split(".")[0].split("[")[0] in TEACHER_SECTIONS for d in dimensions):
        return raw
    config = validate({**tuning_raw(raw), "baseline": False})
    specs = config.teacher_specs()
    if not specs or all(spec.checkpoint is not None for spec in specs):
        return raw
    bundle, train, val = load_data(config)
    prepare_teachers(config, bundle, train, val, run_dir, resume=True, progress=progress)
    changed = copy.deepcopy(raw)
    entries = [changed["teacher"]] if changed.get("teacher") else changed["teachers"]
    for index, entry in enumerate(entries):
        if entry.get("checkpoint"):
            continue
        stage = run_dir / (f"teacher-{index + 1}" if len(entries) > 1 else "teacher")
        entry["checkpoint"] = str((stage / FINAL_WEIGHTS).resolve())
        entry.setdefault("normalize", "dataset")  # what a teacher trained in the run sees
        entry.pop("training", None)
    return changed


def run_search(raw: dict[str, Any] | None, run_dir: Path, trials: int | None = None, resume: bool = False,
               progress: bool = False, announce: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or resume) the search of `raw` in `run_dir` until `trials` trials have finished."""
    run_dir = Path(run_dir)
    if resume:  # the study is made after the shared teacher trains: a stop during that leaves no database yet
        if not (run_dir / EXPERIMENT_FILE).is_file():
            raise BadInput(f"--resume {run_dir}: not a tuning run directory (no {EXPERIMENT_FILE})")
        raw = yaml.safe_load((run_dir / EXPERIMENT_FILE).read_text())
    elif raw is None:
        raise BadInput("tune: give the experiment file to search")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise BadInput(f"--output-dir: {run_dir} already exists and is not empty; continue it with "
                       f"`kdistill tune --resume {run_dir}`, or choose another directory")
    spec, dimensions = search_plan(raw)
    if trials is not None and trials < 1:
        raise BadInput(f"--trials: must be >= 1 (got {trials})")
    target = trials or spec.trials
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_text(run_dir / EXPERIMENT_FILE, yaml.safe_dump(raw, sort_keys=False))
    base = tuning_raw(pretrain_teachers(raw, dimensions, run_dir, progress))
    seed = int(raw.get("seed", 0) or 0)
    study = open_study(run_dir, spec, seed)
    if is_accuracy(spec.metric) and VALIDATION_SAMPLES not in study.user_attrs:
        study.set_user_attr(VALIDATION_SAMPLES, validation_samples(base))
    requeued = requeue_interrupted(study)
    if requeued and announce:
        announce(f"trials {requeued} were cut short: their values are queued again")
    remaining = target - len(finished_trials(study))
    if remaining > 0:
        run_trials(study, make_objective(base, dimensions, spec, run_dir, progress, announce), remaining, spec, seed)
    if not spec.confirm_top:
        return write_outcome(study, raw, run_dir, spec)
    write_outcome(study, raw, run_dir, spec)  # the search's own outcome first: an interrupted confirmation keeps it
    return write_outcome(study, raw, run_dir, spec, confirm(study, base, spec, run_dir, progress, announce))


def run_trials(study: Any, objective: Callable[[Any], float], count: int, spec: TuneSpec, seed: int) -> None:
    """`count` more trials, each drawn by a sampler seeded from (seed, trials finished before it): the
    values a trial tries depend on the search's history alone, not on where a run of it stopped. One
    sampler for the whole search drew a resumed search's trials from another stream (an interrupted
    search tried other values than the uninterrupted one); queued values (a trial cut short) draw nothing."""
    for _ in range(count):
        study.sampler = _sampler(spec, derive_seed(seed, len(finished_trials(study))))
        study.optimize(objective, n_trials=1)


def validation_samples(base: dict[str, Any]) -> int | None:
    """How many samples a trial's validation score counts (the held-out split of `base`)."""
    from kdistill.config import validate
    from kdistill.run.data import load_data

    data = {k: v for k, v in (base.get("data") or {}).items() if k != "transfer_set"}  # not needed to count
    _, _, val = load_data(validate({**base, "data": data, "baseline": False}))
    try:
        return len(val) if val is not None else None
    except TypeError:  # an iterable validation set without a length: no bound
        return None


def best_trial(study: Any) -> Any | None:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def write_outcome(study: Any, raw: dict[str, Any], run_dir: Path, spec: TuneSpec,
                  confirmation: list[dict[str, Any]] | None = None) -> SearchResult:
    """best.yaml (checked), tune.json, tune.md and the plots. With a confirmation (`confirm`), best.yaml
    holds its best mean rather than the best single-seed score."""
    from kdistill.config import validate

    best = best_trial(study)
    best_value = best.value if best is not None else None
    if confirmation and confirmation[0]["mean"] is not None:
        best = study.trials[confirmation[0]["number"]]
        best_value = confirmation[0]["mean"]
    best_path = None
    if best is not None:
        best_raw = with_params(raw, best.params)
        best_raw.pop("tune", None)
        try:
            validate(best_raw)
        except ConfigError as error:  # cannot happen for a completed trial; say so rather than write it
            raise BadInput(f"best.yaml: the best trial's config does not validate: {error.problems[0]}") from error
        header = (f"# kdistill tune: best of {len(finished_trials(study))} trials (trial {best.number}, "
                  f"{spec.metric} {best.value:.6g} on the validation split)\n")
        if confirmation and confirmation[0]["mean"] is not None:
            header = (f"# kdistill tune: trial {best.number}, the best mean {spec.metric} ({best_value:.6g}) over "
                      f"{len(confirmation[0]['seeds'])} seeds of the {len(confirmation)} leading trials of "
                      f"{len(finished_trials(study))} (validation split)\n")
        best_path = run_dir / BEST_CONFIG
        atomic_write_text(best_path, header + yaml.safe_dump(best_raw, sort_keys=False))
    plots = write_plots(study, run_dir)
    summary = summarise(study, spec, best, plots, run_dir)
    if confirmation:
        summary["confirmation"] = confirmation
        if confirmation[0]["mean"] is not None:
            summary["best"]["mean"] = best_value
    atomic_write_text(run_dir / SUMMARY_JSON, json.dumps(summary, indent=2, default=str))
    atomic_write_text(run_dir / SUMMARY_MD, markdown(summary))
    return SearchResult(run_dir, study, best.params if best else None, best_value, best_path, plots)


def summarise(study: Any, spec: TuneSpec, best: Any | None, plots: dict[str, str],
              run_dir: Path | None = None) -> dict[str, Any]:
    trials = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
               "evaluations": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
               "run_dir": t.user_attrs.get("run_dir")} for t in study.get_trials(deepcopy=False)]
    return {"metric": spec.metric, "direction": spec.resolved_direction(), "space": list(spec.space),
            "trials": trials, "best": None if best is None else {"number": best.number, "value": best.value,
                                                                 "params": best.params},
            "best_config": BEST_CONFIG if best is not None else None, "plots": plots,
            "sampler": {"name": spec.sampler, "random_trials": spec.random_trials if spec.sampler == "tpe" else None},
            "noise": noise_bound(trials, study.user_attrs.get(VALIDATION_SAMPLES), spec.metric,
                                 spec.resolved_direction() == "maximize", run_dir,
                                 single.number if (single := best_trial(study)) is not None else None)}


def sampler_sentence(summary: dict[str, Any]) -> str | None:
    """How TPE chose the trials: its first `random_trials` are random draws, which a short search
    may never get past (then it is a random search, and the reader should know)."""
    sampler = summary.get("sampler") or {}
    if sampler.get("name") != "tpe":
        return None
    start = sampler["random_trials"]
    trials = len([t for t in summary["trials"] if t["state"] in ("complete", "pruned")])
    if trials <= start:
        return (f"**A random search.** TPE draws its first {start} trials at random (`tune.random_trials`) and "
                f"the search has {trials}: every trial is a random draw. Lower `tune.random_trials` or raise "
                "`--trials` for trials chosen from the ones before.")
    return (f"Sampler: TPE; its first {start} trials were random draws (`tune.random_trials`), the "
            f"{trials - start} after them chosen from the ones before.")


def markdown(summary: dict[str, Any]) -> str:
    paths = summary["space"]
    lines = [f"# Tuning: {summary['metric']} ({summary['direction']}), scored on the validation split", ""]
    best = summary["best"]
    if best is not None:
        score = f"{summary['metric']} {best['value']:.4f}"
        if "mean" in best:
            seeds = len(summary["confirmation"][0]["seeds"])
            score = f"mean {summary['metric']} {best['mean']:.4f} over {seeds} seeds (its own: {best['value']:.4f})"
        lines += [f"Best: trial {best['number']}, {score}: "
                  + ", ".join(f"`{k}` = {_fmt(v)}" for k, v in best["params"].items())
                  + f". Its experiment: `{summary['best_config']}` (run it with `kdistill run "
                  f"{summary['best_config']}`; the test set was not read by the search).", ""]
        warning = noise_sentence(summary)
        if warning:
            lines += [f"**Within noise.** {warning}", ""]
        sampling = sampler_sentence(summary)
        if sampling:
            lines += [sampling, ""]
        lines += confirmation_lines(summary.get("confirmation") or [], summary["metric"])
    else:
        lines += ["No trial finished yet.", ""]
    lines += ["| trial | state | " + " | ".join(f"`{p}`" for p in paths) + f" | {summary['metric']} | evaluations |",
              "|" + "---|" * (len(paths) + 4)]
    for trial in summary["trials"]:
        values = " | ".join(_fmt(trial["params"].get(p)) for p in paths)
        score = "-" if trial["value"] is None else f"{trial['value']:.4f}"
        score = f"({score} when pruned)" if trial["state"] == "pruned" and trial["value"] is not None else score
        lines.append(f"| {trial['number']} | {trial['state']} | {values} | {score} | {len(trial['evaluations'])} |")
    lines.append("")
    for name, target in summary["plots"].items():
        lines.append(f"![{name}]({target})" if target.endswith(".png") else f"- {name}: {target}")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["BEST_CONFIG", "DATABASE", "EXPERIMENT_FILE", "SearchResult", "noise_sentence", "open_study",
           "requeue_interrupted", "run_search", "sampler_sentence", "search_plan", "storage_url"]
