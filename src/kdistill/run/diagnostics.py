"""After training: the test-set diagnostics of every model of the run, saved as `diagnostics.json`.

The experiment watches the rows a strategy profiles (`watch_profiles`): each row's model is kept with
its role, whatever the strategy (standard, born-again, chains, a user's own), so the diagnostics need
no knowledge of stage folders. The teachers come from the run's `Teachers` (a teacher of another
task is left out: it has no predictions over these classes). The file holds numbers only, so
`kdistill report RUN_DIR` rebuilds the reports without loading any model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.data.transforms import Normalize
from kdistill.engine.device import resolve_device
from kdistill.engine.distributed import World
from kdistill.engine.loaders import make_loader
from kdistill.evaluate.diagnostics import diagnose, predict_logits
from kdistill.results import DISTILLED, SCRATCH, ModelResult
from kdistill.run.context import StrategyContext

DIAGNOSTICS_FILE = "diagnostics.json"
LOG = logging.getLogger("kdistill")


class ProfiledModels:
    """Every (role, model) a strategy profiles, in order: wraps `ctx.profile` for the run's length."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.models: dict[str, nn.Module] = {}
        profile = ctx.profile

        def watched(role: str, model: nn.Module, accuracy: float | None = None) -> ModelResult:
            self.models[role] = model
            return profile(role, model, accuracy)

        ctx.profile = watched  # type: ignore[method-assign]


def _roles(teacher_roles: list[str], student_roles: list[str]) -> tuple[str | None, str | None, str | None]:
    teacher = teacher_roles[0] if teacher_roles else None
    scratch = SCRATCH if SCRATCH in student_roles else None
    others = [r for r in student_roles if r != SCRATCH]
    distilled = DISTILLED if DISTILLED in others else (others[-1] if others else None)
    return teacher, scratch, distilled


def run_diagnostics(ctx: StrategyContext, profiled: ProfiledModels) -> dict[str, Any]:
    """Test logits of the run's teachers and profiled students, then `evaluate.diagnostics.diagnose`."""
    bundle, config = ctx.bundle, ctx.config
    device = resolve_device(config.training.device)
    loader = make_loader(bundle.test, train=False, batch_size=config.data.batch_size,
                         eval_batch_size=config.data.eval_batch_size, seed=0, world=World(), device=device)
    entries: list[tuple[str, nn.Module, Normalize]] = []
    teachers = ctx.teachers
    single = len(teachers.models) == 1
    for index, (model, norm) in enumerate(zip(teachers.models, teachers.norms, strict=True)):
        if teachers.specs[index].num_classes not in (None, bundle.num_classes):
            continue
        entries.append(("teacher" if single else f"teacher {index + 1} ({teachers.specs[index].name})", model, norm))
    teacher_roles = [role for role, _, _ in entries]
    entries += [(role, model, ctx.student_norm) for role, model in profiled.models.items()]
    logits, labels = {}, None
    for role, model, norm in entries:
        logits[role], labels = predict_logits(model, loader, device, norm)
    if labels is None:
        return {}
    teacher, scratch, distilled = _roles(teacher_roles, list(profiled.models))
    return diagnose(logits, labels, bundle.num_classes, teacher, scratch, distilled, bundle.classes or None)


def diagnostics_or_warning(ctx: StrategyContext, profiled: ProfiledModels) -> dict[str, Any]:
    """`run_diagnostics`, or {} with a warning: a finished run's models and results are kept either way
    (a model whose outputs the diagnostics cannot read must not fail the run after its training)."""
    try:
        return run_diagnostics(ctx, profiled)
    except Exception as error:
        LOG.warning("kdistill: no diagnostics for this run (%s: %s); the results and models are saved",
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return {}


def write_diagnostics(run_dir: Path, diagnostics: dict[str, Any]) -> Path | None:
    """`diagnostics.json` (none when there is nothing to write: no model, or diagnostics that failed)."""
    if not diagnostics:
        return None
    path = Path(run_dir) / DIAGNOSTICS_FILE
    path.write_text(json.dumps(diagnostics, indent=1, allow_nan=True))
    return path


def distilled_outcomes(diagnostics: dict[str, Any] | None) -> tuple[str | None, Any] | None:
    """(labels digest, right / wrong per test sample) of the distilled student, where the run kept them
    and they read back (None for an older or damaged file); the digest is None where not kept."""
    from kdistill.evaluate.paired import outcomes_from_bits

    try:
        model = diagnostics["models"][diagnostics["roles"]["distilled"]]
        return diagnostics.get("labels_digest"), outcomes_from_bits(model["correct"], diagnostics["test_samples"])
    except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
        return None


def read_diagnostics(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / DIAGNOSTICS_FILE
    return json.loads(path.read_text()) if path.exists() else None


__all__ = ["DIAGNOSTICS_FILE", "ProfiledModels", "diagnostics_or_warning", "distilled_outcomes", "read_diagnostics",
           "run_diagnostics", "write_diagnostics"]
