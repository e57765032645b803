"""Teacher-assistant chains (Mirzadeh et al. 2020, arXiv:1902.03393): teacher -> assistant(s) -> student.

When the teacher is much larger than the student, distilling through one or more intermediate
"teacher assistants" closes more of the gap than distilling directly. Each model of the chain is
trained by distillation from the one before it, with the same loop; each stage lives in its own
folder (`assistant-1/`, ..., `student/`) and a rerun with `resume=True` skips finished stages and
continues an interrupted one (see `kdistill.strategies.stages`).

    result = teacher_assistant_chain(teacher, [lambda: build_model("resnet14", 10, (3, 32, 32))],
                                     lambda: build_model("resnet8", 10, (3, 32, 32)), train, val,
                                     run_dir="runs/takd", epochs=30, distiller_kwargs={...})
    result.student, result.assistants, result.teacher_of  # [..., 'teacher', 'assistant-1']

The default methods are the toolkit's Hinton recipe (0.9 * KD at T = 4 + 0.1 * CE,
`born_again.kd_methods`); the paper searched T and the KD weight per data set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.engine import Distiller
from kdistill.strategies.born_again import _epochs_list, kd_methods
from kdistill.strategies.stages import ChainResult, ChainStage, MethodsFactory, run_chain


@dataclass
class AssistantChainResult(ChainResult):
    @property
    def assistants(self) -> list[nn.Module]:
        return self.models[:-1]

    @property
    def student(self) -> nn.Module:
        return self.models[-1]


def teacher_assistant_chain(
    teacher: nn.Module | Sequence[nn.Module],
    make_assistants: Sequence[Callable[[], nn.Module]],
    make_student: Callable[[], nn.Module],
    train: Any,
    val: Any = None,
    run_dir: str | Path = "teacher-assistant",
    *,
    epochs: int | Sequence[int] = 10,
    teacher_normalization: Any = None,
    teacher_aggregator: Callable | None = None,
    methods_factory: MethodsFactory = kd_methods,
    distiller_kwargs: dict[str, Any] | None = None,
    resume: bool = False,
    callback: Callable[[str, Distiller], None] | None = None,
) -> AssistantChainResult:
    """Distil `teacher` into each assistant in turn, then the last assistant into the student.

    `make_assistants` are factories from largest to smallest (one or more; none is plain KD);
    `epochs` is one number or one per stage (assistants first, the student last). The other
    arguments are those of `born_again`; `teacher_normalization` is the teacher's input
    normalisation, the assistants and the student share `distiller_kwargs['student_normalization']`.
    """
    if teacher is None:
        raise ValueError("a teacher-assistant chain needs a teacher")
    factories = list(make_assistants)
    names = [f"assistant-{k + 1}" for k in range(len(factories))] + ["student"]
    epochs_list = _epochs_list(epochs, len(names), "stages (assistants + student)")
    stages = [ChainStage(name, factory, e) for name, factory, e in zip(names, [*factories, make_student], epochs_list,
                                                                        strict=True)]
    chain = run_chain(stages, train, val, run_dir, methods_factory, first_teacher=teacher, first_teacher_name="teacher",
                      teacher_normalization=teacher_normalization, teacher_aggregator=teacher_aggregator,
                      distiller_kwargs=distiller_kwargs, resume=resume, callback=callback)
    return AssistantChainResult(chain.run_dir, chain.stages)


__all__ = ["AssistantChainResult", "teacher_assistant_chain"]
