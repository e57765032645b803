"""`teacher_checkpoint: run` for a student cut from the teacher (`hf_from_teacher`): its blocks come
from the run's own teacher as the run trained (or loaded) it, in one config.

Why: DistilBERT cut its student from the pretrained teacher, but for a small task the fine-tuned
teacher's blocks start the student much closer (on SST-2, docs/benchmarks.md: the best student is
two blocks of the fine-tuned MiniLM). Without this a user ran the teacher first and pointed a
second config at its weights file. The teacher's weights file is known only once it has trained, so
the run resolves `run` when it builds the student: to `<run dir>/teacher/student.pt` for a teacher
trained in the run, to `teacher.checkpoint` for a loaded one. Built before that (the pre-flight
check's throw-away student, `kdistill eval`, which loads trained weights over it), the student is
cut from the pretrained folder: the same shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdistill.errors import BadInput
from kdistill.registry import normalise_name

RUN_TEACHER = "run"  # the value of hf_from_teacher's teacher_checkpoint that names the run's own teacher

CUT_MODEL = normalise_name("hf-from-teacher")
TEACHER_MODELS = {normalise_name("hf-classifier"), normalise_name("hf")}
WHERE = "student.options.teacher_checkpoint"


def wants_run_teacher(spec: Any) -> bool:
    return normalise_name(spec.name) == CUT_MODEL and spec.options.get("teacher_checkpoint") == RUN_TEACHER


def with_run_teacher(spec: Any, weights: Path | None) -> Any:
    """`spec` with `teacher_checkpoint: run` replaced by `weights` (None: the pretrained folder's, for a
    model whose trained weights are loaded over it); any other spec unchanged."""
    if not wants_run_teacher(spec):
        return spec
    options = {**spec.options, "teacher_checkpoint": None if weights is None else str(weights)}
    return spec.model_copy(update={"options": options})


def run_teacher_problems(config: Any) -> list[str]:
    """What makes `run` impossible in this config, checked with the rest of it before anything loads:
    `run` on a model other than the student, several teachers, or a teacher that is not the Hugging Face
    classifier of the student's own folder with the data's head (its weights would not fit)."""
    problems = [f"strategy.assistants[{i}].options.teacher_checkpoint: run is for the student only; give an "
                "assistant the teacher's weights file" for i, spec in enumerate(config.strategy.assistants)
                if wants_run_teacher(spec)]
    if not wants_run_teacher(config.student):
        return problems
    specs = config.teacher_specs()
    if len(specs) != 1:
        return [*problems, f"{WHERE}: run cuts the run's one teacher; this run has {len(specs)} teachers: give "
                           "the weights file of the one to cut"]
    teacher = specs[0]
    student_path = config.student.options.get("path")
    same_folder = _same_folder(teacher.options.get("path"), student_path)
    if normalise_name(teacher.name) not in TEACHER_MODELS or not same_folder:
        problems.append(f"{WHERE}: run cuts the run's teacher, which must be hf-classifier from the student's "
                        f"folder (student path {student_path!r}; teacher {teacher.name} with path "
                        f"{teacher.options.get('path')!r}): make the two paths the same")
    elif teacher.num_classes is not None:
        problems.append(f"{WHERE}: run cuts the run's teacher with its head, which must be of this data's "
                        "classes: remove teacher.num_classes")
    return problems


def _same_folder(a: Any, b: Any) -> bool:
    """Two `path` options naming one model folder (`minilm` and its installed folder are the same)."""
    if a == b:
        return True
    try:
        from kdistill.text.local_models import model_dir

        return model_dir(str(a)).resolve() == model_dir(str(b)).resolve()
    except (BadInput, OSError, TypeError):  # an unreadable path is named by the model's own check
        return False


def run_teacher_weights(config: Any, run_dir: Path) -> Path | None:
    """The file `run` stands for in this run: the loaded teacher's checkpoint, or the trained teacher's
    final weights (None when the config does not ask for `run`)."""
    if not wants_run_teacher(config.student):
        return None
    teacher = config.teacher_specs()[0]
    if teacher.checkpoint is not None:
        return Path(teacher.checkpoint)
    from kdistill.strategies.stages import FINAL_WEIGHTS

    return run_dir / "teacher" / FINAL_WEIGHTS


__all__ = ["RUN_TEACHER", "run_teacher_problems", "run_teacher_weights", "wants_run_teacher", "with_run_teacher"]
