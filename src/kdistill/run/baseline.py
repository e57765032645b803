"""The scratch baseline: the student trained from the labels alone, with the run's seed and training.

It doubles the cost of a run, so it is off unless asked for (`baseline: true`, `kdistill run
--baseline`; the built-in demo asks). It depends only on the data, the student, the training
settings and the seed, so a finished baseline is kept in a shared folder under a digest of
exactly those (`baselines_dir`, by default `.baselines/` beside the run directory:
`runs/.baselines/<digest>/`), and a later run that asks for the same baseline copies it into its
`student-scratch/` instead of training it again. The digest also covers the contents of the
training and validation sets (for in-memory data sets), the student's checkpoint file, the device
type and the number of processes (not `data.transfer_set` nor `student.embedding_init`: the
baseline trains on the training split from a random start either way). It does not cover the
code: after changing a model's code, delete the folder (or set another `baselines_dir`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.collectives import barrier, broadcast_object, current_world
from kdistill.config import ExperimentConfig
from kdistill.data import InMemoryDataset
from kdistill.engine.device import resolve_device
from kdistill.methods import HardLabel
from kdistill.run.context import StrategyContext
from kdistill.strategies.stages import load_stage, stage_done, stage_started

LOG = logging.getLogger("kdistill")
BASELINE_STAGE = "student-scratch"
KEPT_FILES = ("student.pt", "metrics.jsonl", "notes.json", "stage.json")  # a finished stage, without checkpoints
INFO_FILE = "baseline.json"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def baseline_inputs(config: ExperimentConfig, train: Any, val: Any, run_dir: Path | None = None) -> dict[str, Any]:
    """What the scratch student depends on: data, student, training, seed (and where they are read from);
    for a student cut from a teacher's weights file (`teacher_checkpoint`, or `run`: this run's teacher,
    trained by now), that file's contents too."""
    # neither reaches the scratch student (labels only, random start), so neither changes its digest
    student = config.student.model_dump(mode="json", exclude={"embedding_init"})
    for key in ("vocabulary", "vocabulary_size"):  # absent unless set: stored baselines keep their digests
        if student[key] is None:
            del student[key]
    if student["vocabulary_fallback"] == "unk":
        del student["vocabulary_fallback"]
    if config.student.checkpoint is not None:
        student["checkpoint_sha256"] = _file_digest(config.student.checkpoint)
    cut_from = _cut_from(config, run_dir)
    if cut_from is not None:  # absent otherwise: stored baselines keep their digests
        student["teacher_checkpoint_sha256"] = _file_digest(cut_from)
    data = config.data.model_dump(mode="json", exclude={"transfer_set"})
    if not data["group_by_length"]:  # absent unless set: stored baselines keep their digests
        del data["group_by_length"]
    return {
        "data": data,
        "student": student,
        "training": config.training.model_dump(mode="json"),
        "seed": config.seed,
        "data_fingerprints": [d.fingerprint() if isinstance(d, InMemoryDataset) else None for d in (train, val)],
        "device": resolve_device(config.training.device).type,
        "processes": current_world().world_size,
    }


def _cut_from(config: ExperimentConfig, run_dir: Path | None) -> Path | None:
    """The teacher weights file a student cut from a teacher (`hf_from_teacher`) starts from, if any."""
    from kdistill.text.run_teacher import run_teacher_weights, wants_run_teacher

    if wants_run_teacher(config.student):
        return run_teacher_weights(config, run_dir) if run_dir is not None else None
    path = config.student.options.get("teacher_checkpoint")
    return Path(path) if isinstance(path, str) and Path(path).is_file() else None


def baseline_digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def baselines_root(config: ExperimentConfig, run_dir: Path) -> Path:
    return config.baselines_dir if config.baselines_dir is not None else Path(run_dir).parent / ".baselines"


def _copy_stage(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in KEPT_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def _publish(stage_dir: Path, store: Path, info: dict[str, Any]) -> None:
    """Keep a finished baseline for later runs: copied to a temporary folder, then renamed (atomic)."""
    if stage_done(store):
        return
    temporary = store.parent / f".{store.name}.{os.getpid()}.tmp"
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        _copy_stage(stage_dir, temporary)
        (temporary / INFO_FILE).write_text(json.dumps(info, indent=2))
        try:
            os.rename(temporary, store)
        except OSError:  # another run published the same baseline first
            shutil.rmtree(temporary, ignore_errors=True)
    except OSError as error:
        LOG.warning("kdistill: could not keep the scratch baseline in %s (%s); the run goes on", store, error)


def scratch_baseline(ctx: StrategyContext) -> nn.Module:
    """The scratch student of this run: trained (or resumed, or loaded) in `student-scratch/`, or copied
    from the shared baselines folder when a finished one with the same digest is there."""
    stage_dir = ctx.run_dir / BASELINE_STAGE
    inputs = baseline_inputs(ctx.config, ctx.train, ctx.val, ctx.run_dir)
    digest = baseline_digest(inputs)
    store = baselines_root(ctx.config, ctx.run_dir) / digest
    student = ctx.build_student(teacher_init=False)  # the labels-only comparison: no teacher embeddings
    # rank 0 decides: reuse only into a stage this run has not started (a started one resumes)
    reuse = broadcast_object((not stage_started(stage_dir) and stage_done(store)) if ctx.is_main else None)
    info = {"digest": digest, "store": str(store), "reused": bool(reuse), "inputs": inputs}
    if reuse:
        if ctx.is_main:
            _copy_stage(store, stage_dir)
            (stage_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
            LOG.warning("kdistill: %s: reused the scratch baseline kept in %s (same data, student, training and "
                        "seed); delete that folder to train it again", BASELINE_STAGE, store)
        barrier()
        return load_stage(stage_dir, student)
    ctx.fit_stage(BASELINE_STAGE, student, [HardLabel()], teacher=None, record={"baseline": digest})
    if ctx.is_main:
        (stage_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
        _publish(stage_dir, store, {**info, "reused": False, "trained_in": str(stage_dir)})
    return student
