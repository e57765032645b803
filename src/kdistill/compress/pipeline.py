"""distil -> prune -> recover -> quantize -> export, with a row per stage (accuracy, size, FLOPs,
latency, memory) and a stop rule: the largest compression whose accuracy stays within the budget.

Pruning ratios are tried in ascending order, each from the last accepted model (so a list of
ratios is iterative pruning); the first one that, once recovered, falls outside the budget ends the
search and the previous model is kept. A quantised model outside the budget is reported and not
deployed. Recovery distils from the model as it was before pruning (a frozen copy, checked
unchanged); the distil stage trains the given student from the given teacher.

Every choice (the budget, a latency or FLOPs target) is made on a validation split: the caller's,
or `VAL_FRACTION` of the training set held out (stratified, seeded). The test split is read only
once every choice is made (`choose`, then `score_test`), to report each stage's test accuracy.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.compress import evaluation as ev
from kdistill.compress.candidates import prune_candidates
from kdistill.compress.export import ExportMismatch, check_onnx, export_onnx, save_safetensors
from kdistill.compress.prune import baked_copy
from kdistill.compress.quantize import (
    convert_qat,
    export_qat_onnx,
    prepare_qat,
    qat_output_step,
    quantize_dynamic_onnx,
    quantize_dynamic_torch,
    quantize_static_onnx,
)
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.compress.spec import CompressSpec, TrainSpec
from kdistill.data.base import InMemoryDataset, limit_samples, split_validation
from kdistill.data.transforms import Normalize
from kdistill.errors import BadInput
from kdistill.evaluate.profile import first_rows, torch_latency

SAMPLE_COUNT = 256  # validation inputs for profiling and the ONNX checks
VAL_FRACTION = 0.1  # of the training set, held out for the choices when no validation split is given
# the QAT ONNX file may differ from PyTorch's int8 model by this many int8 steps of the output: both round
# in int8, but intermediate values on a rounding edge can fall either way (QDQ CNN on digits, measured: 88 % of
# logits equal, 12 % one step apart, 0.04 % two)
QAT_ONNX_STEPS = 3


@dataclass
class StageRow:
    stage: str
    artefact: str  # "pytorch", "onnx", "onnx int8", "pytorch int8"
    accuracy: float  # on the test split, measured once every choice is made
    profile: dict[str, Any]
    accepted: bool = True  # the stop rule's word, from `val_accuracy`
    note: str = ""
    val_accuracy: float | None = None  # what the choices read (None in records made before it existed)


@dataclass
class PipelineResult:
    rows: list[StageRow] = field(default_factory=list)
    model: nn.Module | None = None  # the final float model (pruned and recovered)
    files: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "files": self.files}


def settings_of(spec: TrainSpec, mode: str | None, seed: int) -> RecoverySettings:
    return RecoverySettings(epochs=spec.epochs, mode=mode or spec.mode, lr=spec.lr, optimizer=spec.optimizer,
                            batch_size=spec.batch_size, temperature=spec.temperature, soft_weight=spec.soft_weight,
                            seed=seed)


def held_out(train: Any, fraction: float = VAL_FRACTION) -> tuple[Any, Any]:
    """(train, validation): `fraction` of `train` held out, stratified and seeded as `kdistill run` does."""
    if not isinstance(train, InMemoryDataset):
        raise BadInput("compress: the choices are made on a validation split, and this training set is not held in "
                       "memory to carve one from; pass val= (or give the data set's bundle a val split)")
    return split_validation(train, fraction, seed=0)


class CompressionPipeline:
    """Runs the stages of `spec` on `model` (trained, unless the stages start with distil, when it is
    the student `teacher` trains). `train`/`val`/`test` are in-memory data sets: every choice reads
    `val` (None: `VAL_FRACTION` of `train` held out), `test` is only reported. `norm` is the inputs'
    normalisation for every model here. `latency` measures a model's batch-1 latency in ms for a
    latency target (default: timed on the CPU with the profile settings; a device's own estimator,
    or a test's, can stand in)."""

    def __init__(self, spec: CompressSpec, model: nn.Module, train: Any, test: Any, norm: Normalize,
                 out_dir: str | Path, teacher: nn.Module | None = None, seed: int = 0,
                 teacher_norm: Normalize | None = None, val: Any = None,
                 latency: Callable[[nn.Module], float] | None = None) -> None:
        self.spec, self.model, self.test, self.norm = spec, model, test, norm
        self.teacher, self.seed, self.teacher_norm = teacher, seed, teacher_norm or norm
        self.train, self.val = (train, val) if val is not None else held_out(train)
        self.out = Path(out_dir)
        # a seeded random subset: image folders list their files class by class
        self.sample = ev.sample_inputs(limit_samples(self.val, SAMPLE_COUNT, seed), norm, SAMPLE_COUNT)
        self.measure_latency = latency or self._timed_latency
        self.result = PipelineResult()
        self.start_accuracy: float | None = None  # on the validation split
        self._float_profile: dict[str, Any] | None = None
        self._onnx_exported = False
        self._test_scorers: dict[int, Callable[[Any], float]] = {}  # id(row) -> its artefact's accuracy on a split
        if not torch.is_tensor(self.sample):
            self._check_tensor_free_stages()

    def _check_tensor_free_stages(self) -> None:
        """A model taking several inputs (a text model's dict) is not exported to ONNX here."""
        quantize = self.spec.quantize
        if "quantize" in self.spec.stages and quantize.mode == "qat":
            raise BadInput("quantize.mode: qat traces a model taking one input tensor, and this one takes several "
                           "(e.g. input_ids, attention_mask); use mode: dynamic with runtime: pytorch")
        if "quantize" in self.spec.stages and quantize.runtime == "onnxruntime":
            raise BadInput("quantize.runtime: this model takes several inputs (e.g. input_ids, attention_mask), which "
                           "the ONNX stages do not export; use runtime: pytorch")
        if "export" in self.spec.stages and self.spec.export.onnx:
            raise BadInput("export.onnx: this model takes several inputs (e.g. input_ids, attention_mask), which "
                           "is not exported to ONNX here; set export.onnx: false (safetensors still works)")

    # rows ------------------------------------------------------------------------------------------
    def within_budget(self, accuracy: float) -> bool:
        if self.spec.accuracy_budget is None or self.start_accuracy is None:
            return True
        return accuracy >= self.start_accuracy - self.spec.accuracy_budget / 100 - 1e-12

    def torch_row(self, stage: str, model: nn.Module, note: str = "", artefact: str = "pytorch",
                  norm: Normalize | None = None) -> StageRow:
        """A row scored on validation now; its test accuracy is read in `score_test` (so `model`
        is kept, unchanged, until then)."""
        norm = norm or self.norm
        val_accuracy = ev.torch_accuracy(model, self.val, norm)
        sample = self.sample if norm is self.norm else ev.sample_inputs(self.val, norm, SAMPLE_COUNT)
        row = StageRow(stage, artefact, float("nan"), ev.torch_profile(model, sample, self.spec.profile),
                       self.within_budget(val_accuracy), note, val_accuracy)
        self._test_scorers[id(row)] = lambda data: ev.torch_accuracy(model, data, norm)
        self.result.rows.append(row)
        return row

    def onnx_row(self, stage: str, path: Path, float_profile: dict[str, Any], artefact: str,
                 note: str = "") -> StageRow:
        val_accuracy = self.onnx_accuracy(path, self.val)
        row = StageRow(stage, artefact, float("nan"),
                       ev.onnx_profile(path, self.sample, self.spec.profile, float_profile),
                       self.within_budget(val_accuracy), note, val_accuracy)
        self.score_file(row, path)
        self.result.rows.append(row)
        return row

    def onnx_accuracy(self, path: Path, data: Any) -> float:
        return ev.onnx_accuracy(path, data, self.norm, self.spec.profile.threads)

    def score_file(self, row: StageRow, path: Path) -> None:
        """The file `row`'s test accuracy is read from (again when a rejected file is renamed)."""
        self._test_scorers[id(row)] = lambda data: self.onnx_accuracy(path, data)

    def training_data(self, spec: TrainSpec) -> Any:
        return limit_samples(self.train, spec.train_limit, self.seed) if spec.train_limit else self.train

    # stages ----------------------------------------------------------------------------------------
    def run(self) -> PipelineResult:
        """`choose`, then `score_test`; writes compress.json."""
        self.choose()
        self.score_test()
        (self.out / "compress.json").write_text(json.dumps(self.result.as_json(), indent=1, default=str))
        return self.result

    def choose(self) -> PipelineResult:
        """Every stage, every choice on the validation split; the test split is not read (rows'
        `accuracy` is NaN until `score_test`)."""
        self.out.mkdir(parents=True, exist_ok=True)
        stages = self.spec.stages
        if "distil" in stages:
            self.torch_row("teacher", self.teacher, "the model distilled from", norm=self.teacher_norm)
            self.distil()
        start = self.torch_row("distil" if "distil" in stages else "start", self.model)
        self.start_accuracy = start.val_accuracy
        start.accepted = True
        if "prune" in stages:
            self.prune("recover" in stages)
        if "quantize" in stages:
            self.quantize()
        if "export" in stages:
            self.export()
        self.result.model = self.model
        return self.result

    def score_test(self) -> PipelineResult:
        """Each row's test accuracy, read after every choice is made (reported, never chosen on)."""
        for row in self.result.rows:
            row.accuracy = self._test_scorers.pop(id(row))(self.test)
        return self.result

    def distil(self) -> None:
        """The student from the teacher (`recover` checks the teacher's digest before and after)."""
        recover(self.model, self.teacher, self.training_data(self.spec.distil),
                settings_of(self.spec.distil, "distill", self.seed), self.norm, description="distil",
                teacher_normalization=self.teacher_norm)

    def prune(self, with_recovery: bool) -> None:
        reference = copy.deepcopy(self.model).eval()  # the unpruned model: recovery's teacher, never trained
        for parameter in reference.parameters():
            parameter.requires_grad_(False)
        kept = self.model
        for label, step in prune_candidates(self.spec.prune, self.model, self.sample, self.measure_latency):
            candidate = copy.deepcopy(kept)
            pruned = step(candidate)
            note = "; ".join(filter(None, ["before recovery" if with_recovery else "", pruned.note]))
            self.torch_row(f"prune {label}", baked_copy(candidate), note)
            if with_recovery:
                recover(candidate, reference, self.training_data(self.spec.recover),
                        settings_of(self.spec.recover, None, self.seed), self.norm, description=f"recover {label}")
            if pruned.finalize is not None:
                pruned.finalize()
            if with_recovery:
                row = self.torch_row(f"recover {label}", candidate, f"{self.spec.recover.mode}, "
                                     f"{self.spec.recover.epochs} epoch(s)")
            else:
                row = self.result.rows[-1]
            if not row.accepted:
                stop = "outside the accuracy budget: stop, keep the previous model"
                row.note = "; ".join(filter(None, [row.note, stop]))
                break
            kept = candidate
        self.model = kept

    def _timed_latency(self, model: nn.Module) -> float:
        profile = self.spec.profile
        return torch_latency(model, first_rows(self.sample, 1), profile.repeats, profile.warmup,
                             profile.threads).median_ms

    def float_profile(self) -> dict[str, Any]:
        """The final float model's profile (parameters and FLOPs of the ONNX rows), measured once."""
        if self._float_profile is None:
            self._float_profile = ev.torch_profile(self.model, self.sample, self.spec.profile)
        return self._float_profile

    def float_onnx(self) -> Path:
        """The final float model as ONNX, exported once by this run (an older file there is replaced)."""
        path = self.out / "model.onnx"
        if not self._onnx_exported:
            export_onnx(self.model, first_rows(self.sample, 8), path)
            self._onnx_exported = True
        return path

    def quantize(self) -> None:
        """int8: dynamic or static on the float ONNX file, dynamic in PyTorch, or QAT in PyTorch
        (and as a QDQ ONNX file); each kept when within budget."""
        spec = self.spec.quantize
        if spec.mode == "qat":
            self.quantize_qat()
            return
        if spec.runtime == "pytorch":
            self.pytorch_int8_row("quantize (dynamic int8)", quantize_dynamic_torch(self.model),
                                  "torch.ao dynamic: Linear, LSTM, GRU", "model-int8-dynamic.pt")
            return
        target = self.out / "model-int8.onnx"
        if spec.mode == "dynamic":
            quantize_dynamic_onnx(self.float_onnx(), target)
        else:
            chosen = limit_samples(self.train, spec.calibration_samples, self.seed)
            calibration = ev.sample_inputs(chosen, self.norm, spec.calibration_samples)
            quantize_static_onnx(self.float_onnx(), target, calibration)
        row = self.onnx_row(f"quantize ({spec.mode} int8)", target, self.float_profile(), "onnx int8")
        self.deploy_int8(row, target)

    def deploy_int8(self, row: StageRow, target: Path, reason: str = "outside the accuracy budget") -> None:
        """An int8 ONNX file goes to the result's files when accepted, else is renamed `rejected-*`."""
        if row.accepted:
            self.result.files["onnx_int8"] = str(target)
        else:
            row.note = "; ".join(filter(None, [row.note, f"{reason}: not deployed"]))
            rejected = target.rename(self.out / f"rejected-{target.name}")
            self.score_file(row, rejected)

    def pytorch_int8_row(self, stage: str, quantized: nn.Module, note: str, filename: str) -> StageRow:
        """A PyTorch int8 model's row (parameters and FLOPs of the float model: int8 weights are
        packed where torch cannot count them), saved when within budget."""
        row = self.torch_row(stage, quantized, f"{note}; parameters and FLOPs of the float model",
                             artefact="pytorch int8")
        for key in ("parameters", "nonzero_parameters", "flops_per_sample"):
            row.profile[key] = self.float_profile()[key]
        if row.accepted:
            path = self.out / filename
            torch.save(quantized.state_dict(), path)
            self.result.files["int8"] = str(path)
        return row

    def quantize_qat(self) -> None:
        """Fake-quantised training distilled from the float model, then int8 in PyTorch and, with
        runtime onnxruntime, the same int8 model as a QDQ ONNX file checked against PyTorch's."""
        spec = self.spec.quantize
        teacher = copy.deepcopy(self.model).eval()
        prepared = prepare_qat(self.model, first_rows(self.sample, 2))
        recover(prepared, teacher, self.training_data(spec.qat), settings_of(spec.qat, None, self.seed), self.norm,
                description="qat")
        quantized = convert_qat(prepared)
        self.pytorch_int8_row("quantize (qat int8)", quantized, f"{spec.qat.mode} from the float model, "
                              f"{spec.qat.epochs} epoch(s)", "model-int8-qat.pt")
        if spec.runtime != "onnxruntime":
            return
        target = export_qat_onnx(prepared, first_rows(self.sample, 8), self.out / "model-int8-qat.onnx")
        step = qat_output_step(prepared)
        tolerance = f"tolerance {QAT_ONNX_STEPS} output steps of {step:.2g}"
        try:
            check = check_onnx(quantized, target, self.sample, atol=QAT_ONNX_STEPS * step, rtol=0.0)
            note, matches = (f"QDQ; max abs diff to pytorch int8 {check.max_abs_diff:.2g} ({tolerance}), argmax "
                             f"agreement {check.argmax_agreement:.1%}"), True
        except ExportMismatch as error:  # reported and not deployed: the PyTorch int8 row stands
            note, matches = f"QDQ; {error} ({tolerance})", False
        row = self.onnx_row("quantize (qat int8)", target, self.float_profile(), "onnx int8", note)
        row.accepted &= matches
        self.deploy_int8(row, target, "outside the accuracy budget" if matches else "not the PyTorch int8 model")

    def export(self) -> None:
        """safetensors and the float ONNX file, checked against PyTorch on real test inputs."""
        spec = self.spec.export
        if spec.safetensors:
            self.result.files["safetensors"] = str(save_safetensors(self.model, self.out / "model.safetensors"))
        if spec.onnx:
            path = self.float_onnx()
            check = check_onnx(self.model, path, self.sample, spec.atol, spec.rtol)
            self.onnx_row("export (onnx float)", path, self.float_profile(), "onnx",
                          f"max abs diff to pytorch {check.max_abs_diff:.2g} (atol {spec.atol:g}, rtol {spec.rtol:g})")
            self.result.files["onnx"] = str(path)
