"""What the teacher cache's float16 costs the soft targets: the CIFAR-10 methods teacher's logits in
float32 against the same logits rounded to float16, as the cache stores them.

The methods table's cache-on / cache-off pair (KD from the cache, KD with the teacher live) differ by
+0.14 points on average, within seed noise; this sizes the one difference between the two besides
the run itself, the rounding, directly on the targets: the largest logit change, the KL between the
temperature-softened distributions (T = 4, the KD rows' temperature, and T = 1), and whether any
argmax changes. Over the 10,000 JPEG test images (the cache holds training-image views; the logits'
range is the same). Prints and writes `benchmarks/results/cache-precision-2026-11-30.json`.

    python benchmarks/cache_precision.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from _common import shared_data
from _records import RESULTS, Records
from cifar10_methods import prepare_teacher

from kdistill.data import load_image_folder_bundle
from kdistill.data.transforms import Normalize
from kdistill.engine.device import resolve_device
from kdistill.engine.distributed import World
from kdistill.engine.loaders import make_loader
from kdistill.evaluate.diagnostics import predict_logits

OUTPUT = RESULTS / "cache-precision-2026-11-30.json"


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float) -> float:
    """Mean KL(softmax(p / T) || softmax(q / T)) over samples, in nats (float64)."""
    p = F.log_softmax(p_logits.double() / temperature, dim=1)
    q = F.log_softmax(q_logits.double() / temperature, dim=1)
    return float((p.exp() * (p - q)).sum(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_image_folder_bundle(shared_data() / "cifar10-jpeg.tar.gz")
    teacher = prepare_teacher(Records("cifar10_methods"), bundle, (bundle.mean, bundle.std), "resnet20", 4, 0.02)
    cpu = resolve_device("cpu")
    loader = make_loader(bundle.test, train=False, batch_size=500, eval_batch_size=500, seed=0, world=World(),
                         device=cpu)
    full, _ = predict_logits(teacher, loader, cpu, Normalize(bundle.mean, bundle.std))
    rounded = full.half().float()
    result = {"samples": len(full), "logit_range": [float(full.min()), float(full.max())],
              "max_abs_logit_change": float((full - rounded).abs().max()),
              "kl_T4": kl(full, rounded, 4.0), "kl_T1": kl(full, rounded, 1.0),
              "argmax_changes": int((full.argmax(1) != rounded.argmax(1)).sum())}
    print(json.dumps(result, indent=1))
    OUTPUT.write_text(json.dumps({"what": __doc__.splitlines()[0], **result}, indent=1) + "\n")
    print(f"written: {OUTPUT}")


if __name__ == "__main__":
    main()
