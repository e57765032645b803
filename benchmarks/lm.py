"""Token-level distillation of a causal LM on real text: held-out perplexity, 3 seeds.

Text: the SST-2 training sentences (../shared/data/sst2/stsa.binary.train, labels dropped), packed
into 64-token blocks; held out: the SST-2 dev sentences (never seen by the tokenizer or a model).
Tokenizer: a byte-level BPE of 1,024 tokens trained on the training sentences (saved beside the
runs). Teacher: GPT-2, 4 layers x 128 wide, trained once (seed 1000) for longer; student: GPT-2,
2 layers x 64 wide (about a fifth of the teacher's parameters), every variant the same recipe and
epochs:
- scratch: the language-model loss on the real text;
- forward_kl / reverse_kl: the token-level divergence from the live teacher, every position,
  padding masked (no label term);
- forward_kl top-k cached: the same from the teacher's top-128 logits cached once and memory-mapped
  (the other tokens share the rest of the teacher's probability evenly; see kdistill.lm.topk_cache);
- sequence-level KD: the language-model loss on as many blocks of teacher-sampled text.
Metrics: held-out perplexity (token-weighted), training tokens per second, evaluation tokens per
second. Each finished run is a record in benchmarks/results/lm.jsonl; recorded runs are skipped.

    python benchmarks/lm.py --threads 2     # everything from nothing: 22 minutes on the idle 2-core machine
    OMP_NUM_THREADS=1 python benchmarks/lm.py [--seeds 0 1 2] [--student-epochs 3] [--teacher-epochs 8]
    python benchmarks/lm.py --table
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from _common import keep_freed_memory, markdown_table, shared_data
from _records import WORK, Records, Timer, config_digest, load, train_seconds

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.digest import model_digest
from kdistill.lm import (
    TokenBlocks,
    causal_lm,
    count_parameters,
    encode_stream,
    generate_blocks,
    load_tokenizer,
    open_topk_cache,
    perplexity,
    read_lines,
    special_ids,
    train_tokenizer,
    training_tokens_per_second,
    use_cache,
)
from kdistill.methods import ForwardKL, HardLabel, ReverseKL

BENCHMARK = "lm"
TEACHER_SEED = 1000
BLOCK = 64
VOCAB = 1024
TEACHER = {"n_layer": 4, "n_embd": 128, "n_head": 4}
STUDENT = {"n_layer": 2, "n_embd": 64, "n_head": 2}
TOP_K = 128
VARIANTS = ("scratch", "forward_kl", "reverse_kl", "forward_kl top-k cached", "sequence-level KD")


def recipe(epochs: int) -> dict[str, Any]:
    return {"optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01},
            "schedule": {"name": "cosine", "warmup_steps": 100}, "batch_size": 32, "epochs": epochs,
            "block_size": BLOCK, "vocab": VOCAB, "text": "sst2 train / dev"}


def corpus() -> tuple[Any, TokenBlocks, TokenBlocks]:
    root = shared_data() / "sst2"
    lines, held_out = read_lines(root / "stsa.binary.train"), read_lines(root / "stsa.binary.dev")
    path = WORK / BENCHMARK / f"tokenizer-{VOCAB}.json"
    if path.exists():
        tokenizer = load_tokenizer(path)
    else:
        tokenizer = train_tokenizer(lines, VOCAB)
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(path))
    _, pad = special_ids(tokenizer)
    return (tokenizer, TokenBlocks.from_stream(encode_stream(tokenizer, lines), BLOCK, pad),
            TokenBlocks.from_stream(encode_stream(tokenizer, held_out), BLOCK, pad))


def fit(name: str, config: dict, teacher, student, methods, train: TokenBlocks, seed: int, cache=None) -> Distiller:
    run_dir = WORK / BENCHMARK / "runs" / f"{name}-{config_digest(config)}"
    distiller = Distiller(teacher, student, methods, optimizer=OptimizerSettings(**config["optimizer"]),
                          schedule=ScheduleSettings(**config["schedule"]), batch_size=config["batch_size"],
                          seed=seed, description=name, progress=False, run_dir=run_dir)
    if cache is not None:
        use_cache(distiller, cache)
    distiller.fit(train, epochs=config["epochs"], resume=distiller.checkpoint_path.exists())
    return distiller


def metrics_of(model, held_out: TokenBlocks, distiller: Distiller, train: TokenBlocks) -> dict[str, Any]:
    scored = perplexity(model, held_out)
    return {"perplexity": scored["perplexity"], "nll": scored["nll"], "held_out_tokens": scored["tokens"],
            "eval_tokens_per_s": scored["tokens_per_s"],
            "train_tokens_per_s": training_tokens_per_second(distiller.history, train)}


def train_teacher(records: Records, vocab: int, train: TokenBlocks, held_out: TokenBlocks, epochs: int):
    config = {**recipe(epochs), "model": TEACHER}
    path = WORK / BENCHMARK / f"teacher-{config_digest(config)}.pt"
    torch.manual_seed(TEACHER_SEED)
    teacher = causal_lm(vocab, (BLOCK,), **TEACHER)
    if records.find("teacher", TEACHER_SEED, config) and path.exists():
        teacher.load_state_dict(torch.load(path, weights_only=True))
        return teacher.eval()
    with Timer() as timer:
        distiller = fit("teacher", config, None, teacher, [HardLabel()], train, TEACHER_SEED)
    torch.save(teacher.state_dict(), path)
    metrics = metrics_of(teacher, held_out, distiller, train)
    records.append("teacher", TEACHER_SEED, config, metrics, timer.seconds, params=count_parameters(teacher),
                   train_seconds=train_seconds(distiller.history))
    print(f"teacher: perplexity {metrics['perplexity']:.2f} ({timer.seconds:.0f} s)", flush=True)
    return teacher.eval()


def run_student(records: Records, variant: str, seed: int, config: dict, vocab: int, methods, teacher,
                train: TokenBlocks, held_out: TokenBlocks, cache=None) -> None:
    if records.find(variant, seed, config):
        return
    torch.manual_seed(seed)
    student = causal_lm(vocab, (BLOCK,), **STUDENT)
    name = f"{variant.split(' ')[0]}-seed{seed}"
    with Timer() as timer:
        distiller = fit(name, config, teacher, student, methods, train, seed, cache)
    metrics = metrics_of(student, held_out, distiller, train)
    records.append(variant, seed, config, metrics, timer.seconds, params=count_parameters(student),
                   train_seconds=train_seconds(distiller.history), notes=distiller.notes)
    print(f"{variant} seed {seed}: perplexity {metrics['perplexity']:.2f}, "
          f"{metrics['train_tokens_per_s']:.0f} train tokens/s ({timer.seconds:.0f} s)", flush=True)


def table() -> str:
    """Held-out perplexity per variant (latest config of each), mean +- std over seeds."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in load(BENCHMARK):
        by_variant.setdefault(record["variant"], []).append(record)
    rows, notes = [], []
    for variant, runs in list(by_variant.items()):
        digest = max(runs, key=lambda r: r["date"])["config_digest"]
        if any(r["config_digest"] != digest for r in runs):
            older = [f"{r['metrics']['perplexity']:.2f}" for r in runs if r["config_digest"] != digest]
            notes.append(f"{variant}: {len(older)} run(s) under an older config not shown "
                         f"(perplexity {', '.join(older)})")
        by_variant[variant] = [r for r in runs if r["config_digest"] == digest]
    scratch = [r["metrics"]["perplexity"] for r in by_variant.get("scratch", [])]  # its latest config only
    for variant, runs in by_variant.items():
        values = [r["metrics"]["perplexity"] for r in runs]
        cell = f"{values[0]:.2f}" if len(values) == 1 else \
            f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"
        delta = f"{statistics.mean(values) - statistics.mean(scratch):+.2f}" if scratch and variant not in (
            "scratch", "teacher") else ""
        speed = statistics.mean(r["metrics"]["train_tokens_per_s"] for r in runs)
        rows.append([variant, cell, str(len(values)), delta, f"{runs[0]['params']:,}", f"{speed:,.0f}",
                     f"{statistics.mean(r['seconds'] for r in runs):.0f}"])
    text = markdown_table(["variant", "held-out perplexity (mean +- std)", "n", "vs scratch", "parameters",
                           "train tokens / s", "s / run"], rows)
    return text + "".join(f"\n- {note}" for note in notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the table of the recorded runs and stop")
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    tokenizer, train, held_out = corpus()
    vocab = tokenizer.get_vocab_size()
    eot, pad = special_ids(tokenizer)
    print(f"text: {len(train)} training blocks ({int(train.attention_mask.sum())} tokens), {len(held_out)} held-out "
          f"blocks ({held_out.num_targets()} targets), vocabulary {vocab}", flush=True)
    teacher = train_teacher(records, vocab, train, held_out, args.teacher_epochs)
    base = {**recipe(args.student_epochs), "model": STUDENT}
    taught = {**base, "teacher": model_digest(teacher)}
    cache = None
    for seed in args.seeds:  # every variant's first seed first
        if "scratch" in args.variants:
            run_student(records, "scratch", seed, base, vocab, [HardLabel()], None, train, held_out)
        if "forward_kl" in args.variants:
            run_student(records, "forward_kl", seed, {**taught, "method": "forward_kl"}, vocab, [ForwardKL()],
                        teacher, train, held_out)
        if "reverse_kl" in args.variants:
            run_student(records, "reverse_kl", seed, {**taught, "method": "reverse_kl"}, vocab, [ReverseKL()],
                        teacher, train, held_out)
        if "forward_kl top-k cached" in args.variants:
            # the tail of the cached teacher: the other tokens' mass kept, spread evenly (a first version
            # renormalised both distributions on the top k, which left the student's tail free)
            config = {**taught, "method": "forward_kl", "top_k": TOP_K, "cache_dtype": "float16", "tail": "even fill"}
            if cache is None and not records.find("forward_kl top-k cached", seed, config):
                with Timer() as timer:
                    cache = open_topk_cache(WORK / BENCHMARK / "cache", teacher, train, vocab, TOP_K)
                print(f"top-{TOP_K} cache: {cache.size_bytes() / 2**20:.1f} MiB ({timer.seconds:.0f} s)", flush=True)
            run_student(records, "forward_kl top-k cached", seed, config, vocab, [ForwardKL()], teacher, train,
                        held_out, cache)
        if "sequence-level KD" in args.variants:
            # sampled with the seed; the padding token is never sampled (a first version could)
            config = {**taught, "method": "sequence-level KD", "generated_blocks": len(train), "pad_sampled": False}
            if not records.find("sequence-level KD", seed, config):
                generated = generate_blocks(teacher, len(train), BLOCK, eot, seed=seed, pad_id=pad)
                run_student(records, "sequence-level KD", seed, config, vocab, [HardLabel()], None, generated,
                            held_out)
    print(table())


if __name__ == "__main__":
    main()
