"""distil -> prune -> recover -> quantize -> export, with a row per stage (accuracy, size, FLOPs,
latency, memory) and a stop rule: the largest compression whose accuracy stays within the budget.

Pruning ratios are tried in ascending order, each from the last accepted model (so a list of
ratios is iterative pruning); the first one that, once recovered, falls outside the budget ends the
search and the previous model is kept. A quantised model outside the budget is reported and not
deployed. Recovery distils from the model as it was before pruning (a frozen copy, checked
unchanged); the distil stage trains the given student from the given teacher.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.compress import evaluation as ev
from kdistill.compress.export import check_onnx, export_onnx, save_safetensors
from kdistill.compress.prune import StructuredPruning, UnstructuredPruning, baked_copy, prune_to_target
from kdistill.compress.quantize import convert_qat, prepare_qat, quantize_dynamic_onnx, quantize_static_onnx
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.compress.spec import CompressSpec, TrainSpec
from kdistill.data.base import limit_samples
from kdistill.data.transforms import Normalize
from kdistill.evaluate.profile import flops, torch_latency

SAMPLE_COUNT = 256  # test inputs for profiling and the ONNX check


@dataclass
class StageRow:
    stage: str
    artefact: str  # "pytorch", "onnx", "onnx int8", "pytorch int8"
    accuracy: float
    profile: dict[str, Any]
    accepted: bool = True
    note: str = ""


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


class CompressionPipeline:
    """Runs the stages of `spec` on `model` (trained, unless the stages start with distil, when it is
    the student `teacher` trains). `train`/`test` are in-memory data sets; `norm` is the inputs'
    normalisation for every model here."""

    def __init__(self, spec: CompressSpec, model: nn.Module, train: Any, test: Any, norm: Normalize,
                 out_dir: str | Path, teacher: nn.Module | None = None, seed: int = 0,
                 teacher_norm: Normalize | None = None) -> None:
        self.spec, self.model, self.test, self.norm = spec, model, test, norm
        self.teacher, self.seed, self.teacher_norm = teacher, seed, teacher_norm or norm
        self.train = train
        self.out = Path(out_dir)
        # a seeded random subset: image folders list their files class by class
        self.sample = ev.sample_inputs(limit_samples(test, SAMPLE_COUNT, seed), norm, SAMPLE_COUNT)
        self.result = PipelineResult()
        self.start_accuracy: float | None = None
        self._float_profile: dict[str, Any] | None = None
        self._onnx_exported = False

    # rows ------------------------------------------------------------------------------------------
    def within_budget(self, accuracy: float) -> bool:
        if self.spec.accuracy_budget is None or self.start_accuracy is None:
            return True
        return accuracy >= self.start_accuracy - self.spec.accuracy_budget / 100 - 1e-12

    def torch_row(self, stage: str, model: nn.Module, note: str = "", artefact: str = "pytorch",
                  norm: Normalize | None = None) -> StageRow:
        norm = norm or self.norm
        accuracy = ev.torch_accuracy(model, self.test, norm)
        sample = self.sample if norm is self.norm else ev.sample_inputs(self.test, norm, SAMPLE_COUNT)
        row = StageRow(stage, artefact, accuracy, ev.torch_profile(model, sample, self.spec.profile),
                       self.within_budget(accuracy), note)
        self.result.rows.append(row)
        return row

    def onnx_row(self, stage: str, path: Path, float_profile: dict[str, Any], artefact: str,
                 note: str = "") -> StageRow:
        accuracy = ev.onnx_accuracy(path, self.test, self.norm, self.spec.profile.threads)
        row = StageRow(stage, artefact, accuracy, ev.onnx_profile(path, self.sample, self.spec.profile, float_profile),
                       self.within_budget(accuracy), note)
        self.result.rows.append(row)
        return row

    def training_data(self, spec: TrainSpec) -> Any:
        return limit_samples(self.train, spec.train_limit, self.seed) if spec.train_limit else self.train

    # stages ----------------------------------------------------------------------------------------
    def run(self) -> PipelineResult:
        self.out.mkdir(parents=True, exist_ok=True)
        stages = self.spec.stages
        if "distil" in stages:
            self.torch_row("teacher", self.teacher, "the model distilled from", norm=self.teacher_norm)
            self.distil()
        start = self.torch_row("distil" if "distil" in stages else "start", self.model)
        self.start_accuracy = start.accuracy
        start.accepted = True
        if "prune" in stages:
            self.prune("recover" in stages)
        if "quantize" in stages:
            self.quantize()
        if "export" in stages:
            self.export()
        self.result.model = self.model
        (self.out / "compress.json").write_text(json.dumps(self.result.as_json(), indent=1, default=str))
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
        for label, step in self.prune_candidates():
            candidate = copy.deepcopy(kept)
            pruning = step(candidate)
            self.torch_row(f"prune {label}", baked_copy(candidate), "before recovery" if with_recovery else "")
            if with_recovery:
                recover(candidate, reference, self.training_data(self.spec.recover),
                        settings_of(self.spec.recover, None, self.seed), self.norm, description=f"recover {label}")
            if isinstance(pruning, UnstructuredPruning):
                pruning.finalize()
            if with_recovery:
                row = self.torch_row(f"recover {label}", candidate, f"{self.spec.recover.mode}, "
                                     f"{self.spec.recover.epochs} epoch(s)")
            else:
                row = self.result.rows[-1]
            if not row.accepted:
                row.note += (" " if row.note else "") + "outside the accuracy budget: stop, keep the previous model"
                break
            kept = candidate
        self.model = kept

    def prune_candidates(self) -> Iterator[tuple[str, Callable[[nn.Module], Any]]]:
        """(label, function pruning a model in place) for each candidate, in order; a ratio is
        reached from the previous candidate's model (pruned already by the ratio before it)."""
        spec, previous = self.spec.prune, 0.0
        one = self.sample[:1]
        if spec.target_flops is not None or spec.target_latency is not None:
            if spec.target_flops is not None:
                goal, label = spec.target_flops * flops(self.model, one), f"to {spec.target_flops:.0%} of FLOPs"

                def measure(m: nn.Module) -> float:
                    return flops(m, one)
            else:
                goal = spec.target_latency * self.latency(self.model)
                label, measure = f"to {spec.target_latency:.0%} of latency", self.latency

            def to_target(model: nn.Module) -> None:
                prune_to_target(model, self.sample[:2], measure, goal, spec.importance, spec.ignore)
            yield label, to_target
            return
        for ratio in spec.ratios:
            relative = 1 - (1 - ratio) / (1 - previous)  # from the previous (already pruned) model
            if spec.kind == "structured":
                def structured(model: nn.Module, r: float = relative) -> StructuredPruning:
                    pruning = StructuredPruning(model, self.sample[:2], r, 1, spec.importance, spec.ignore)
                    pruning.step()
                    return pruning
                yield f"{ratio:.0%}", structured
            else:
                def unstructured(model: nn.Module, r: float = ratio) -> UnstructuredPruning:
                    pruning = UnstructuredPruning(model, r, 1, spec.ignore)  # zeros so far are the smallest
                    pruning.step()
                    return pruning
                yield f"{ratio:.0%} of weights", unstructured
            previous = ratio

    def latency(self, model: nn.Module) -> float:
        profile = self.spec.profile
        return torch_latency(model, self.sample[:1], profile.repeats, profile.warmup, profile.threads).median_ms

    def float_profile(self) -> dict[str, Any]:
        """The final float model's profile (parameters and FLOPs of the ONNX rows), measured once."""
        if self._float_profile is None:
            self._float_profile = ev.torch_profile(self.model, self.sample, self.spec.profile)
        return self._float_profile

    def float_onnx(self) -> Path:
        """The final float model as ONNX, exported once by this run (an older file there is replaced)."""
        path = self.out / "model.onnx"
        if not self._onnx_exported:
            export_onnx(self.model, self.sample[:8], path)
            self._onnx_exported = True
        return path

    def quantize(self) -> None:
        """int8: dynamic or static on the float ONNX file, or QAT in PyTorch; kept when within budget."""
        spec = self.spec.quantize
        if spec.mode == "qat":
            teacher = copy.deepcopy(self.model).eval()
            prepared = prepare_qat(self.model, self.sample[:2])
            recover(prepared, teacher, self.training_data(spec.qat), settings_of(spec.qat, None, self.seed), self.norm,
                    description="qat")
            quantized = convert_qat(prepared)
            row = self.torch_row("quantize (qat int8)", quantized, f"{spec.qat.mode} from the float model, "
                                 f"{spec.qat.epochs} epoch(s); parameters and FLOPs of the float model (int8 "
                                 "weights are packed)", artefact="pytorch int8")
            for key in ("parameters", "nonzero_parameters", "flops_per_sample"):
                row.profile[key] = self.float_profile()[key]
            if row.accepted:
                path = self.out / "model-int8-qat.pt"
                torch.save(quantized.state_dict(), path)
                self.result.files["int8"] = str(path)
            return
        target = self.out / "model-int8.onnx"
        if spec.mode == "dynamic":
            quantize_dynamic_onnx(self.float_onnx(), target)
        else:
            chosen = limit_samples(self.train, spec.calibration_samples, self.seed)
            calibration = ev.sample_inputs(chosen, self.norm, spec.calibration_samples)
            quantize_static_onnx(self.float_onnx(), target, calibration)
        row = self.onnx_row(f"quantize ({spec.mode} int8)", target, self.float_profile(), "onnx int8")
        if row.accepted:
            self.result.files["onnx_int8"] = str(target)
        else:
            row.note = "outside the accuracy budget: not deployed"
            target.rename(self.out / "rejected-model-int8.onnx")

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
