"""Choosing what to distil with: `kdistill tune` (an Optuna search over the experiment's fields, scored
on a validation split carved from the training data) and `kdistill pair` (which student, which teacher).

Kept light: `config.py` imports `kdistill.tune.spec` (the schema of the `tune:` section), so nothing
here may import the run machinery at import time.
"""
