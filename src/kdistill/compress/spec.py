"""The `compress:` settings: which stages run and how, validated like the experiment file (every
problem one `field: fix` line). Self-contained (no import of `kdistill.config`) so that the
experiment schema can hold a `CompressSpec` as its optional `compress:` section; the file
`kdistill compress` reads is `compress.plan.CompressPlan`.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STAGES = ("distil", "prune", "recover", "quantize", "export")
Ratio = Annotated[float, Field(gt=0, lt=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PruneSpec(Strict):
    """Structured (channels / neurons), unstructured (weights) or heads (whole attention heads of
    every attention layer). `ratios` ascending: each is reached from the last accepted model and
    recovered before the next (one ratio: one-shot); for heads, a ratio is the share of each layer's
    heads removed. Or one target (structured only): the share of the starting model's FLOPs or
    batch-1 latency to keep."""

    kind: Literal["structured", "unstructured", "heads"] = "structured"
    ratios: list[Ratio] = Field(default_factory=lambda: [0.5], min_length=1)
    target_flops: Ratio | None = None
    target_latency: Ratio | None = None
    importance: Literal["l1", "l2"] = "l2"
    ignore: list[str] = Field(default_factory=list)  # module paths kept whole (the classifier always is)

    @model_validator(mode="after")
    def _one_target(self) -> PruneSpec:
        if any(later <= earlier for earlier, later in zip(self.ratios, self.ratios[1:], strict=False)):
            raise ValueError(f"ratios: must be strictly ascending (got {self.ratios}); each is pruned from the "
                             "one before")
        if self.target_flops is not None and self.target_latency is not None:
            raise ValueError("prune: give target_flops or target_latency, not both")
        if self.kind == "unstructured" and (self.target_flops or self.target_latency):
            raise ValueError("prune.kind: unstructured pruning does not reduce dense FLOPs or latency; use ratios")
        if self.kind == "heads" and (self.target_flops or self.target_latency):
            raise ValueError("prune.kind: heads are pruned by ratios (the share of each layer's heads); drop "
                             "target_flops / target_latency or use kind: structured")
        if self.kind == "heads" and self.ignore:
            raise ValueError("prune.ignore: not used by kind: heads (every attention layer loses the same share); "
                             "remove it")
        return self


class TrainSpec(Strict):
    """Recovery (and the distil stage): distil from the unpruned model, or finetune on labels."""

    epochs: int = Field(2, ge=0)
    mode: Literal["distill", "finetune"] = "distill"
    optimizer: str = "sgd"
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(128, gt=0)
    temperature: float = Field(4.0, gt=0)
    soft_weight: float = Field(0.9, ge=0, le=1)
    train_limit: int | None = Field(None, gt=0)  # a random subset of the training set (said in the report)


def missing_packages(stages: list[str], quantize_runtime: str) -> list[str]:
    """The `compress` extra's packages these stages import and this environment lacks: said before any
    stage trains, not as a ModuleNotFoundError once prune and recover have run."""
    import importlib.util

    needed = ["torch_pruning"] if "prune" in stages else []
    if "export" in stages or ("quantize" in stages and quantize_runtime == "onnxruntime"):
        needed += ["onnx", "onnxruntime", "onnxscript"]
    return [name for name in needed if importlib.util.find_spec(name) is None]


def extra_problem(spec: CompressSpec) -> str | None:
    missing = missing_packages(list(spec.stages), spec.quantize.runtime)
    if not missing:
        return None
    return (f"compress: the stages {', '.join(spec.stages)} need {', '.join(missing)}, which is not installed: "
            'pip install "kdistill[compress]"')


class QuantizeSpec(Strict):
    """dynamic: int8 weights of Linear / recurrent layers; static: int8 weights and activations
    calibrated on `calibration_samples` training inputs (CNNs); qat: fake-quantised training
    distilled from the float model for `qat.epochs`, converted to int8 (PyTorch). `runtime`: where
    the int8 model runs. onnxruntime: dynamic and static quantise the float ONNX file, qat is
    exported as a QDQ ONNX file too; pytorch: dynamic is torch.ao's (for models ONNX cannot take,
    e.g. text models), qat stays a PyTorch model."""

    mode: Literal["dynamic", "static", "qat"] = "dynamic"
    runtime: Literal["onnxruntime", "pytorch"] = "onnxruntime"
    calibration_samples: int = Field(256, gt=0)
    qat: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=1, lr=0.001))

    @model_validator(mode="after")
    def _runtime(self) -> QuantizeSpec:
        if self.mode == "static" and self.runtime == "pytorch":
            raise ValueError("quantize.runtime: static quantization runs in onnxruntime; use runtime: onnxruntime or "
                             "mode: dynamic")
        return self


class ExportSpec(Strict):
    onnx: bool = True
    safetensors: bool = True
    atol: float = Field(1e-4, gt=0)  # ONNX Runtime vs PyTorch, float model, on real test inputs
    rtol: float = Field(1e-3, ge=0)


class ProfileSpec(Strict):
    batch_size: int = Field(64, gt=1)  # the larger batch (batch 1 is always measured)
    threads: int = Field(1, gt=0)
    repeats: int = Field(30, gt=0)
    warmup: int = Field(5, ge=0)


class CompressSpec(Strict):
    stages: list[str] = Field(default_factory=lambda: ["prune", "recover", "quantize", "export"], min_length=1)
    accuracy_budget: float | None = Field(None, ge=0)  # largest allowed drop, in accuracy points, vs the start
    distil: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=5, lr=0.05))
    prune: PruneSpec = Field(default_factory=PruneSpec)
    recover: TrainSpec = Field(default_factory=TrainSpec)
    quantize: QuantizeSpec = Field(default_factory=QuantizeSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    profile: ProfileSpec = Field(default_factory=ProfileSpec)

    @field_validator("stages")
    @classmethod
    def _known_in_order(cls, stages: list[str]) -> list[str]:
        for stage in stages:
            if stage not in STAGES:
                near = difflib.get_close_matches(stage, STAGES, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ValueError(f"unknown stage {stage!r}; {hint}stages are {', '.join(STAGES)}")
        if len(set(stages)) != len(stages):
            raise ValueError(f"a stage appears twice in {stages}; give each once")
        if stages != sorted(stages, key=STAGES.index):
            raise ValueError(f"stages run in the order {' -> '.join(STAGES)}; got {' -> '.join(stages)}")
        if "recover" in stages and "prune" not in stages:
            raise ValueError("recover follows prune; add prune or drop recover")
        return stages
