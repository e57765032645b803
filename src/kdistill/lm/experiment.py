"""One LM distillation experiment from an ordinary kdistill config: what `kdistill lm` runs.

The config is the `kdistill run` schema read the same way (`data`, `teacher` with its `training`
and `cache`, `student`, `methods`, `training`, `baseline`, `seed`); only the stages' data and
scores differ: token blocks instead of a classification bundle, held-out perplexity instead of
accuracy. Stages, each trained by the same `Distiller`:

1. the teacher: loaded from `teacher.checkpoint` (a state dict of the same model: a stage's
   `student.pt`, or the Hugging Face model's own; one that does not fit is named as `kdistill run`
   names it, `lm.models.load_lm_weights`), else trained with the language-model loss
   (`teacher.training`, else `training`);
2. with `baseline: true`, the student from scratch (the language-model loss, `training`);
3. the distilled student: the config's `methods` (forward_kl, reverse_kl, jsd, hard_label, ...),
   the teacher live, or from its top-k cache when `teacher.cache` is on (`top_k`, `dtype`,
   `directory`; default k: the whole vocabulary). With `data.options.student_text: teacher` the
   student trains on text the teacher samples instead of the real text: with `hard_label` alone,
   that is sequence-level KD.

The run directory holds its config (`config.yaml`), the tokenizer (`tokenizer.json`), each model
saved with `save_pretrained` (`teacher/`, `student-scratch/`, `student/`: loadable with
transformers alone), each stage's training records, and `results.json` (held-out perplexity,
parameters, tokens per second).

Resume (`kdistill lm --resume RUN_DIR`; the `--set` it accepts: `kdistill.lm.resume`): every stage
goes through `strategies.stages.fit_or_load`, the rule every `kdistill run` stage follows: a
finished stage (its `student.pt`) is loaded, the interrupted one continues from its checkpoint
(mid-epoch included), later ones start fresh, and a stage whose `stage.json` (teacher weights,
data, epochs, methods, seed) disagrees is refused. Each model is built under the seed alone and
the teacher's text and top-k cache are pure functions of the teacher and the seed, so a resumed
run ends with the weights of an uninterrupted one.

Under DDP (`kdistill lm --nproc N`) every process runs every stage (the Distiller shards the
blocks); the top-k cache is built in shares; rank 0 alone writes files. The token-level losses
and `hard_label` (the teacher's and the scratch student's loss) are exact over the processes: each
takes the mean over the global batch's positions, so a 2-process student equals a 1-process one;
dropout draws differ between 1 and N processes, as in every DDP run.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

import torch

from kdistill.collectives import barrier, current_world
from kdistill.config import ExperimentConfig, TrainingSpec, dump_config
from kdistill.data.transforms import Normalize
from kdistill.engine.checkpoint import atomic_write_text
from kdistill.engine.device import resolve_device
from kdistill.engine.distiller import Distiller
from kdistill.errors import BadInput
from kdistill.lm.data import TextCorpus
from kdistill.lm.detect import is_text_corpus_loader, not_text_corpus_problem
from kdistill.lm.metrics import perplexity, training_tokens_per_second
from kdistill.lm.models import (
    CausalLMScores,
    causal_lm,
    check_config_keys,
    count_parameters,
    load_lm_weights,
    unwrap,
)
from kdistill.lm.sequence_kd import generate_blocks
from kdistill.lm.topk_cache import fill_temperature, open_topk_cache, use_cache
from kdistill.methods import HardLabel, build_method
from kdistill.run.build import distiller_kwargs
from kdistill.strategies.stages import StageExists, StageMismatch, fit_or_load, weights_digest

STUDENT_TEXTS = ("real", "teacher")


def load_corpus(config: ExperimentConfig) -> tuple[TextCorpus, str]:
    """The corpus the config's data section names, and which text the student trains on."""
    from kdistill.data import DATASETS

    options = dict(config.data.options)
    student_text = options.pop("student_text", "real")
    if student_text not in STUDENT_TEXTS:
        raise BadInput(f"data.options.student_text: {student_text!r} is not one of {', '.join(STUDENT_TEXTS)}")
    loader = DATASETS.get(config.data.name)
    if not is_text_corpus_loader(loader) and ":" not in config.data.name:
        raise BadInput(not_text_corpus_problem(config.data.name))  # a built-in classification data set
    if is_text_corpus_loader(loader) or "seed" in inspect.signature(loader).parameters:
        options.setdefault("seed", config.seed)  # the held-out share of the blocks, when no held-out file is given
    try:
        corpus = loader(config.data.root, **options)
    except TypeError as error:
        if not is_text_corpus_loader(loader):
            raise BadInput(f"{not_text_corpus_problem(config.data.name)} ({error})") from None
        raise BadInput(f"data.options: {error}; text_corpus takes train, held_out, held_out_fraction, vocab_size, "
                       "block_size, encoding, student_text") from None
    if not isinstance(corpus, TextCorpus):
        raise BadInput(not_text_corpus_problem(config.data.name))
    return corpus, student_text


def check_lm_options(spec: Any, where: str) -> None:
    """A `kdistill.lm:causal_lm` spec's config keys, checked before any stage trains (the student is
    built only after the teacher's stage)."""
    from kdistill.models import MODELS

    if MODELS.get(spec.name) is not causal_lm:
        return
    options = dict(spec.options)
    try:
        check_config_keys(options.pop("architecture", "gpt2"), options)
    except BadInput as error:
        raise BadInput(str(error).replace("model options:", f"{where}.options:", 1)) from None


def build_lm(spec: Any, corpus: TextCorpus, where: str, seed: int) -> CausalLMScores:
    from kdistill.models import MODELS

    torch.manual_seed(seed)
    try:
        model = MODELS.get(spec.name)(num_classes=corpus.vocab_size, input_shape=(corpus.train.block_size,),
                                      **spec.options)
    except BadInput as error:  # the factory's "model options: ..." said of this model's options
        raise BadInput(str(error).replace("model options:", f"{where}.options:", 1)) from None
    if not isinstance(model, CausalLMScores):
        raise BadInput(f"{where}.name: '{spec.name}' is not a causal LM; use kdistill.lm:causal_lm")
    if getattr(spec, "checkpoint", None) is not None:
        load_lm_weights(model, spec.checkpoint, where)
    return model


class LMExperiment:
    """The stages of one experiment in `run_dir`; `run()` returns one row per model. With `resume`,
    finished stages are loaded and the interrupted one continues (see the module's docstring)."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, progress: bool = False, resume: bool = False) -> None:
        if config.teacher is None:
            raise BadInput("teacher: an LM experiment needs one teacher (teacher: {name: kdistill.lm:causal_lm, ...})")
        self.config, self.run_dir, self.progress, self.resume = config, Path(run_dir), progress, resume
        self.rows: list[dict[str, Any]] = []
        self.main = current_world().is_main  # under DDP (`kdistill lm --nproc`) rank 0 alone writes files
        # where the Distiller trains: evaluation, teacher sampling and the top-k cache build run there too
        self.device = resolve_device(config.training.device)

    def fit(self, name: str, teacher: Any, student: Any, methods: list, training: TrainingSpec, train: Any,
            cache: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
        """Train (or load, or continue) stage `name`; its epoch records and notes."""
        stage_dir = self.run_dir / name
        record = {"stage": name, "teacher_weights": weights_digest(teacher) if teacher is not None else None,
                  "data": train.fingerprint(), "epochs": training.epochs, "methods": [m.label for m in methods],
                  "seed": self.config.seed}
        made: list[Distiller] = []

        def make_distiller() -> Distiller:
            kwargs = distiller_kwargs(self.config, training, Normalize(None, None), stage_dir, name, self.progress)
            distiller = Distiller(teacher, student, methods, **kwargs)
            if cache is not None:
                use_cache(distiller, cache)
            made.append(distiller)
            return distiller

        try:
            outcome = fit_or_load(stage_dir, student, make_distiller, train, None, training.epochs,
                                  resume=self.resume, record=record)
        except (StageExists, StageMismatch) as error:  # a stage's own hint names `kdistill run --resume`
            raise BadInput(str(error).replace("kdistill run --resume", "kdistill lm --resume")) from None
        notes_file = stage_dir / "notes.json"
        notes = made[0].notes if made else (json.loads(notes_file.read_text()) if notes_file.is_file() else [])
        return outcome.history, notes

    def record(self, name: str, model: Any, corpus: TextCorpus, fitted: tuple[list, list[str]] | None, train: Any,
               seconds: float) -> None:
        """Score `model` on the held-out text (every process: the same value) and save it (rank 0)."""
        scored = perplexity(model, corpus.held_out, self.config.data.eval_batch_size, device=self.device)
        if self.main:
            from kdistill.text.hf_models import quiet_transformers

            with quiet_transformers():  # no progress bar for writing one small shard
                unwrap(model).save_pretrained(self.run_dir / name)
            corpus.tokenizer.save(str(self.run_dir / name / "tokenizer.json"))
        history, notes = fitted if fitted is not None else ([], [])
        self.rows.append({"model": name, "perplexity": scored["perplexity"], "nll": scored["nll"],
                          "parameters": count_parameters(model), "eval_tokens_per_s": scored["tokens_per_s"],
                          "train_tokens_per_s": training_tokens_per_second(history, train)
                          if fitted is not None else None, "seconds": round(seconds, 1), "notes": notes})

    def run(self) -> list[dict[str, Any]]:
        config = self.config
        # everything the config can get wrong is checked before the first stage trains
        for where, spec in (("teacher", config.teacher), ("student", config.student)):
            check_lm_options(spec, where)
        corpus, student_text = load_corpus(config)
        methods = [build_method(spec.name, spec.options()) for spec in config.methods]
        needs_teacher = any(m.needs_teacher for m in methods)
        settings = config.teacher.cache_spec() if needs_teacher else None
        if settings is not None:
            k = settings.top_k or corpus.vocab_size
            # the fill keeps the tail's mass at the methods' one temperature (as the vision cache's does)
            temperature = fill_temperature(methods, k, corpus.vocab_size, settings.temperature)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                atomic_write_text(self.run_dir / "config.yaml", dump_config(config))
            corpus.tokenizer.save(str(self.run_dir / "tokenizer.json"))
        started = time.perf_counter()
        teacher = build_lm(config.teacher, corpus, "teacher", config.seed)
        fitted = None
        if config.teacher.checkpoint is None:
            fitted = self.fit("teacher", None, teacher, [HardLabel()], config.teacher.training or config.training,
                              corpus.train)
        self.record("teacher", teacher, corpus, fitted, corpus.train, time.perf_counter() - started)
        teacher.eval()
        if config.baseline:
            started = time.perf_counter()
            scratch = build_lm(config.student, corpus, "student", config.seed)
            fitted = self.fit("student-scratch", None, scratch, [HardLabel()], config.training, corpus.train)
            self.record("student-scratch", scratch, corpus, fitted, corpus.train, time.perf_counter() - started)
        started = time.perf_counter()
        train = corpus.train
        if student_text == "teacher":
            train = generate_blocks(teacher, len(corpus.train), corpus.train.block_size, corpus.end_of_text,
                                    seed=config.seed, device=self.device, pad_id=corpus.pad)
        cache = None
        if settings is not None:
            directory = settings.directory or self.run_dir / "teacher-cache"
            cache = open_topk_cache(directory, teacher, train, corpus.vocab_size, k, settings.dtype,
                                    config.data.eval_batch_size, device=self.device, temperature=temperature)
        student = build_lm(config.student, corpus, "student", config.seed)
        fitted = self.fit("student", teacher if needs_teacher else None, student, methods, config.training, train,
                          cache)
        self.record("student", student, corpus, fitted, train, time.perf_counter() - started)
        if self.main:
            atomic_write_text(self.run_dir / "results.json", json.dumps(self.rows, indent=1))
        barrier()
        return self.rows


__all__ = ["LMExperiment", "load_corpus"]
