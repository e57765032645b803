"""Strategies: who teaches whom, and when. Every strategy drives the same `Distiller` loop.

- multi-teacher: `teacher_aggregator=` aggregators (`mean`, `weighted`, `confidence`) in `AGGREGATORS`, and
  `TeacherEnsemble` (fixed teachers as one model, which the teacher cache can hold);
- born-again networks: `born_again` (generation k+1 learns from generation k) and `evaluate_ensemble`;
- deep mutual learning: a `Cohort` of peers with the `MutualLearning` method (registered as `mutual`);
- teacher-assistant chains: `teacher_assistant_chain` (teacher -> assistant(s) -> student);
- checks before training: `check_teachers` (class counts), `check_label_spaces` (logit vs feature methods).

Multi-stage strategies run their stages in sub-directories of one run directory and resume
(see `kdistill.strategies.stages`: `fit_or_load`, the one rule for "this stage is done, load it;
else train or resume it"). An experiment picks its strategy from the STRATEGIES registry
(`kdistill.strategies.registry`; a user's own by `package.module:attribute`); the built-in
runners, one per file, are in `kdistill.strategies.runners`.
"""

from kdistill.strategies.assistant import AssistantChainResult, teacher_assistant_chain
from kdistill.strategies.born_again import (
    BornAgainResult,
    ban_methods,
    born_again,
    ensemble_logits,
    evaluate_ensemble,
    kd_methods,
)
from kdistill.strategies.multi_teacher import (
    AGGREGATORS,
    Aggregator,
    ConfidenceAggregator,
    MeanAggregator,
    WeightedAggregator,
    build_aggregator,
    check_label_spaces,
    check_teachers,
    mixture_logits,
)
from kdistill.strategies.mutual import Cohort, MutualLearning, mutual_learning
from kdistill.strategies.registry import STRATEGIES, Strategy, resolve_strategy, strategy
from kdistill.strategies.stages import (
    ChainResult,
    ChainStage,
    StageExists,
    StageMismatch,
    StageOutcome,
    StageResult,
    fit_or_load,
    run_chain,
    weights_digest,
)
from kdistill.strategies.teacher_ensemble import TeacherEnsemble

__all__ = [
    "AGGREGATORS", "STRATEGIES", "Aggregator", "AssistantChainResult", "BornAgainResult", "ChainResult",
    "ChainStage", "Cohort", "ConfidenceAggregator", "MeanAggregator", "MutualLearning", "StageExists",
    "StageMismatch", "StageOutcome", "StageResult", "Strategy", "TeacherEnsemble", "WeightedAggregator",
    "ban_methods", "born_again", "build_aggregator", "check_label_spaces", "check_teachers", "ensemble_logits",
    "evaluate_ensemble", "fit_or_load", "kd_methods", "mixture_logits", "mutual_learning", "resolve_strategy",
    "run_chain", "strategy", "teacher_assistant_chain", "weights_digest",
]
