"""The built-in strategies' runners, one per file; each registers itself in `STRATEGIES` on import.

Each takes one `kdistill.run.StrategyContext` and returns the rows it adds to the results table.
The registry imports this package on its first lookup, so the built-ins are always there.
"""

from kdistill.strategies.runners import born_again, mutual, standard, teacher_assistant

__all__ = ["born_again", "mutual", "standard", "teacher_assistant"]
