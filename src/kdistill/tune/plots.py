"""The search's plots as PNG files beside its results: history, parameter importances, intermediate values.

Drawn with Optuna's matplotlib backend; a plot that cannot be drawn yet (importances need two
finished trials with different values) is skipped with the reason, which `tune.md` prints.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

PLOTS = {"history": "tune-history.png", "importances": "tune-importances.png",
         "intermediate": "tune-intermediate.png"}


def write_plots(study: Any, run_dir: Path) -> dict[str, str]:
    """Plot name -> file name written, or -> "not drawn: why"."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as optuna_plots

    drawers = {"history": optuna_plots.plot_optimization_history,
               "importances": optuna_plots.plot_param_importances,
               "intermediate": optuna_plots.plot_intermediate_values}
    written: dict[str, str] = {}
    for name, draw in drawers.items():
        path = run_dir / PLOTS[name]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                axes = draw(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            written[name] = path.name
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            written[name] = f"not drawn: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
            plt.close("all")
    return written


__all__ = ["PLOTS", "write_plots"]
