"""Students written as Hugging Face folders at the end of a run, so they load with transformers alone.

    training:
      callbacks: [{name: "kdistill.text.export:SavePretrained", tokenizer: minilm}]

After each fit that the callback is given to (the distilled student, and the scratch baseline,
which shares the student's training settings), the final student is written with
`save_pretrained` into `<stage dir>/<directory>` (default `pretrained/`), with the tokenizer beside
it and the data set's label names in its config: `label_names` when given, else the names `kdistill
run` wrote to the run's `labels.json` (the class names of the training data).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdistill.engine.callbacks import Callback
from kdistill.text.hf_models import save_pretrained


class SavePretrained(Callback):
    """On `on_fit_end`: `save_pretrained` of the student into the stage directory (main process only)."""

    def __init__(self, directory: str = "pretrained", tokenizer: str | None = None,
                 label_names: list[str] | None = None) -> None:
        self.directory = directory
        self.tokenizer = tokenizer
        self.label_names = label_names
        self.saved: Path | None = None

    def on_fit_end(self, distiller: Any) -> None:
        if distiller.run_dir is None or not distiller.world.is_main:
            return
        stage, model = Path(distiller.run_dir), distiller.student.model
        names = self.label_names
        if names is None:
            names = run_label_names(stage, getattr(getattr(model, "config", None), "num_labels", None))
        self.saved = save_pretrained(model, stage / self.directory, self.tokenizer, names)


def run_label_names(stage_dir: Path, num_labels: int | None = None) -> list[str] | None:
    """The class names in the `labels.json` of the run a stage directory belongs to: the nearest one
    in the stage's folder or the two above it (born-again generations sit two below the run's root),
    no higher than the run's root (the folder with `config.yaml`). None when there is none, or when it
    is not a list of `num_labels` names (a file of another run must not rename this model's classes)."""
    for folder in (stage_dir, *stage_dir.parents[:2]):
        path = folder / "labels.json"
        if path.is_file():
            try:
                names = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            if not isinstance(names, list) or (num_labels is not None and len(names) != num_labels):
                return None
            return [str(name) for name in names]
        if (folder / "config.yaml").is_file():
            return None
    return None


__all__ = ["SavePretrained", "run_label_names"]
