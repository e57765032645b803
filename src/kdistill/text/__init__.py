"""Text classification: data from files, tokenisation with the model's own tokenizer, Hugging Face
teachers and students (the `nlp` extra: transformers), and kdistill inside a `transformers.Trainer`.

Importing this package does not import transformers; the modules that need it import it themselves.
"""

from __future__ import annotations

from kdistill.text.files import TextExamples, read_text_file

__all__ = ["TextExamples", "read_text_file"]
