"""What `kdistill run` does, piece by piece: the run directory, the data, the models of each stage,
the teachers, the scratch baseline, profiling, and the `StrategyContext` every strategy receives.

`kdistill.experiment.run_experiment` puts these together; a user's strategy
(`strategy: {name: mypkg.mymod:my_strategy}`) gets a `StrategyContext` and uses its helpers.
"""

from kdistill.run.context import StrategyContext

__all__ = ["StrategyContext"]
