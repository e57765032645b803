"""Students written as Hugging Face folders at the end of a run, so they load with transformers alone.

    training:
      callbacks: [{name: "kdistill.text.export:SavePretrained", tokenizer: minilm}]

After each fit that the callback is given to (the distilled student, and the scratch baseline,
which shares the student's training settings), the final student is written with
`save_pretrained` into `<stage dir>/<directory>` (default `pretrained/`), with the tokenizer beside
it and the data set's label names in its config when the run knows them.
"""

from __future__ import annotations

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
        target = Path(distiller.run_dir) / self.directory
        self.saved = save_pretrained(distiller.student.model, target, self.tokenizer, self.label_names)


__all__ = ["SavePretrained"]
