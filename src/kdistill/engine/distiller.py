"""The one training loop around `DistillationLoss`.

A step: batch -> device, augmentation -> teacher outputs (from the cache, or the teachers in eval mode under
`torch.inference_mode`) -> student forward -> every method's loss terms -> weighted sum -> backward -> optimiser
and schedule. Methods add terms; they never own a loop. With no teacher and only `HardLabel`, the same loop
trains a teacher or a student from scratch. The jobs around the step live in their own modules: argument
checks, loaders, cache set-up, checkpoints, interrupts, progress, evaluation; accumulation; callbacks, EMA,
periodic evaluation and checkpoints, best checkpoint, early stopping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdistill.data.transforms import Augment, Normalize
from kdistill.engine import arguments
from kdistill.engine.accumulation import check_steps, micro_batch_groups, no_sync, optimizer_steps
from kdistill.engine.batch import batch_size_of, correct_count
from kdistill.engine.cache import CacheSettings, TeacherCache
from kdistill.engine.cache_setup import check_cacheable, open_teacher_cache
from kdistill.engine.callbacks import Callback, StepInfo
from kdistill.engine.checkpoint import atomic_save, distiller_state, load_checkpoint, restore_distiller_state
from kdistill.engine.device import autocast_for, resolve_device
from kdistill.engine.distributed import any_rank, average_gradients, barrier, current_world, reduce_sums, shard_weight
from kdistill.engine.ema import EMASettings
from kdistill.engine.evaluation import evaluate_model
from kdistill.engine.hooks import TrainingHooks
from kdistill.engine.inputs import cached_teacher_outputs, check_cache_use, prepare_inputs
from kdistill.engine.interrupt import TrainingInterrupted, stop_requests_on_signals
from kdistill.engine.loaders import (
    BegunPass,
    EvaluationLoaders,
    batches_per_epoch,
    build_batch,
    epoch_batches,
    make_loader,
)
from kdistill.engine.loss import DistillationLoss, Participant, TeacherOutputs
from kdistill.engine.metrics_log import epoch_record
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings, build_optimizer, build_scheduler, warmup_overrun
from kdistill.engine.progress import bar_task, progress_bar
from kdistill.engine.recipe_notes import recipe_notes
from kdistill.engine.run_record import claim_run_dir, fit_identity
from kdistill.engine.seed import derive_seed
from kdistill.engine.tracking import EarlyStoppingSettings, MetricGoal
from kdistill.engine.wrapping import wrap_student
from kdistill.file_checks import MissingFile
from kdistill.methods.base import Method, StepContext

LOG = logging.getLogger("kdistill")


class Distiller:
    """Train `student` from `teacher` (or teachers, or labels alone) with a list of methods.

    >>> Distiller(teacher, student, [SoftTarget(temperature=4, weight=0.9), HardLabel(weight=0.1)])
    ...     .fit(train_set, val_set, epochs=30)

    Training features, all off by default and all resumed exactly: `callbacks` (callbacks.py),
    `accumulate_steps` (accumulation.py), `eval_every_steps` and `checkpoint_every_steps` (hooks.py),
    `best_metric` and `early_stopping` (tracking.py), `ema` (ema.py).
    """

    def __init__(
        self,
        teacher: nn.Module | Sequence[nn.Module] | None,
        student: nn.Module,
        methods: Method | Sequence[Method] = (),
        *,
        optimizer: OptimizerSettings | dict | str | None = None,
        schedule: ScheduleSettings | dict | str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        drop_last: bool = False,
        group_by_length: bool = False,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        grad_clip: float | None = None,
        seed: int = 0,
        augment: Augment | None = None,
        student_normalization: Normalize | tuple | None = None,
        teacher_normalization: Normalize | tuple | Sequence[Normalize | tuple | None] | None = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
        description: str = "train",
        teacher_aggregator: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor] | None = None,
        teacher_cache: CacheSettings | dict | str | Path | None = None,
        channels_last: bool = False,
        compile: bool | str = False,
        callbacks: Sequence[Callback] = (),
        accumulate_steps: int = 1,
        eval_every_steps: int | None = None,
        checkpoint_every_steps: int | None = None,
        best_metric: MetricGoal | str | None = None,
        early_stopping: EarlyStoppingSettings | dict | None = None,
        ema: EMASettings | float | None = None,
    ) -> None:
        arguments.check_numbers(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                                seed=seed, grad_clip=grad_clip, accumulate_steps=accumulate_steps,
                                eval_every_steps=eval_every_steps, checkpoint_every_steps=checkpoint_every_steps)
        self.world = current_world()
        self.device = resolve_device(device)
        autocast_for(self.device, precision)  # validates the name
        self.precision = precision
        self.loss = DistillationLoss(teacher, student, arguments.methods(teacher, student, methods),
                                     student_normalization=student_normalization,
                                     teacher_normalization=teacher_normalization, teacher_aggregator=teacher_aggregator)
        self.loss.autocast = self._autocast
        self.optimizer_settings, self.schedule_settings = arguments.optimizer(optimizer), arguments.schedule(schedule)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.drop_last, self.group_by_length = num_workers, drop_last, group_by_length
        self.evaluation_loaders = EvaluationLoaders()
        self.grad_clip, self.seed, self.augment = grad_clip, seed, augment or Augment()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress, self.description, self.channels_last = progress, description, channels_last
        self.compile = compile  # torch.compile of the student's training forward; a string picks the backend
        self.history: list[dict[str, Any]] = []
        self.accumulate_steps = check_steps(accumulate_steps)  # optimiser step every N batches
        self.steps_per_epoch = 0  # optimiser steps an epoch, set by fit()
        self.hooks = TrainingHooks(callbacks, eval_every_steps=eval_every_steps, ema=ema, best_metric=best_metric,
                                   checkpoint_every_steps=checkpoint_every_steps, early_stopping=early_stopping)
        self.notes: list[str] = []  # what a reader of the results must know (also in notes.json, the report)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.num_samples: int | None = None
        self._stop_requested = False
        self._student_ddp: nn.Module | None = None  # what training steps call: DDP and/or compiled
        self._teacher_grad_flags: list[list[bool]] = []
        self._method_parameters: list[nn.Parameter] = []
        self._begun_pass: BegunPass | None = None  # a user loader's epoch-0 pass, begun by the build
        self.train_loader: DataLoader | None = None  # during fit: a user's keeps its generators in checkpoints
        self.cache_settings = arguments.teacher_cache(teacher_cache)
        self.cache: TeacherCache | None = None
        check_cache_use(self.cache_settings, self.teachers, self.methods)

    # what the loss holds --------------------------------------------------------------------------
    @property
    def student(self) -> Participant:
        return self.loss.student

    @property
    def teachers(self) -> list[Participant]:
        return self.loss.teachers

    @property
    def methods(self) -> nn.ModuleList:
        return self.loss.methods

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student parameters plus the methods' own (adapters, embeddings); never a teacher's."""
        return [*self.student.model.parameters(), *self.loss.parameters()]

    def note(self, message: str | None) -> None:
        """A warning a reader of this run's results must see: logged now, kept in `notes.json` (None: none)."""
        if message and message not in self.notes:
            self.notes.append(message)
            if self.world.is_main:
                LOG.warning("kdistill: %s", message)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.device, self.precision)

    def make_loader(self, data: Dataset | DataLoader, train: bool) -> DataLoader:
        def build() -> DataLoader:
            return make_loader(data, train=train, batch_size=self.batch_size, eval_batch_size=self.eval_batch_size,
                               seed=self.seed, world=self.world, device=self.device, num_workers=self.num_workers,
                               drop_last=self.drop_last, group_by_length=self.group_by_length)
        return build() if train else self.evaluation_loaders.get(data, build)

    # one step -------------------------------------------------------------------------------------
    def prepare_inputs(self, batch: Any, epoch: int, train: bool) -> tuple[Any, Any, Any]:
        return prepare_inputs(batch, epoch, train, device=self.device, augment=self.augment, cache=self.cache,
                              channels_last=self.channels_last)

    def cached_teacher_outputs(self, indices: torch.Tensor | None, epoch: int) -> TeacherOutputs | None:
        """The teacher's logits and tapped features from the cache; None without one."""
        teacher = self.teachers[0] if self.teachers else None
        return cached_teacher_outputs(self.cache, teacher, indices, epoch, self.device)

    def step_context(self, batch: Any, epoch: int, num_epochs: int,
                     epoch_progress: float | None = None) -> tuple[StepContext, int]:
        inputs, labels, indices = self.prepare_inputs(batch, epoch, train=True)
        # training steps go through DDP's wrapper (gradient all-reduce); the probe does not
        module = self._student_ddp if torch.is_grad_enabled() else None
        ctx = self.loss.context(inputs, labels, indices, teacher=self.cached_teacher_outputs(indices, epoch),
                                student_module=module, epoch=epoch, num_epochs=num_epochs,
                                epoch_progress=epoch_progress, num_samples=self.num_samples)
        return ctx, batch_size_of(inputs)

    def train_step(self, batch: Any, epoch: int, num_epochs: int, epoch_progress: float | None = None, *,
                   weight: float | torch.Tensor | None = None, first: bool = True,
                   last: bool = True) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """One optimisation step; `epoch_progress` (epoch + step / steps per epoch) lets methods
        ramp their weights per step. Under gradient accumulation, one micro-batch: `weight` is its
        share of the group, the `first` zeroes the gradients, the `last` steps (the others skip DDP's sync)."""
        with contextlib.nullcontext() if last else no_sync(self._student_ddp):
            ctx, size = self.step_context(batch, epoch, num_epochs, epoch_progress)
            out = self.loss.weighted_terms(ctx)
            if first:
                self.optimizer.zero_grad(set_to_none=True)
            # under DDP each rank's share of the global batch weights its loss (logged unweighted)
            if weight is None and self.world.distributed:
                weight = shard_weight(size, self.device)
            objective = out.loss * weight if weight is not None else out.loss
            (self.scaler.scale(objective) if self.scaler is not None else objective).backward()
        if last:
            self._optimizer_step()
        terms = {k: v.detach() for k, v in out.terms.items()} | {"loss": out.loss.detach()}
        return terms, correct_count(ctx.student_logits, ctx.labels), size

    def _optimizer_step(self) -> None:
        average_gradients(self._method_parameters)  # before unscale_: every rank sees the same inf/nan
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()

    # set-up ---------------------------------------------------------------------------------------
    def _build(self, loader: DataLoader, epochs: int) -> None:
        """Move models, open the cache, build lazy method parts from one batch, create the optimiser."""
        self.student.model.to(self.device)
        for participant in self.loss.participants:
            participant.normalize.to(self.device)
        self._teacher_grad_flags = [[p.requires_grad for p in t.model.parameters()] for t in self.teachers]
        for teacher in self.teachers:
            teacher.model.to(self.device).eval()
            teacher.model.requires_grad_(False)
        self.loss.methods.to(self.device)
        if self.channels_last:
            self.student.model.to(memory_format=torch.channels_last)
        if self.cache_settings is not None and self.cache is None:
            self.cache = open_teacher_cache(self.loss, self.cache_settings, self.make_loader(loader.dataset, False),
                                            self.augment, epochs, self.device, self.world, self.progress, self.note)
        self.hooks.build(self.student.model)  # the EMA's copy is made before the taps are attached
        self.loss.attach()
        batch, self._begun_pass = build_batch(loader, derive_seed(self.seed, 0))
        inputs, labels, indices = self.prepare_inputs(batch, 0, train=True)
        ctx = self.loss.build(inputs, labels, indices, teacher=self.cached_teacher_outputs(indices, 0),
                              epoch=0, num_epochs=epochs, num_samples=self.num_samples)
        for message in recipe_notes(bool(self.teachers), self.methods, ctx.labels is not None, loader.dataset,
                                    self.augment, epochs):
            self.note(message)
        self.optimizer = build_optimizer(self.trainable_parameters(), self.optimizer_settings)
        self.steps_per_epoch = optimizer_steps(batches_per_epoch(loader), self.accumulate_steps)
        self.scheduler = build_scheduler(self.optimizer, self.schedule_settings, epochs, self.steps_per_epoch)
        self.note(warmup_overrun(self.schedule_settings, epochs, self.steps_per_epoch))
        if self.precision == "fp16" and self.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        self._method_parameters = [p for p in self.loss.parameters() if p.requires_grad]
        self._student_ddp = wrap_student(self.student.model, self.loss, self.world, self.device, self.compile)

    # checkpoints ----------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / "last.pt" if self.run_dir else None

    def state_dict(self, epoch: int, step_in_epoch: int, running: dict[str, torch.Tensor]) -> dict[str, Any]:
        return distiller_state(self, epoch, step_in_epoch, running)

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, int, dict[str, torch.Tensor]]:
        return restore_distiller_state(self, state)

    def save_checkpoint(self, epoch: int, step_in_epoch: int, running: dict[str, torch.Tensor]) -> Path | None:
        """Rank 0 writes; the others wait, so a resume never reads a half-written run."""
        path = self.checkpoint_path
        if path is not None and self.world.is_main:
            atomic_save(self.state_dict(epoch, step_in_epoch, running), path)
        barrier()
        return path

    def request_stop(self) -> None:
        """Stop after the current optimiser step (with gradient accumulation: its group's last batch),
        leaving a resumable checkpoint (what Ctrl-C does)."""
        self._stop_requested = True

    # fitting --------------------------------------------------------------------------------------
    def fit(self, train: Dataset | DataLoader, val: Dataset | DataLoader | None = None, epochs: int = 10,
            resume: bool = False) -> list[dict[str, Any]]:
        """Train for `epochs` (fewer when early stopping ends it); with `resume`, continue from `run_dir`'s
        last checkpoint. Returns the epoch records."""
        arguments.check_numbers(epochs=epochs)
        loader = self.train_loader = self.make_loader(train, train=True)
        if self.cache_settings is not None:  # data the teacher cache cannot key is refused before any work
            check_cacheable(loader.dataset, self.augment)
        batches_per_epoch(loader)  # and so is a stream without a length
        self.num_samples = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
        if not resume:  # before any work: another run's directory is refused, never overwritten
            claim_run_dir(self.run_dir, fit_identity(self, loader, epochs), self.world)
        if resume and (self.checkpoint_path is None or not self.checkpoint_path.exists()):
            raise MissingFile(self.checkpoint_path or "run_dir=None",
                              "nothing to resume: no checkpoint there; fit without resume=True")
        self.evaluation_loaders.open(val, lambda: self.make_loader(val, False), self.num_workers)
        try:  # from here on, whatever ends the fit (Ctrl-C, an error in the set-up too) cleans up
            self._build(loader, epochs)
            first_epoch, start_step, running = 0, 0, {}
            if resume:
                first_epoch, start_step, running = self.load_state_dict(load_checkpoint(self.checkpoint_path))
            if self.run_dir is not None and self.world.is_main and self.notes:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "notes.json").write_text(json.dumps(self.notes, indent=1))
            self._stop_requested = False
            self.hooks.start(self, val, self.global_step(first_epoch, start_step) if resume else None)
            with stop_requests_on_signals(lambda: self._stop_requested, self.request_stop), \
                    progress_bar(self.progress and self.world.is_main) as progress:
                for epoch in range(first_epoch, epochs):
                    if self.hooks.stopped:  # early stopping
                        break
                    first = epoch == first_epoch
                    self._run_epoch(loader, val, epoch, epochs, start_step if first else 0,
                                    running if first else {}, progress)
        finally:
            self._begun_pass = self.train_loader = None  # the begun pass (and its workers) ends with the fit
            self.detach_taps()  # the user's models leave fit() as they came, also on Ctrl-C or error
            self.evaluation_loaders.close()  # their workers end with the fit
            self._student_ddp = None
            for teacher, flags in zip(self.teachers, self._teacher_grad_flags, strict=False):
                for parameter, flag in zip(teacher.model.parameters(), flags, strict=True):
                    parameter.requires_grad_(flag)
        self.hooks.finish(self)  # the EMA's weights into the student when on; rank 0's buffers on every rank
        if self.run_dir is not None and self.world.is_main:
            atomic_save(self.student.model.state_dict(), self.run_dir / "student.pt")
        barrier()
        self.hooks.fire("on_fit_end", self)
        return self.history

    def global_step(self, epoch: int, batch: int) -> int:
        """Optimiser steps taken once `batch` batches of epoch `epoch` are done."""
        return epoch * self.steps_per_epoch + optimizer_steps(batch, self.accumulate_steps)

    def _run_epoch(self, loader: DataLoader, val: Any, epoch: int, epochs: int, start_step: int,
                   running: dict[str, torch.Tensor], progress: Any) -> None:
        if start_step == 0:
            torch.manual_seed(derive_seed(self.seed, epoch))
            running = {}
        batches, self._begun_pass = epoch_batches(loader, epoch, start_step, self._begun_pass), None
        self.student.model.train()
        self.loss.methods.train()
        started = time.perf_counter()
        step = start_step
        with bar_task(progress, f"{self.description} epoch {epoch + 1}/{epochs}", len(loader), start_step) as advance:
            for group in micro_batch_groups(batches, self.accumulate_steps, self.device):  # [(batch, weight)]
                sums, samples = {}, 0
                for index, (batch, weight) in enumerate(group):  # one batch with weight None without accumulation
                    terms, correct, size = self.train_step(batch, epoch, epochs, epoch + step / len(loader),
                                                           weight=weight, first=index == 0,
                                                           last=index == len(group) - 1)
                    for key, value in terms.items():
                        scaled = value * size
                        running[key], sums[key] = running.get(key, 0) + scaled, sums.get(key, 0) + scaled
                    running["correct"] = running.get("correct", 0) + correct
                    running["samples"] = running.get("samples", 0) + torch.tensor(float(size), device=self.device)
                    step, samples = step + 1, samples + size
                    advance()
                step_terms = terms if len(group) == 1 else {k: v / samples for k, v in sums.items()}
                info = StepInfo(epoch, self.global_step(epoch, step), step, len(loader), samples, step_terms,
                                self.optimizer.param_groups[0]["lr"])
                self.hooks.step_end(self, info, val, running)
                if any_rank(self._stop_requested, self.device):  # every rank stops at the same step
                    raise TrainingInterrupted(self.save_checkpoint(epoch, step, reduce_sums(running, self.device)))
        record = epoch_record(self.description, epoch, self.optimizer.param_groups[0]["lr"],
                              reduce_sums(running, self.device), time.perf_counter() - started)
        self.hooks.epoch_end(self, record, val, self.global_step(epoch + 1, 0))
        self.save_checkpoint(epoch + 1, 0, {})
        if any_rank(self._stop_requested, self.device):
            raise TrainingInterrupted(self.checkpoint_path)

    def detach_taps(self) -> None:
        self.loss.detach()

    @torch.no_grad()
    def evaluate(self, data: Dataset | DataLoader, which: str | int = "student") -> dict[str, float]:
        """Accuracy (top-1; top-5 past 5 classes) and cross-entropy of the student (EMA if on) or teacher `which`."""
        student = which == "student"
        participant = self.student if student else self.teachers[int(which)]
        label = "the student" if student else f"teacher {which}"
        model = self.hooks.evaluated_model(participant.model) if student else participant.model
        return evaluate_model(model, self.make_loader(data, train=False), self.device, participant.normalize,
                              self._autocast, self.progress and self.world.is_main, f"evaluating {label}")


__all__ = ["Distiller", "Participant", "TrainingInterrupted", "evaluate_model", "resolve_device"]
