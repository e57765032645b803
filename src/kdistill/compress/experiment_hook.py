"""An experiment's `compress:` section: after the strategy, its distilled student goes through the
section's stages (prune onwards: the experiment itself was the distil stage), in `<run>/compress/`,
and each stage becomes a row of the run's table.

The experiment calls it as (experiment.py, after the strategy, on the main process):

    if config.compress is not None and main_process:
        rows.extend(compress_after_strategy(ctx, profiled.models.get(DISTILLED), config.compress))
"""

from __future__ import annotations

import copy
import json
import shutil
from typing import Any

from torch import nn

from kdistill.compress.pipeline import CompressionPipeline, StageRow
from kdistill.compress.spec import CompressSpec
from kdistill.compress.table import stage_table
from kdistill.config_error import ConfigError
from kdistill.results import ModelResult

FOLDER = "compress"


def compress_after_strategy(ctx: Any, student: nn.Module | None, spec: CompressSpec) -> list[ModelResult]:
    """Rows `compressed: <stage>` (accuracy, parameters, bytes, latency at the profile's batch size,
    and the whole profile in `extra`); the table also goes to `<run>/compress/compress.md`."""
    if student is None:
        raise ConfigError(["compress: the strategy gave no distilled student to compress"])
    stages = [s for s in spec.stages if s != "distil"]
    if not stages:
        return []
    out = ctx.run_dir / FOLDER
    if ctx.resume and (out / "compress.md").exists():  # finished before: its rows, not a second compression
        stage_rows = [StageRow(**row) for row in json.loads((out / "compress.json").read_text())["rows"]]
    elif out.exists() and any(out.iterdir()) and not ctx.resume:
        raise ConfigError([f"compress: {out} holds an unfinished compression; remove it to compress again"])
    else:  # on resume an unfinished compression (stopped in quantize or export) is done again: it is seeded
        if out.exists():
            shutil.rmtree(out)
        # the choices read the experiment's validation split (or one held out of ctx.train without one)
        pipeline = CompressionPipeline(spec.model_copy(update={"stages": stages}), copy.deepcopy(student),
                                       ctx.train, ctx.bundle.test, ctx.student_norm, out, seed=ctx.config.seed,
                                       val=ctx.val)
        stage_rows = pipeline.run().rows
        (out / "compress.md").write_text(stage_table(stage_rows) + "\n")
    rows = []
    for row in stage_rows:
        if row.stage == "start":
            continue  # the distilled student's own row is already in the table
        profile = row.profile
        rows.append(ModelResult(f"compressed: {row.stage} ({row.artefact})", row.accuracy,
                                int(profile.get("parameters") or 0), int(profile.get("size_bytes") or 0),
                                float(profile.get("latency_batch_ms") or 0.0),
                                extra={"profile": profile, "kept": row.accepted, "note": row.note}))
    return rows
