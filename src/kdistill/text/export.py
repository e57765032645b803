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
        stage = Path(distiller.run_dir)
        names = self.label_names if self.label_names is not None else run_label_names(stage)
        self.saved = save_pretrained(distiller.student.model, stage / self.directory, self.tokenizer, names)


def run_label_names(stage_dir: Path) -> list[str] | None:
    """The class names in the `labels.json` of the run a stage directory belongs to (its own folder or
    one above it, up to the run's root, the folder with `config.yaml`); None when there is none."""
    for folder in (stage_dir, *stage_dir.parents):
        if (folder / "labels.json").is_file():
            return [str(name) for name in json.loads((folder / "labels.json").read_text())]
        if (folder / "config.yaml").is_file():
            return None
    return None


__all__ = ["SavePretrained", "run_label_names"]
