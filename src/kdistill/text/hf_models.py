"""Hugging Face sequence classifiers as kdistill teachers and students, from local folders only.

- `hf_classifier`: a sequence classifier from a folder; an encoder-only folder (such as
  all-MiniLM-L6-v2, a `BertModel`) or a classifier with another number of labels gets a new,
  freshly initialised head for this data set's classes.
- `hf_student`: a student from the architecture of a folder (its family, vocabulary, position
  embeddings), with its own depth, width, heads and feed-forward size: random weights.
- `hf_from_teacher`: a student made of every k-th layer of a teacher (or the layers named), with
  the teacher's embeddings, pooler and head, as DistilBERT was initialised; the widths match by
  construction. `teacher_checkpoint` loads a kdistill-trained teacher's weights first (in a run's
  config, `run`: the run's own teacher); `feed_forward` narrows each kept block's feed-forward.

Models are built with `attention: eager` by default: the attention-distribution methods read the
attention probabilities through taps, and the fused kernels (sdpa, flash) never form them. Give
`attention: sdpa` for a model that no method taps that way; `set_attention` switches a built model
(the benchmark measures latency with the fused kernel). Everything is loaded with
`local_files_only`: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.errors import BadInput
from kdistill.text.local_models import model_dir
from kdistill.text.run_teacher import RUN_TEACHER

ATTENTION = ("eager", "sdpa")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' load report names every new head weight; the factories say what they build."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()


def _attention(value: str) -> str:
    if value not in ATTENTION:
        raise BadInput(f"attention: '{value}' is not one of {', '.join(ATTENTION)}")
    return value


def load_config(folder: Path) -> Any:
    """The model config in `folder`; `BadInput` when the folder holds none."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInput(f"cannot read a Hugging Face model config in '{folder}' ({first}); the folder must hold "
                       "config.json (as written by save_pretrained)") from error


def hf_classifier(num_classes: int, path: str, attention: str = "eager") -> nn.Module:
    """A sequence classifier for `num_classes` from a local folder (a new head where needed)."""
    from transformers import AutoModelForSequenceClassification

    folder = model_dir(path)
    config = load_config(folder)
    config.num_labels = num_classes
    with quiet_transformers():
        return AutoModelForSequenceClassification.from_pretrained(
            str(folder), config=config, ignore_mismatched_sizes=True, local_files_only=True,
            attn_implementation=_attention(attention))


def student_config(base: str, num_classes: int, layers: int | None = None, hidden: int | None = None,
                   heads: int | None = None, intermediate: int | None = None,
                   attention_dropout: float | None = 0.0) -> Any:
    """The config of `base` with another depth / width / heads / feed-forward size (the standard
    names map onto each family's own, e.g. DistilBERT's n_layers and dim)."""
    config = load_config(model_dir(base))
    config.num_labels = num_classes
    for key, value in (("num_hidden_layers", layers), ("hidden_size", hidden), ("num_attention_heads", heads)):
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInput(f"{key}: must be a positive integer (got {value!r})")
            setattr(config, key, value)
    if hidden is not None or intermediate is not None:
        size = intermediate if intermediate is not None else 4 * config.hidden_size
        name = "intermediate_size" if hasattr(config, "intermediate_size") else "hidden_dim"
        setattr(config, name, size)
    if attention_dropout is not None:
        set_attention_dropout(config, attention_dropout)
    if config.hidden_size % config.num_attention_heads:
        raise BadInput(f"hidden ({config.hidden_size}) must be a multiple of heads ({config.num_attention_heads})")
    return config


def set_attention_dropout(config: Any, p: float) -> None:
    """Dropout on the attention probabilities, under the family's own name."""
    if not isinstance(p, int | float) or isinstance(p, bool) or not 0 <= p < 1:
        raise BadInput(f"attention_dropout: a probability in [0, 1) (got {p!r})")
    name = "attention_probs_dropout_prob" if hasattr(config, "attention_probs_dropout_prob") else "attention_dropout"
    setattr(config, name, float(p))


def hf_student(num_classes: int, base: str, layers: int | None = None, hidden: int | None = None,
               heads: int | None = None, intermediate: int | None = None, attention: str = "eager",
               attention_dropout: float | None = 0.0) -> nn.Module:
    """A randomly initialised classifier of `base`'s family with the given shape (attention dropout
    0 unless given: the attention methods compare the probabilities, which dropout corrupts)."""
    from transformers import AutoModelForSequenceClassification

    config = student_config(base, num_classes, layers, hidden, heads, intermediate, attention_dropout)
    with quiet_transformers():
        return AutoModelForSequenceClassification.from_config(config, attn_implementation=_attention(attention))


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The path and the `ModuleList` of a transformer's blocks (the one as long as its depth)."""
    depth = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth and name.split(".")[-1] in ("layer", "layers"):
            return name, module
    raise BadInput(f"{type(model).__name__}: no list of {depth} transformer blocks found; only models with "
                   "an encoder.layer / transformer.layer list can be cut by layers")


def take_layers(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """A new model of the same family with only the blocks `keep` (in order), every other weight
    (embeddings, pooler, head) copied; `model` is not changed."""
    path, blocks = layer_list(model)
    if not keep or any(not 0 <= k < len(blocks) for k in keep):
        raise BadInput(f"layers: {list(keep)} must name blocks 0..{len(blocks) - 1} of the teacher")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    student = type(model)(config)
    state = {}
    prefix = path + "."
    for key, tensor in model.state_dict().items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix):].partition(".")
            if int(index) in keep:
                state[f"{prefix}{list(keep).index(int(index))}.{rest}"] = tensor.clone()
        else:
            state[key] = tensor.clone()
    student.load_state_dict(state, strict=True)
    return student


def hf_from_teacher(num_classes: int, path: str, every: int = 2, layers: list[int] | None = None,
                    teacher_checkpoint: str | None = None, attention: str = "eager",
                    attention_dropout: float | None = 0.0, feed_forward: int | None = None) -> nn.Module:
    """Every `every`-th block of the teacher (0-based blocks every-1, 2 every-1, ...: of 6 with every 2,
    blocks 1, 3, 5; the last is kept only when `every` divides the depth), or the blocks `layers`
    (attention dropout 0 unless given, as for `hf_student`); with `feed_forward: F`, each kept
    block narrowed to its F largest feed-forward neurons (`kdistill.text.feed_forward`).
    `teacher_checkpoint: run` (in a run's config only) cuts the run's own teacher once it is trained."""
    if teacher_checkpoint == RUN_TEACHER:
        raise BadInput("teacher_checkpoint: run names the run's own teacher, which only a kdistill run resolves; "
                       "outside a run give the teacher's weights file")
    teacher = hf_classifier(num_classes, path, attention)
    if teacher_checkpoint is not None:
        from kdistill.models import load_weights

        load_weights(teacher, Path(teacher_checkpoint))
    depth = teacher.config.num_hidden_layers
    if layers is None:
        if not isinstance(every, int) or isinstance(every, bool) or not 1 <= every <= depth:
            raise BadInput(f"every: must be an integer in 1..{depth} (got {every!r})")
        layers = list(range(every - 1, depth, every))
    if attention_dropout is not None:  # the teacher built here is only a source of weights
        set_attention_dropout(teacher.config, attention_dropout)
    student = take_layers(teacher, list(layers))
    if feed_forward is not None:
        from kdistill.text.feed_forward import prune_feed_forward

        prune_feed_forward(student, feed_forward)
    return student


def set_attention(model: nn.Module, attention: str) -> nn.Module:
    """Switch a built model's attention kernel (eager forms the probabilities; sdpa is faster)."""
    model.set_attn_implementation(_attention(attention))
    return model


def save_pretrained(model: nn.Module, directory: str | Path, tokenizer: str | Path | None = None,
                    label_names: Sequence[str] | None = None) -> Path:
    """Write a student so that it loads back without kdistill: `transformers` `save_pretrained`
    (config with the label names, safetensors) for a Hugging Face model, the same layout through
    `huggingface_hub` for kdistill's own BiLSTM / CNN students; the tokenizer beside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if label_names is not None and hasattr(model, "config") and hasattr(model.config, "id2label"):
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {name: i for i, name in enumerate(label_names)}
    if not hasattr(model, "save_pretrained"):
        raise BadInput(f"{type(model).__name__} has no save_pretrained; save its state_dict instead")
    from kdistill.text.tokenize import load_tokenizer
    from kdistill.text.vocabulary import trimmed_embedding, trimmed_tokenizer

    trimmed = trimmed_embedding(model)
    state = None
    if trimmed is not None:  # the tokenizer of the kept tokens, numbered as the saved rows, written first
        if tokenizer is None:
            raise BadInput("save_pretrained: the model's vocabulary is trimmed, so it reads only its trimmed "
                           "tokenizer's ids; give `tokenizer` (the original one, trimmed on the way)")
        trimmed_tokenizer(load_tokenizer(model_dir(tokenizer)), trimmed.keep.tolist(), directory, trimmed.remap)
        path = next(name for name, module in model.named_modules() if module is trimmed)
        own = {f"{path}.keep", f"{path}.remap"}
        state = {k: v for k, v in model.state_dict().items() if k not in own}  # a plain model's keys
    elif tokenizer is not None:
        load_tokenizer(model_dir(tokenizer)).save_pretrained(str(directory))
    with quiet_transformers():
        model.save_pretrained(str(directory), state_dict=state)
    return directory


__all__ = ["hf_classifier", "hf_from_teacher", "hf_student", "layer_list", "quiet_transformers", "save_pretrained",
           "set_attention", "student_config", "take_layers"]
