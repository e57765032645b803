"""What a fit records in its run directory (`fit.json`), so that no fit overwrites another's run.

`Distiller.fit(run_dir=..., resume=False)` starts a run over: it would replace the checkpoint,
metrics and weights in `run_dir`. Before any work, the fit writes what it is (the digests of the
student's initial weights and the teachers', the methods and their options, the optimiser,
schedule, batch size, epochs, seed, augmentation, the training set's type and size) to
`fit.json`. A later fit without resume may reuse the directory only when it holds no progress (no
checkpoint, no final weights, no epoch in `metrics.jsonl`: a run that failed early), or when its
record is this same fit's (a rerun, which recomputes the same run). Any other run there is
refused with one line: pass resume=True to continue it, or choose another run_dir.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from kdistill.collectives import World, broadcast_object
from kdistill.digest import model_digest
from kdistill.engine.cache import augment_key
from kdistill.errors import BadInput, StorageFailure

LOG = logging.getLogger("kdistill")
RECORD = "fit.json"


def _settings(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else repr(value)


def fit_identity(distiller: Any, train: Any, epochs: int) -> dict[str, Any]:
    """What makes this fit this fit: computed before training, from the models as given."""
    dataset = getattr(train, "dataset", train)
    return {
        "student": model_digest(distiller.student.model)[:16],
        "teachers": model_digest(*[t.model for t in distiller.teachers])[:16] if distiller.teachers else None,
        "methods": [[m.label, type(m).__qualname__, m.extra_repr(), m.start_epoch, m.end_epoch]
                    for m in distiller.methods],
        "optimizer": _settings(distiller.optimizer_settings),
        "schedule": _settings(distiller.schedule_settings),
        "epochs": epochs,
        "seed": distiller.seed,
        "batch_size": distiller.batch_size,
        "accumulate_steps": distiller.accumulate_steps,
        "precision": distiller.precision,
        "grad_clip": distiller.grad_clip,
        "augment": json.loads(json.dumps(augment_key(distiller.augment), default=str))
        if distiller.augment.active else None,
        "data": [type(dataset).__qualname__, len(dataset) if hasattr(dataset, "__len__") else None],
        # absent unless set: the fit records written before it existed still match
        **({"group_by_length": True} if getattr(distiller, "group_by_length", False) else {}),
    }


def _progress(run_dir: Path) -> str | None:
    """What in `run_dir` a fresh start would destroy: a checkpoint, final weights, epoch records."""
    for name, what in (("checkpoints/last.pt", "checkpoint"), ("student.pt", "trained weights")):
        if (run_dir / name).exists():
            return what
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        return "epoch metrics"
    return None


def _previous(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_dir_problem(run_dir: Path, identity: dict[str, Any]) -> str | None:
    """One line saying why this fit may not start over in `run_dir`, or None."""
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        return f"run_dir {run_dir}: is a file, not a directory; choose another run_dir"
    what = _progress(run_dir)
    if what is None:
        return None
    previous = _previous(run_dir)
    if previous == json.loads(json.dumps(identity)):
        LOG.warning("kdistill: %s holds the %s of an earlier run of this same fit; starting it over because "
                    "resume=False (pass resume=True to continue it instead)", run_dir, what)
        return None
    fix = "pass resume=True to continue that run, or choose another run_dir"
    if previous is None:
        return f"run_dir {run_dir}: holds the {what} of another run (no {RECORD} says what ran); {fix}"
    differ = sorted(k for k in {*identity, *previous} if previous.get(k) != json.loads(json.dumps(identity.get(k))))
    return f"run_dir {run_dir}: holds the {what} of another run (it differs in: {', '.join(differ)}); {fix}"


def claim_run_dir(run_dir: Path | None, identity: dict[str, Any], world: World) -> None:
    """Refuse another run's directory (on every rank alike), else record this fit and start its
    metrics afresh. Rank 0 alone reads and writes; the others follow its verdict."""
    if run_dir is None:
        return
    verdict = None
    if world.is_main:
        try:
            verdict = run_dir_problem(run_dir, identity)
            if verdict is None:
                run_dir.mkdir(parents=True, exist_ok=True)
                tmp = run_dir / f".{RECORD}.tmp"
                tmp.write_text(json.dumps(identity, indent=1))
                os.replace(tmp, run_dir / RECORD)
                (run_dir / "metrics.jsonl").write_text("")
        except OSError as error:
            verdict = ("storage", f"cannot write the run directory {run_dir}: {error.strerror or error}")
    verdict = broadcast_object(verdict)
    if isinstance(verdict, tuple):
        raise StorageFailure(verdict[1])
    if verdict is not None:
        raise BadInput(verdict)
