"""`student.embedding_init: teacher` in a run: every student the run builds from `student:` starts
with the teacher's word / position / type embeddings projected to its width
(`kdistill.text.embedding_init`), before any training and after the teacher is trained or loaded.

The scratch baseline is built without it: it is the labels-only comparison, and the teacher's
embeddings are knowledge from the teacher, so its gain counts to distillation in the table.

`check_embedding_init` dry-runs the same projection on the throw-away student of the run's pre-flight
check (the teacher loaded or still untrained), so a teacher that is not a Hugging Face text model,
a vocabulary mismatch or a student wider than the teacher is refused before anything trains.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from kdistill.errors import BadInput
from kdistill.text.embedding_init import Projection, init_embeddings_from_teacher

LOG = logging.getLogger("kdistill")
WHERE = "student.embedding_init"


def wants_embedding_init(config: Any) -> bool:
    return getattr(config.student, "embedding_init", None) == "teacher"


def _word_embeddings(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None:
        return None
    try:
        return getter()
    except (NotImplementedError, AttributeError):  # a Hugging Face model without input embeddings
        return None


def _the_teacher(config: Any, teachers: list[nn.Module]) -> nn.Module:
    if len(teachers) != 1:
        raise BadInput(f"{WHERE}: needs exactly one teacher to take the embeddings from (this run has "
                       f"{len(teachers)}); remove embedding_init or keep one teacher")
    teacher = teachers[0]
    embeddings = _word_embeddings(teacher)
    if not isinstance(getattr(embeddings, "weight", None), nn.Parameter) or embeddings.weight.dim() != 2:
        name = config.teacher_specs()[0].name if config.teacher_specs() else type(teacher).__name__
        raise BadInput(f"{WHERE}: the teacher '{name}' ({type(teacher).__name__}) is not a Hugging Face text model "
                       "with word embeddings (get_input_embeddings()); use an hf-classifier teacher or remove "
                       "embedding_init")
    return teacher


def _project(config: Any, student: nn.Module, teachers: list[nn.Module]) -> Projection:
    teacher = _the_teacher(config, teachers)
    try:
        return init_embeddings_from_teacher(student, teacher)
    except BadInput as error:
        raise BadInput(f"{WHERE}: {str(error).removeprefix('embedding init: ')}") from error


def init_student_embeddings(config: Any, student: nn.Module, teachers: list[nn.Module]) -> Projection:
    """Overwrite `student`'s embeddings with the teacher's projected (see the module doc); every
    refusal is one `BadInput` line naming `student.embedding_init`."""
    projection = _project(config, student, teachers)
    LOG.info("kdistill: student embeddings: the teacher's top %d principal directions (%.0f %% of their variance)",
             projection.basis.shape[1], 100 * projection.explained)
    return projection


def check_embedding_init(config: Any, student: nn.Module, teachers: list[nn.Module]) -> None:
    """Dry run on a throw-away student (its embeddings are overwritten): refused here, before training."""
    if not wants_embedding_init(config):
        return
    if not teachers:
        raise BadInput(f"{WHERE}: needs a teacher to take the embeddings from; add a teacher or remove "
                       "embedding_init")
    _project(config, student, teachers)


__all__ = ["check_embedding_init", "init_student_embeddings", "wants_embedding_init"]
