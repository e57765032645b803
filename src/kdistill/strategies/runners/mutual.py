"""`mutual`: deep mutual learning, peers trained together from scratch, no teacher
(`strategy.peers`, `strategy.mutual_temperature`)."""

from __future__ import annotations

from kdistill.config import ExperimentConfig, default_methods
from kdistill.results import DISTILLED, ModelResult
from kdistill.run.context import StrategyContext
from kdistill.strategies.mutual import mutual_learning
from kdistill.strategies.registry import strategy


def own_loss_only(config: ExperimentConfig) -> list[str]:
    """Methods other than the defaults would be ignored: refused. Compared by value, not by whether the
    field was set: the `config.yaml` a run writes (and `--resume` reads) spells the defaults out."""
    if config.methods == default_methods():
        return []
    return ["methods: strategy mutual trains its peers with its own loss (CE + KL between peers); remove methods, "
            "or use another strategy"]


@strategy("mutual", needs_teacher=False, check=own_loss_only)
def run_mutual(ctx: StrategyContext) -> list[ModelResult]:
    kwargs = ctx.distiller_kwargs(description="mutual")
    kwargs.pop("run_dir")
    # unseeded models: mutual_learning seeds each peer from (seed, peer index), so peers start different
    cohort, _ = mutual_learning(ctx.model_factory(), ctx.train, ctx.val, ctx.config.training.epochs,
                                peers=ctx.config.strategy.peers, temperature=ctx.config.strategy.mutual_temperature,
                                run_dir=ctx.run_dir / "mutual", resume=ctx.resume, distiller_kwargs=kwargs)
    if not ctx.is_main:
        return []
    return [ctx.profile(DISTILLED if k == 0 else f"mutual peer {k + 1}", peer) for k, peer in enumerate(cohort.peers)]
