"""The one training loop.

A step: batch -> teacher outputs (eval mode, `torch.inference_mode`) -> student forward -> every
method's loss terms -> weighted sum -> backward. Methods add terms; they never own a loop. With no
teacher and only `HardLabel`, the same loop trains a teacher or a student from scratch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdistill.data.base import InMemoryDataset, batch_collate
from kdistill.data.transforms import Augment, Normalize, as_normalize, to_float
from kdistill.engine.batch import batch_size_of, call_model, detach_clone, logits_of, split_batch, to_device
from kdistill.engine.cache import CacheSettings, TeacherCache, open_cache
from kdistill.engine.checkpoint import atomic_save, load_checkpoint
from kdistill.engine.distributed import (
    all_reduce_sum,
    any_rank,
    average_gradients,
    barrier,
    broadcast_tensors,
    current_world,
)
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings, build_optimizer, build_scheduler
from kdistill.engine.sampler import EpochBatchSampler
from kdistill.engine.seed import derive_seed
from kdistill.methods.base import Method, StepContext
from kdistill.methods.logits import HardLabel
from kdistill.taps import LayerTaps

LOG = logging.getLogger("kdistill")
CHECKPOINT_FORMAT = 1
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once a resumable checkpoint has been written."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint at {checkpoint}" if checkpoint else "interrupted")
        self.checkpoint = checkpoint


@dataclass
class Participant:
    """A model in the loop with the input normalisation it was trained with."""

    model: nn.Module
    normalize: Normalize
    taps: LayerTaps | None = None
    shares_student_inputs: bool = False  # same normalisation as the student: reuse its normalised batch


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", current_world().local_rank)
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for, but CUDA is not available here")
    return resolved


class Distiller:
    """Train `student` from `teacher` (or teachers, or labels alone) with a list of methods.

    >>> Distiller(teacher, student, [SoftTarget(temperature=4, weight=0.9), HardLabel(weight=0.1)])
    ...     .fit(train_set, val_set, epochs=30)
    """

    def __init__(
        self,
        teacher: nn.Module | Sequence[nn.Module] | None,
        student: nn.Module,
        methods: Sequence[Method] = (),
        *,
        optimizer: OptimizerSettings | None = None,
        schedule: ScheduleSettings | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        drop_last: bool = False,
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
        teacher_cache: CacheSettings | None = None,
        channels_last: bool = False,
        compile: bool | str = False,
    ) -> None:
        self.world = current_world()
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)} (got '{precision}')")
        self.precision = precision
        teachers = [] if teacher is None else list(teacher) if isinstance(teacher, list | tuple) else [teacher]
        if isinstance(teacher_normalization, list):
            teacher_norms = [as_normalize(n) for n in teacher_normalization]
        else:
            teacher_norms = [as_normalize(teacher_normalization) for _ in teachers]
        if len(teacher_norms) != len(teachers):
            raise ValueError(f"{len(teachers)} teachers but {len(teacher_norms)} teacher normalisations")
        self.methods = nn.ModuleList(methods or [HardLabel()])
        self._label_methods()
        self.notes: list[str] = []  # what a reader of the results must know (also in notes.json, the report)
        if not teachers:
            needy = [m.name for m in self.methods if m.needs_teacher]
            if needy:
                raise ValueError(f"methods {needy} need a teacher, but none was given")
        self.student = Participant(student, as_normalize(student_normalization))
        self.teachers = [Participant(t, n, shares_student_inputs=n.same_as(self.student.normalize))
                         for t, n in zip(teachers, teacher_norms, strict=True)]
        self.teacher_aggregator = teacher_aggregator
        self.optimizer_settings = optimizer or OptimizerSettings()
        self.schedule_settings = schedule or ScheduleSettings()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.grad_clip = grad_clip
        self.seed = seed
        self.augment = augment or Augment()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.description = description
        self.history: list[dict[str, Any]] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._stop_requested = False
        self._student_ddp: nn.Module | None = None  # what training steps call: DDP and/or compiled
        self._teacher_grad_flags: list[list[bool]] = [[] for _ in self.teachers]
        self._method_parameters: list[nn.Parameter] = []
        self.num_samples: int | None = None
        self.channels_last = channels_last
        # torch.compile of the student's training forward; a string picks the backend ("inductor")
        self.compile = compile
        self.cache_settings = teacher_cache
        self.cache: TeacherCache | None = None
        if teacher_cache is not None:
            if len(self.teachers) != 1:
                raise ValueError(f"the teacher cache holds one teacher's outputs; this run has {len(self.teachers)}")
            tapping = [m.label for m in self.methods if m.teacher_taps()]
            if tapping and not teacher_cache.features:
                raise ValueError(f"the teacher cache holds logits only, but {tapping} read teacher layers; "
                                 "cache them too (features: true) or turn the cache off")
        self._attach_taps()

    # set-up ---------------------------------------------------------------------------------------
    def _label_methods(self) -> None:
        seen: dict[str, int] = {}
        for method in self.methods:
            count = seen.get(method.name, 0)
            method.label = method.name if count == 0 else f"{method.name}{count + 1}"
            seen[method.name] = count + 1

    def note(self, message: str) -> None:
        """A warning a reader of this run's results must see: logged now, kept in `notes.json`."""
        if message not in self.notes:
            self.notes.append(message)
            if self.world.is_main:
                LOG.warning("kdistill: %s", message)

    def _check_label_term(self, ctx: StepContext) -> None:
        """Distillation on labelled data with no loss on the labels departs from every paper's recipe."""
        if not self.teachers or ctx.labels is None:
            return
        if not any(m.supervises_labels for m in self.methods):
            names = [m.label for m in self.methods]
            self.note(f"methods {names} have no label term: the student learns without cross-entropy on the "
                      "labels, unlike the papers (DKD, CRD, AT and FitNets add it with weight 1, KD mixes it in); "
                      "add a hard_label method unless this is intended")

    def _attach_taps(self) -> None:
        """Resolve every tap now, so a misspelt layer fails before any training."""
        student_taps = [t for m in self.methods for t in m.student_taps()]
        self.student.taps = LayerTaps(self.student.model, student_taps, "student") if student_taps else None
        for index, teacher in enumerate(self.teachers):
            taps = [t for m in self.methods if m.teacher_index() == index for t in m.teacher_taps()]
            teacher.taps = LayerTaps(teacher.model, taps, f"teacher {index}") if taps else None
        for method in self.methods:
            if method.teacher_taps() and method.teacher_index() >= len(self.teachers):
                raise ValueError(f"{method.label} taps teacher {method.teacher_index()}, but there are "
                                 f"{len(self.teachers)} teacher(s)")

    def _taps(self) -> list[LayerTaps]:
        return [p.taps for p in [self.student, *self.teachers] if p.taps is not None]

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student parameters plus the methods' own (adapters, embeddings); never a teacher's."""
        return [*self.student.model.parameters(), *self.methods.parameters()]

    def make_loader(self, data: Dataset | DataLoader, train: bool) -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        if train:
            if self.batch_size % self.world.world_size:
                raise ValueError(f"batch_size {self.batch_size} (global) must be divisible by the "
                                 f"{self.world.world_size} processes")
            sampler = EpochBatchSampler(len(data), self.batch_size // self.world.world_size, shuffle=True,
                                        seed=self.seed, drop_last=self.drop_last, rank=self.world.rank,
                                        world_size=self.world.world_size)
        else:  # every process evaluates the whole set: simple, and the metric needs no reduction
            sampler = EpochBatchSampler(len(data), self.eval_batch_size, shuffle=False, seed=self.seed)
        collate = batch_collate if isinstance(data, InMemoryDataset) else None
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.num_workers > 0,
            # Its own generator: creating an iterator must not draw from the global RNG, or a run
            # resumed mid-epoch would shift every later dropout mask by one draw.
            generator=torch.Generator().manual_seed(self.seed),
        )

    # one step -------------------------------------------------------------------------------------
    def prepare_inputs(self, batch: Any, epoch: int, train: bool) -> tuple[Any, Any, Any]:
        batch = to_device(batch, self.device, non_blocking=True)
        inputs, labels, indices = split_batch(batch)
        if torch.is_tensor(inputs):
            inputs = to_float(inputs)
            if train and self.augment.active:
                if indices is None:
                    raise ValueError("augmentation needs sample indices; yield an 'index' with each sample")
                # with a cache of K views, epoch e replays view e mod K: the inputs the teacher saw
                view = epoch % self.cache.settings.views if self.cache is not None else epoch
                inputs = self.augment(inputs, indices, view)
            if self.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, labels, indices

    def _forward(self, participant: Participant, inputs: Any, module: nn.Module | None = None,
                 normalized: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
        if normalized is not None:
            model_inputs = normalized
        else:
            model_inputs = participant.normalize(inputs) if torch.is_tensor(inputs) else inputs
        if participant.taps is not None:
            participant.taps.clear()
        output = call_model(module if module is not None else participant.model, model_inputs)
        features = participant.taps.collect() if participant.taps is not None else {}
        return logits_of(output), features

    def teacher_outputs(self, inputs: Any, indices: torch.Tensor | None = None, epoch: int = 0,
                        student_inputs: Any = None) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        """Teachers' logits and tapped features; `student_inputs` (the student's normalised batch)
        is reused by a teacher with the same normalisation instead of normalising again."""
        logits, features = [], []
        if not self.teachers:
            return logits, features
        if self.cache is not None:
            if indices is None:
                raise ValueError("the teacher cache needs sample indices; yield an 'index' with each sample")
            wanted = [str(t) for t in self.teachers[0].taps.taps] if self.teachers[0].taps is not None else []
            features = self.cache.lookup_features(indices, epoch, self.device, wanted) if wanted else {}
            return [self.cache.lookup(indices, epoch, self.device)], [features]
        with torch.inference_mode(), self._autocast():
            for teacher in self.teachers:
                shared = student_inputs if teacher.shares_student_inputs else None
                out, feats = self._forward(teacher, inputs, normalized=shared)
                logits.append(out)
                features.append(feats)
        return detach_clone(logits), detach_clone(features)

    def step_context(self, batch: Any, epoch: int, num_epochs: int,
                     epoch_progress: float | None = None) -> tuple[StepContext, int]:
        inputs, labels, indices = self.prepare_inputs(batch, epoch, train=True)
        student_inputs = self.student.normalize(inputs) if torch.is_tensor(inputs) else inputs
        teacher_logits, teacher_features = self.teacher_outputs(inputs, indices, epoch, student_inputs)
        if self.teacher_aggregator is not None and teacher_logits:
            teacher_logits = [self.teacher_aggregator(teacher_logits, labels), *teacher_logits]
        with self._autocast():
            # training steps go through DDP's wrapper (gradient all-reduce); the probe does not
            module = self._student_ddp if torch.is_grad_enabled() else None
            student_logits, student_features = self._forward(self.student, inputs, module, student_inputs)
        ctx = StepContext(student_logits, labels, teacher_logits, student_features, teacher_features,
                          indices, epoch, num_epochs, self.num_samples,
                          float(epoch) if epoch_progress is None else epoch_progress)
        return ctx, batch_size_of(inputs)

    def train_step(self, batch: Any, epoch: int, num_epochs: int,
                   epoch_progress: float | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """One optimisation step; `epoch_progress` (epoch + step / steps per epoch) lets methods
        ramp their weights per step."""
        ctx, size = self.step_context(batch, epoch, num_epochs, epoch_progress)
        with self._autocast():
            terms: dict[str, torch.Tensor] = {}
            for method in self.methods:
                if method.active(epoch):
                    terms.update(method(ctx))
            if not terms:
                raise RuntimeError(f"no method is active in epoch {epoch}; check start_epoch / end_epoch")
            loss = sum(terms.values())
        assert self.optimizer is not None and self.scheduler is not None
        self.optimizer.zero_grad(set_to_none=True)
        # under DDP each rank's share of the global batch weights its loss (logged unweighted)
        objective = loss * self._shard_weight(size) if self.world.distributed else loss
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            average_gradients(self._method_parameters)  # before unscale_: every rank sees the same inf/nan
            self.scaler.unscale_(self.optimizer)
        else:
            objective.backward()
            average_gradients(self._method_parameters)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        terms = {k: v.detach() for k, v in terms.items()}
        terms["loss"] = loss.detach()
        correct = (ctx.student_logits.detach().argmax(1) == ctx.labels).sum() if ctx.labels is not None \
            else torch.zeros((), device=self.device)
        return terms, correct, size

    # fitting --------------------------------------------------------------------------------------
    def _build(self, loader: DataLoader, epochs: int) -> None:
        """Move models, build lazy method parts from one batch, create the optimiser."""
        self.student.model.to(self.device)
        for participant in [self.student, *self.teachers]:
            participant.normalize.to(self.device)
        self._teacher_grad_flags = [[p.requires_grad for p in t.model.parameters()] for t in self.teachers]
        for teacher in self.teachers:
            teacher.model.to(self.device).eval()
            teacher.model.requires_grad_(False)
        self.methods.to(self.device)
        if self.channels_last:
            self.student.model.to(memory_format=torch.channels_last)
        if self.cache_settings is not None and self.cache is None:
            self.cache = self._open_cache(loader, epochs)
        for taps in self._taps():
            taps.attach()
        if isinstance(loader.batch_sampler, EpochBatchSampler):
            loader.batch_sampler.set_epoch(0)
        first = next(iter(loader))
        was_training = self.student.model.training
        self.student.model.eval()
        with torch.no_grad():
            ctx, _ = self.step_context(first, 0, epochs)
            for method in self.methods:
                method.build(ctx)
        self._check_label_term(ctx)
        self.student.model.train(was_training)
        self.methods.to(self.device)
        self.optimizer = build_optimizer(self.trainable_parameters(), self.optimizer_settings)
        self.scheduler = build_scheduler(self.optimizer, self.schedule_settings, epochs, len(loader))
        if self.precision == "fp16" and self.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        self._method_parameters = [p for p in self.methods.parameters() if p.requires_grad]
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            broadcast_tensors(list(self.methods.state_dict().values()))  # adapters start equal on every rank

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self._student_ddp = DistributedDataParallel(self.student.model, device_ids=device_ids)
        if self.compile:
            backend = self.compile if isinstance(self.compile, str) else "inductor"
            # taps are attached before compiling, so their hooks are traced into the graph
            self._student_ddp = torch.compile(self._student_ddp or self.student.model, backend=backend)

    def _cache_views(self, epochs: int) -> int:
        """One augmented view per epoch unless a shorter cycle was asked for (and then noted)."""
        asked = self.cache_settings.views
        if not self.augment.active:
            return 1
        if asked is None:
            return epochs
        if asked < epochs:
            self.note(f"teacher.cache.views = {asked} < {epochs} epochs: the cache replays a cycle of {asked} "
                      f"augmented view(s) per image, so the distilled student sees {asked} fixed crop(s) per image "
                      "where a student trained without the cache sees a fresh one every epoch")
        return asked

    def _open_cache(self, loader: DataLoader, epochs: int) -> TeacherCache:
        dataset = loader.dataset
        teacher = self.teachers[0]
        in_order = self.make_loader(dataset, train=False)
        first = to_device(next(iter(in_order)), self.device)
        inputs, _, _ = split_batch(first)
        with torch.inference_mode():
            num_classes = logits_of(call_model(teacher.model, teacher.normalize(to_float(inputs)))).shape[1]
        settings = dataclasses.replace(self.cache_settings, views=self._cache_views(epochs))
        if settings.temperature is None:
            temperatures = [float(m.temperature) for m in self.methods if hasattr(m, "temperature")]
            settings = dataclasses.replace(settings, temperature=max(temperatures, default=1.0))
        if not self.world.is_main:
            barrier()  # rank 0 builds the cache; the others then find it complete and load it
        build_taps = teacher.taps
        if settings.features and settings.extra_taps:  # the union: one cache serves runs of other methods too
            tapped = [str(t) for t in teacher.taps.taps] if teacher.taps is not None else []
            build_taps = LayerTaps(teacher.model, sorted({*tapped, *settings.extra_taps}), "teacher 0 (cache)")
        with self._progress_bar() as progress:
            cache = open_cache(settings, teacher.model, dataset, in_order, teacher.normalize,
                               self.augment, num_classes, self.device, progress, build_taps)
        if self.world.is_main:
            barrier()
        return cache

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / "last.pt" if self.run_dir else None

    def state_dict(self, epoch: int, step_in_epoch: int, running: dict[str, torch.Tensor]) -> dict[str, Any]:
        assert self.optimizer is not None and self.scheduler is not None
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "student": self.student.model.state_dict(),
            "methods": self.methods.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "running": {k: v.detach().cpu() for k, v in running.items()},
            "history": json.dumps(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, int, dict[str, torch.Tensor]]:
        assert self.optimizer is not None and self.scheduler is not None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        self.student.model.load_state_dict(state["student"])
        self.methods.load_state_dict(state["methods"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.history = json.loads(state["history"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        # mid-epoch sums were reduced over processes before saving: rank 0 carries them alone
        running = {k: v.to(self.device) if self.world.is_main else torch.zeros_like(v, device=self.device)
                   for k, v in state["running"].items()}
        return state["epoch"], state["step_in_epoch"], running

    def save_checkpoint(self, epoch: int, step_in_epoch: int, running: dict[str, torch.Tensor]) -> Path | None:
        """Rank 0 writes; the others wait, so a resume never reads a half-written run."""
        path = self.checkpoint_path
        if path is not None and self.world.is_main:
            atomic_save(self.state_dict(epoch, step_in_epoch, running), path)
        barrier()
        return path

    def request_stop(self) -> None:
        """Stop after the current step, leaving a resumable checkpoint (what Ctrl-C does)."""
        self._stop_requested = True

    @contextlib.contextmanager
    def _interrupt_handler(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def fit(self, train: Dataset | DataLoader, val: Dataset | DataLoader | None = None, epochs: int = 10,
            resume: bool = False) -> list[dict[str, Any]]:
        """Train for `epochs`; with `resume`, continue from `run_dir`'s last checkpoint."""
        loader = self.make_loader(train, train=True)
        self.num_samples = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
        self._build(loader, epochs)
        start_epoch, start_step, running = 0, 0, {}
        if resume:
            if self.checkpoint_path is None or not self.checkpoint_path.exists():
                raise FileNotFoundError(f"nothing to resume: no checkpoint at {self.checkpoint_path}")
            start_epoch, start_step, running = self.load_state_dict(load_checkpoint(self.checkpoint_path))
        elif self.run_dir is not None and self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "metrics.jsonl").write_text("")
        if self.run_dir is not None and self.world.is_main and self.notes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "notes.json").write_text(json.dumps(self.notes, indent=1))
        self._stop_requested = False
        with self._interrupt_handler(), self._progress_bar() as progress:
            try:
                for epoch in range(start_epoch, epochs):
                    self._run_epoch(loader, val, epoch, epochs, start_step if epoch == start_epoch else 0,
                                    running if epoch == start_epoch else {}, progress)
            finally:
                self.detach_taps()  # the user's models leave fit() as they came, also on Ctrl-C or error
                self._student_ddp = None
                for teacher, flags in zip(self.teachers, self._teacher_grad_flags, strict=True):
                    for parameter, flag in zip(teacher.model.parameters(), flags, strict=True):
                        parameter.requires_grad_(flag)
        if self.world.distributed:
            # DDP keeps parameters equal; BatchNorm statistics updated in the last forward are per
            # rank: every rank leaves fit() with rank 0's, the ones that are saved
            broadcast_tensors(list(self.student.model.buffers()))
        if self.run_dir is not None and self.world.is_main:
            atomic_save(self.student.model.state_dict(), self.run_dir / "student.pt")
        barrier()
        return self.history

    def _run_epoch(self, loader: DataLoader, val: Any, epoch: int, epochs: int, start_step: int,
                   running: dict[str, torch.Tensor], progress: Any) -> None:
        if start_step == 0:
            torch.manual_seed(derive_seed(self.seed, epoch))
            running = {}
        sampler = loader.batch_sampler
        if isinstance(sampler, EpochBatchSampler):
            sampler.set_epoch(epoch, start_step)
        elif start_step:
            raise RuntimeError("mid-epoch resume needs kdistill's own loader; pass a Dataset to fit()")
        self.student.model.train()
        for method in self.methods:
            method.train()
        task = progress.add_task(f"{self.description} epoch {epoch + 1}/{epochs}", total=len(loader),
                                 completed=start_step) if progress else None
        started = time.perf_counter()
        step = start_step
        for batch in loader:
            terms, correct, size = self.train_step(batch, epoch, epochs, epoch + step / len(loader))
            for key, value in terms.items():
                running[key] = running.get(key, 0) + value * size
            running["correct"] = running.get("correct", 0) + correct
            running["samples"] = running.get("samples", 0) + torch.tensor(float(size), device=self.device)
            step += 1
            if task is not None:
                progress.advance(task)
            if any_rank(self._stop_requested, self.device):  # every rank stops at the same step
                path = self.save_checkpoint(epoch, step, self._reduced(running))
                raise TrainingInterrupted(path)
        if task is not None:
            progress.remove_task(task)
        elapsed = time.perf_counter() - started
        running = self._reduced(running)
        samples = float(running.pop("samples"))
        record: dict[str, Any] = {"stage": self.description, "epoch": epoch + 1,
                                  "lr": self.optimizer.param_groups[0]["lr"]}
        record["train/acc"] = float(running.pop("correct")) / samples
        for key, value in running.items():
            record[f"train/{key}"] = float(value) / samples
        record["epoch_time_s"] = elapsed
        record["samples_per_s"] = samples / elapsed if elapsed > 0 else math.nan
        if val is not None:
            record.update({f"val/{k}": v for k, v in self.evaluate(val).items()})
        self.history.append(record)
        if self.run_dir is not None and self.world.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        self.save_checkpoint(epoch + 1, 0, {})
        if any_rank(self._stop_requested, self.device):
            raise TrainingInterrupted(self.checkpoint_path)

    def _shard_weight(self, local_size: int) -> torch.Tensor:
        """local_n * W / global_n: with DDP's gradient mean this gives the global batch mean exactly,
        also for a last batch that splits unevenly over the processes."""
        sizes = all_reduce_sum(torch.tensor([float(local_size)], device=self.device))
        return local_size * self.world.world_size / sizes[0]

    def _reduced(self, running: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-epoch sums over all processes (a no-op with one)."""
        if not self.world.distributed or not running:
            return running
        keys = sorted(running)
        totals = all_reduce_sum(torch.stack([torch.as_tensor(running[k], dtype=torch.float64, device=self.device)
                                             for k in keys]))
        return dict(zip(keys, totals, strict=True))

    def _progress_bar(self) -> contextlib.AbstractContextManager:
        if not self.progress:
            return contextlib.nullcontext(None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), transient=True)

    def detach_taps(self) -> None:
        for taps in self._taps():
            taps.detach()

    # evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: Dataset | DataLoader, which: str | int = "student") -> dict[str, float]:
        """Accuracy and cross-entropy of the student (or teacher `which`) on `data`."""
        participant = self.student if which == "student" else self.teachers[int(which)]
        return evaluate_model(participant.model, self.make_loader(data, train=False), self.device,
                              participant.normalize, self._autocast)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    normalize: Normalize | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    model.to(device)
    normalize = (normalize or Normalize(None, None)).to(device)
    correct, total, loss = 0.0, 0, 0.0
    for batch in loader:
        inputs, labels, _ = split_batch(to_device(batch, device))
        if torch.is_tensor(inputs):
            inputs = normalize(to_float(inputs))
        with autocast():
            logits = logits_of(call_model(model, inputs)).float()
        correct += float((logits.argmax(1) == labels).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        total += labels.shape[0]
    model.train(was_training)
    return {"acc": correct / max(total, 1), "loss": loss / max(total, 1)}
