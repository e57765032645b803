"""One LM distillation experiment from an ordinary kdistill config: what `kdistill lm` runs.

The config is the `kdistill run` schema read the same way (`data`, `teacher` with its `training`
and `cache`, `student`, `methods`, `training`, `baseline`, `seed`); only the stages' data and
scores differ: token blocks instead of a classification bundle, held-out perplexity instead of
accuracy. Stages, each trained by the same `Distiller`:

1. the teacher: loaded from `teacher.checkpoint` (a state dict of the same model), else trained
   with the language-model loss (`teacher.training`, else `training`);
2. with `baseline: true`, the student from scratch (the language-model loss, `training`);
3. the distilled student: the config's `methods` (forward_kl, reverse_kl, jsd, hard_label, ...),
   the teacher live, or from its top-k cache when `teacher.cache` is on (`top_k`, `dtype`,
   `directory`; default k: the whole vocabulary). With `data.options.student_text: teacher` the
   student trains on text the teacher samples instead of the real text: with `hard_label` alone,
   that is sequence-level KD.

The run directory holds the tokenizer (`tokenizer.json`), each model saved with `save_pretrained`
(`teacher/`, `student-scratch/`, `student/`: loadable with transformers alone), each stage's
training records, and `results.json` (held-out perplexity, parameters, tokens per second).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from kdistill.config import ExperimentConfig, TrainingSpec
from kdistill.data.transforms import Normalize
from kdistill.engine.device import resolve_device
from kdistill.engine.distiller import Distiller
from kdistill.errors import BadInput
from kdistill.lm.data import TextCorpus
from kdistill.lm.metrics import perplexity, training_tokens_per_second
from kdistill.lm.models import CausalLMScores, count_parameters, unwrap
from kdistill.lm.sequence_kd import generate_blocks
from kdistill.lm.topk_cache import open_topk_cache, use_cache
from kdistill.methods import HardLabel, build_method
from kdistill.run.build import distiller_kwargs

STUDENT_TEXTS = ("real", "teacher")


def load_corpus(config: ExperimentConfig) -> tuple[TextCorpus, str]:
    """The corpus the config's data section names, and which text the student trains on."""
    from kdistill.data import DATASETS

    options = dict(config.data.options)
    student_text = options.pop("student_text", "real")
    if student_text not in STUDENT_TEXTS:
        raise BadInput(f"data.options.student_text: {student_text!r} is not one of {', '.join(STUDENT_TEXTS)}")
    options.setdefault("seed", config.seed)  # the held-out share of the blocks, when no held-out file is given
    try:
        corpus = DATASETS.get(config.data.name)(config.data.root, **options)
    except TypeError as error:
        raise BadInput(f"data.options: {error}; text_corpus takes train, held_out, held_out_fraction, vocab_size, "
                       "block_size, encoding, student_text") from None
    if not isinstance(corpus, TextCorpus):
        raise BadInput(f"data.name: '{config.data.name}' is not a text corpus; use kdistill.lm:text_corpus")
    return corpus, student_text


def build_lm(spec: Any, corpus: TextCorpus, where: str, seed: int) -> CausalLMScores:
    from kdistill.models import MODELS

    torch.manual_seed(seed)
    model = MODELS.get(spec.name)(num_classes=corpus.vocab_size, input_shape=(corpus.train.block_size,),
                                  **spec.options)
    if not isinstance(model, CausalLMScores):
        raise BadInput(f"{where}.name: '{spec.name}' is not a causal LM; use kdistill.lm:causal_lm")
    if getattr(spec, "checkpoint", None) is not None:
        try:
            model.load_state_dict(torch.load(spec.checkpoint, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError) as error:
            raise BadInput(f"{where}.checkpoint: {spec.checkpoint} does not load into this model "
                           f"({str(error).splitlines()[0]})") from None
    return model


class LMExperiment:
    """The stages of one experiment in `run_dir`; `run()` returns one row per model."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, progress: bool = False) -> None:
        if config.teacher is None:
            raise BadInput("teacher: an LM experiment needs one teacher (teacher: {name: kdistill.lm:causal_lm, ...})")
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.rows: list[dict[str, Any]] = []
        # where the Distiller trains: evaluation, teacher sampling and the top-k cache build run there too
        self.device = resolve_device(config.training.device)

    def fit(self, name: str, teacher: Any, student: Any, methods: list, training: TrainingSpec, train: Any,
            cache: Any = None) -> Distiller:
        kwargs = distiller_kwargs(self.config, training, Normalize(None, None), self.run_dir / name, name,
                                  self.progress)
        distiller = Distiller(teacher, student, methods, **kwargs)
        if cache is not None:
            use_cache(distiller, cache)
        distiller.fit(train, epochs=training.epochs)
        return distiller

    def record(self, name: str, model: Any, corpus: TextCorpus, distiller: Distiller | None, train: Any,
               seconds: float) -> None:
        scored = perplexity(model, corpus.held_out, self.config.data.eval_batch_size, device=self.device)
        unwrap(model).save_pretrained(self.run_dir / name)
        corpus.tokenizer.save(str(self.run_dir / name / "tokenizer.json"))
        self.rows.append({"model": name, "perplexity": scored["perplexity"], "nll": scored["nll"],
                          "parameters": count_parameters(model), "eval_tokens_per_s": scored["tokens_per_s"],
                          "train_tokens_per_s": training_tokens_per_second(distiller.history, train)
                          if distiller is not None else None, "seconds": round(seconds, 1),
                          "notes": distiller.notes if distiller is not None else []})

    def run(self) -> list[dict[str, Any]]:
        config = self.config
        corpus, student_text = load_corpus(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        corpus.tokenizer.save(str(self.run_dir / "tokenizer.json"))
        started = time.perf_counter()
        teacher = build_lm(config.teacher, corpus, "teacher", config.seed)
        trainer = None
        if config.teacher.checkpoint is None:
            trainer = self.fit("teacher", None, teacher, [HardLabel()], config.teacher.training or config.training,
                               corpus.train)
        self.record("teacher", teacher, corpus, trainer, corpus.train, time.perf_counter() - started)
        teacher.eval()
        if config.baseline:
            started = time.perf_counter()
            scratch = build_lm(config.student, corpus, "student", config.seed)
            trainer = self.fit("student-scratch", None, scratch, [HardLabel()], config.training, corpus.train)
            self.record("student-scratch", scratch, corpus, trainer, corpus.train, time.perf_counter() - started)
        started = time.perf_counter()
        train = corpus.train
        if student_text == "teacher":
            train = generate_blocks(teacher, len(corpus.train), corpus.train.block_size, corpus.end_of_text,
                                    seed=config.seed, device=self.device)
        methods = [build_method(spec.name, spec.options()) for spec in config.methods]
        needs_teacher = any(m.needs_teacher for m in methods)
        cache = None
        settings = config.teacher.cache_spec()
        if settings is not None and needs_teacher:
            directory = settings.directory or self.run_dir / "teacher-cache"
            # the fill keeps the tail's mass at the methods' temperature (as the vision cache's does)
            temperature = settings.temperature or max((m.temperature for m in methods if hasattr(m, "temperature")),
                                                      default=1.0)
            cache = open_topk_cache(directory, teacher, train, corpus.vocab_size,
                                    settings.top_k or corpus.vocab_size, settings.dtype, config.data.eval_batch_size,
                                    device=self.device, temperature=temperature)
        student = build_lm(config.student, corpus, "student", config.seed)
        trainer = self.fit("student", teacher if needs_teacher else None, student, methods, config.training, train,
                           cache)
        self.record("student", student, corpus, trainer, train, time.perf_counter() - started)
        (self.run_dir / "results.json").write_text(json.dumps(self.rows, indent=1))
        return self.rows


__all__ = ["LMExperiment", "load_corpus"]
