"""Tiny local Hugging Face models and a tokenizer, built offline for the text tests (no download)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fun", "lovely", "moving"]
NEGATIVE = ["bad", "awful", "boring", "dull", "weak"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "is", "was", "very", "and", "acting"]


def tokenizer_dir(root: Path) -> Path:
    """A WordPiece tokenizer over a 25-word vocabulary, saved as a model folder would hold it."""
    from transformers import BertTokenizer

    folder = root / "tokenizer"
    if not folder.exists():
        vocab = {word: i for i, word in enumerate(SPECIAL + POSITIVE + NEGATIVE + NEUTRAL)}
        BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(str(folder))
    return folder


def vocab_size() -> int:
    return len(SPECIAL + POSITIVE + NEGATIVE + NEUTRAL)


def bert_config(layers: int = 4, hidden: int = 32, heads: int = 4, num_labels: int = 2):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size(), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=num_labels,
                      attention_probs_dropout_prob=0.0, attn_implementation="eager")


def model_dir(root: Path, name: str = "teacher", layers: int = 4, hidden: int = 32, heads: int = 4,
              encoder_only: bool = False, seed: int = 0) -> Path:
    """A random tiny BERT classifier (or bare encoder) saved with its tokenizer in `root/name`."""
    from transformers import AutoTokenizer, BertForSequenceClassification, BertModel

    folder = root / name
    if not folder.exists():
        torch.manual_seed(seed)
        config = bert_config(layers, hidden, heads)
        model = BertModel(config) if encoder_only else BertForSequenceClassification(config)
        model.save_pretrained(str(folder))
        AutoTokenizer.from_pretrained(str(tokenizer_dir(root))).save_pretrained(str(folder))
    return folder


def sentences(count: int, seed: int = 0) -> list[tuple[int, str]]:
    """(label, sentence): a sentiment word of the label's kind among neutral words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randrange(2)
        words = rng.choices(NEUTRAL, k=rng.randrange(2, 9))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append((label, " ".join(words)))
    return rows


def write_label_text(path: Path, count: int, seed: int = 0) -> Path:
    path.write_text("".join(f"{label} {text}\n" for label, text in sentences(count, seed)))
    return path


def text_assets(root: Path, train: int = 120, test: int = 40, layers: int = 4, hidden: int = 32,
                heads: int = 4) -> Path:
    """`root/assets`: a tiny teacher with its tokenizer, and LABEL TEXT train / test files."""
    assets = root / "assets"
    assets.mkdir(exist_ok=True)
    model_dir(assets, "teacher", layers=layers, hidden=hidden, heads=heads)
    write_label_text(assets / "train.txt", train)
    write_label_text(assets / "test.txt", test, seed=1)
    return assets


def data_and_teacher_yaml(assets: Path, teacher_epochs: int, max_length: int = 16) -> str:
    """The `data:` and `teacher:` sections of an experiment on `text_assets` (batch 16, no validation)."""
    return f"""
data:
  name: text-files
  root: {assets}
  options: {{train: train.txt, test: test.txt, tokenizer: {assets / 'tokenizer'}, max_length: {max_length}}}
  batch_size: 16
  val_fraction: 0.0
teacher:
  name: hf-classifier
  options: {{path: {assets / 'teacher'}}}
  training: {{epochs: {teacher_epochs}, optimizer: {{name: adamw, lr: 0.004}}}}
"""
