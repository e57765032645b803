"""Distil a fine-tuned MiniLM into a 4-layer, 128-wide BERT the way Tang et al. 2019 did for small
data: a transfer set of perturbed training sentences labelled by the teacher's logits (cached once),
and a student whose embeddings start from the teacher's, projected to its width.

The teacher is the SST-2 MiniLM that `benchmarks/sst2.py` fine-tunes (its weights, a state dict, are
kept in benchmarks/runs/sst2/teacher-*.pt); give another with --teacher. Run from the repository root:
    OMP_NUM_THREADS=1 python examples/sst2_transfer_set.py --limit 200 --epochs 1    # a quick look
    OMP_NUM_THREADS=1 python examples/sst2_transfer_set.py                           # the full recipe
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import limit_samples
from kdistill.engine.cache import CacheSettings
from kdistill.methods import SoftTarget
from kdistill.text.augment import transfer_set
from kdistill.text.datasets import load_sst2_bundle
from kdistill.text.embedding_init import init_embeddings_from_teacher
from kdistill.text.files import read_text_file
from kdistill.text.hf_models import hf_classifier, hf_student
from kdistill.text.tokenize import load_tokenizer, text_dataset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("KDISTILL_DATA", REPO.parent / "shared" / "data")) / "sst2"
    parser.add_argument("--data", type=Path, default=data)
    parser.add_argument("--teacher", type=Path, default=next((REPO / "benchmarks/runs/sst2").glob("teacher-*.pt"),
                                                             None))
    parser.add_argument("--copies", type=int, default=6, help="perturbed copies per training sentence")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="this many training sentences (a quick look)")
    parser.add_argument("--out", type=Path, default=Path("runs/sst2-transfer"))
    args = parser.parse_args()
    if args.teacher is None or not args.teacher.exists():
        raise SystemExit("no teacher weights: run benchmarks/sst2.py --stages teacher first, or give --teacher")

    bundle = load_sst2_bundle(args.data, "minilm", max_length=64, use_dev=True)
    teacher = hf_classifier(2, "minilm")
    teacher.load_state_dict(torch.load(args.teacher, weights_only=True))

    # the transfer set: originals + perturbed copies; the labels ride along but the loss reads none
    examples = read_text_file(args.data / "stsa.binary.train", "label-text", label_names=bundle.classes)
    texts = examples.texts[: args.limit] if args.limit else examples.texts
    augmented = transfer_set(texts, args.copies, seed=0)
    transfer = text_dataset(load_tokenizer(bundle.tokenizer_path), augmented.texts,
                            [examples.labels[i] for i in augmented.source], bundle.classes, 64, "transfer set")
    print(f"transfer set: {len(transfer)} sentences from {len(texts)}")

    torch.manual_seed(0)
    student = hf_student(2, "minilm", layers=4, hidden=128, heads=4, intermediate=512)
    kept = init_embeddings_from_teacher(student, teacher).explained
    print(f"student embeddings: the teacher's top 128 principal directions ({100 * kept:.0f} % of their variance)")

    trainer = Distiller(teacher, student, [SoftTarget(weight=1.0, temperature=2.0)],
                        optimizer=OptimizerSettings(name="adamw", lr=5e-4, weight_decay=0.01),
                        schedule=ScheduleSettings(name="cosine", warmup_steps=100), batch_size=32, eval_batch_size=64,
                        teacher_cache=CacheSettings(args.out / "cache", dtype="float32"), run_dir=args.out / "run")
    trainer.fit(transfer, epochs=args.epochs)
    dev = bundle.val if not args.limit else limit_samples(bundle.val, args.limit, 0)
    print(f"dev accuracy: student {100 * trainer.evaluate(dev)['acc']:.2f} %, "
          f"teacher {100 * trainer.evaluate(dev, which=0)['acc']:.2f} %")


if __name__ == "__main__":
    main()
