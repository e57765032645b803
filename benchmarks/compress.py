"""Compression with kdistill: an MNIST MLP and a pretrained CIFAR-10 ResNet through prune ->
recover -> quantize -> export, and recovery by distillation against plain fine-tuning.

Part 1, per model: the pipeline's table (accuracy, size, FLOPs, latency at batch 1 and 64, peak
memory after each stage; structured pruning at ascending ratios, each recovered by distillation
from the unpruned model, stopped by an accuracy budget read on 10 % of the training samples held
out, the test split only reported; int8 ONNX; float ONNX checked against PyTorch), and the int8
ONNX model's speed-up over the float PyTorch model at batch 1 (1 thread).
Part 2: at several one-shot structured prune ratios, the same pruned model recovered by distillation
(soft targets of the unpruned model, T=4, 0.9 soft + 0.1 hard) or by fine-tuning on the labels, same
epochs and recipe, 3 seeds (the seed sets the recovery's data order; pruning is deterministic).

MNIST: the start model is a 784-800-800 MLP trained here (SGD, 5 epochs), full training and test
sets. CIFAR-10: the pretrained resnet20 of ../shared/data/teachers (ImageNet mean/std inputs),
recovery on a seeded subset of the JPEG training images and accuracy on a subset of the test
images (both sizes are in each record's config): CPU time is scarce on this machine.

    python benchmarks/compress.py --part mnist [--threads 1]
    python benchmarks/compress.py --part cifar
    python benchmarks/compress.py --table          # the per-stage tables; python benchmarks/table.py compress
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from _common import keep_freed_memory, markdown_table, shared_data
from _records import WORK, Records, Timer, config_digest, load

from kdistill.compress import evaluation as ev
from kdistill.compress.pipeline import VAL_FRACTION, CompressionPipeline, StageRow
from kdistill.compress.prune import StructuredPruning
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.compress.spec import CompressSpec
from kdistill.compress.table import stage_table
from kdistill.data import load_image_folder_bundle, load_mnist_bundle
from kdistill.data.base import limit_samples
from kdistill.data.transforms import Normalize
from kdistill.digest import model_digest
from kdistill.evaluate.profile import interleaved_latency, onnx_session
from kdistill.models import build_model, load_weights

BENCHMARK = "compress"
SEEDS = (0, 1, 2)

MNIST = {"model": "mlp", "options": {"hidden": [800, 800]}, "start_epochs": 5, "start_lr": 0.05,
         "ratios": [0.5, 0.8, 0.9, 0.95, 0.98], "recover": {"epochs": 1, "lr": 0.01, "optimizer": "sgd",
                                                            "batch_size": 128, "temperature": 4.0,
                                                            "soft_weight": 0.9},
         "budget_points": 0.5, "pipeline_ratios": [0.5, 0.8, 0.9, 0.95], "quantize": "dynamic",
         "train_samples": 60000, "test_samples": 10000}
CIFAR = {"model": "resnet20", "checkpoint": "teachers/cifar10-resnet20.th", "ratios": [0.3, 0.5, 0.7],
         "recover": {"epochs": 1, "lr": 0.01, "optimizer": "sgd", "batch_size": 64, "temperature": 4.0,
                     "soft_weight": 0.9},
         "budget_points": 2.0, "pipeline_ratios": [0.3, 0.5, 0.7], "quantize": "static",
         "train_samples": 5000, "test_samples": 2000, "normalization": "imagenet mean/std"}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def mnist_setup(records: Records):
    bundle = load_mnist_bundle(shared_data() / "mnist")
    norm = Normalize(None, None)
    torch.manual_seed(0)
    model = build_model("mlp", 10, (1, 28, 28), MNIST["options"])
    path = WORK / BENCHMARK / "mnist-start.pt"
    config = {k: MNIST[k] for k in ("model", "options", "start_epochs", "start_lr")}
    if path.exists() and records.find("mnist start", 0, config):
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        with Timer() as timer:
            recover(model, None, bundle.train, RecoverySettings(epochs=MNIST["start_epochs"], mode="finetune",
                                                                lr=MNIST["start_lr"]), norm)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        records.append("mnist start", 0, config, {"test_acc": 100 * ev.torch_accuracy(model, bundle.test, norm)},
                       timer.seconds)
    return model.eval(), bundle.train, bundle.test, norm


def cifar_setup(records: Records):
    bundle = load_image_folder_bundle(shared_data() / "cifar10-jpeg.tar.gz")
    norm = Normalize(*IMAGENET)
    model = load_weights(build_model("resnet20", 10, (3, 32, 32)), shared_data() / CIFAR["checkpoint"])
    train = limit_samples(bundle.train, CIFAR["train_samples"], 0)
    test = limit_samples(bundle.test, CIFAR["test_samples"], 0)
    return model.eval(), train, test, norm


def pipeline_part(records: Records, name: str, setup: dict, model, train, test, norm) -> None:
    spec = CompressSpec.model_validate({
        "stages": ["prune", "recover", "quantize", "export"], "accuracy_budget": setup["budget_points"],
        "prune": {"ratios": setup["pipeline_ratios"]}, "recover": {**setup["recover"], "mode": "distill"},
        "quantize": {"mode": setup["quantize"]}})
    # the stop rule chooses on VAL_FRACTION of the training samples, held out; the test split is only reported
    config = {**setup, "spec": spec.model_dump(mode="json"), "start": model_digest(model),
              "chosen_on": f"validation: {VAL_FRACTION:.0%} of the training samples held out"}
    if records.find(f"{name} pipeline", 0, config):
        return
    with Timer() as timer:
        result = CompressionPipeline(spec, copy.deepcopy(model), train, test, norm,
                                     WORK / BENCHMARK / f"{name}-pipeline-{config_digest(config)}", seed=0).run()
    rows = result.rows
    float_b1 = rows[0].profile["latency_b1_ms"]
    int8 = [r for r in rows if r.artefact == "onnx int8"]
    metrics = {"test_acc": 100 * rows[0].accuracy, "stages": [r.__dict__ for r in rows],
               "int8_onnx_speedup_b1_sequential": float_b1 / int8[0].profile["latency_b1_ms"] if int8 else None,
               "files": result.files}
    records.append(f"{name} pipeline", 0, config, metrics, timer.seconds)
    print(stage_table(rows), flush=True)


def speedup_part(records: Records, name: str, setup: dict, model, test, norm) -> None:
    """Batch-1 latency of the start model (float PyTorch), the exported float ONNX and the int8 ONNX
    of the last pipeline run, measured in turns (so a busy machine slows all three alike), 1 thread."""
    pipeline = [r for r in load(BENCHMARK) if r["variant"] == f"{name} pipeline"]
    if not pipeline or "onnx_int8" not in pipeline[-1]["metrics"]["files"]:
        return
    files = pipeline[-1]["metrics"]["files"]
    config = {"pipeline": pipeline[-1]["config_digest"], "repeats": 300, "warmup": 30, "threads": 1}
    if records.find(f"{name} int8 speed-up", 0, config):
        return
    one = ev.sample_inputs(test, norm, 1)
    sessions = {k: onnx_session(files[k]) for k in ("onnx", "onnx_int8")}
    feed = {sessions["onnx"].get_inputs()[0].name: one.numpy()}
    model = model.eval()

    def torch_call():
        with torch.inference_mode():
            model(one)

    with Timer() as timer:
        found = interleaved_latency({"pytorch float": torch_call,
                                     "onnx float": lambda: sessions["onnx"].run(None, feed),
                                     "onnx int8": lambda: sessions["onnx_int8"].run(None, feed)},
                                    config["repeats"], config["warmup"], 1)
    metrics = {f"{k} {stat}": getattr(v, f"{stat}_ms") for k, v in found.items() for stat in ("median", "p10", "p90")}
    base, int8 = found["pytorch float"], found["onnx int8"]
    metrics.update({"speedup_median": base.median_ms / int8.median_ms, "speedup_p10": base.p10_ms / int8.p10_ms,
                    "int8_over_float_onnx_median": found["onnx float"].median_ms / int8.median_ms})
    records.append(f"{name} int8 speed-up", 0, config, metrics, timer.seconds)
    print(f"{name}: int8 ONNX speed-up over the float PyTorch start model at batch 1: "
          f"{metrics['speedup_median']:.2f}x (median), {metrics['speedup_p10']:.2f}x (p10)", flush=True)


def recovery_part(records: Records, name: str, setup: dict, model, train, test, norm, seeds) -> None:
    reference = copy.deepcopy(model).eval()
    digest = model_digest(reference)
    for seed in seeds:
        for ratio in setup["ratios"]:
            pruned = copy.deepcopy(model)
            StructuredPruning(pruned, ev.sample_inputs(test, norm, 2), ratio).step()
            for mode in ("distill", "finetune"):
                config = {**{k: v for k, v in setup.items() if k not in ("ratios", "pipeline_ratios")},
                          "ratio": ratio, "mode": mode, "start": digest}
                variant = f"{name} {mode} @{ratio:.0%}"
                if records.find(variant, seed, config):
                    continue
                student = copy.deepcopy(pruned)
                with Timer() as timer:
                    before = ev.torch_accuracy(student, test, norm)
                    recover(student, reference if mode == "distill" else None, train,
                            RecoverySettings(**setup["recover"], mode=mode, seed=seed), norm)
                    after = ev.torch_accuracy(student, test, norm)
                assert model_digest(reference) == digest, "the unpruned teacher changed"
                records.append(variant, seed, config, {"test_acc": 100 * after, "pruned_acc": 100 * before,
                                                      "params": sum(p.numel() for p in student.parameters())},
                               timer.seconds)
                print(f"{variant} seed {seed}: {100 * before:.2f} -> {100 * after:.2f} ({timer.seconds:.0f} s)",
                      flush=True)


def tables() -> str:
    parts = []
    for record in load(BENCHMARK):
        if record["variant"].endswith("pipeline"):
            rows = [StageRow(**row) for row in record["metrics"]["stages"]]
            setup = record["config"]
            chosen = setup.get("chosen_on", "test (records before the validation split)")
            parts += [f"### {record['variant']} ({record['date']}; recovery {setup['recover']['epochs']} epoch(s) on "
                      f"{setup['train_samples']} training images, test on {setup['test_samples']}, budget "
                      f"{setup['budget_points']} points, chosen on {chosen})", "", stage_table(rows), ""]
        if record["variant"].endswith("speed-up"):
            m = record["metrics"]
            parts += [f"{record['variant']} at batch 1, 1 thread, measured in turns: {m['speedup_median']:.2f}x by "
                      f"medians ({m['pytorch float median']:.3f} ms float PyTorch start model, "
                      f"{m['onnx float median']:.3f} ms float ONNX, {m['onnx int8 median']:.3f} ms int8 ONNX), "
                      f"{m['speedup_p10']:.2f}x by 10th percentiles", ""]
    comparison = {}
    for record in load(BENCHMARK):
        if " @" in record["variant"]:
            name_mode, ratio = record["variant"].split(" @")
            name, mode = name_mode.rsplit(" ", 1)
            comparison.setdefault((name, ratio), {}).setdefault(mode, []).append(record["metrics"]["test_acc"])
    if comparison:
        import statistics

        def cell(values):
            return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f} (n={len(values)})" \
                if len(values) > 1 else (f"{values[0]:.2f} (n=1)" if values else "")
        rows = []
        for (name, ratio), modes in comparison.items():
            gain = (statistics.mean(modes["distill"]) - statistics.mean(modes["finetune"])
                    if modes.get("distill") and modes.get("finetune") else None)
            rows.append([name, ratio, cell(modes.get("distill", [])), cell(modes.get("finetune", [])),
                         "" if gain is None else f"{gain:+.2f}"])
        parts += ["### recovery: distillation vs fine-tuning (test acc %)", "",
                  markdown_table(["model", "pruned", "distill", "finetune", "distill - finetune"], rows)]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("mnist", "cifar"), action="append")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the recorded tables and exit")
    parser.add_argument("--skip-recovery", action="store_true", help="only the pipeline and the speed-up")
    parser.add_argument("--cifar-train-samples", type=int, help=f"default {CIFAR['train_samples']}")
    parser.add_argument("--cifar-epochs", type=int, help=f"recovery epochs, default {CIFAR['recover']['epochs']}")
    parser.add_argument("--cifar-pipeline-ratios", type=float, nargs="+",
                        help=f"default {CIFAR['pipeline_ratios']}")
    args = parser.parse_args()
    if args.table:
        print(tables())
        return
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    if args.cifar_train_samples:
        CIFAR["train_samples"] = args.cifar_train_samples
    if args.cifar_epochs:
        CIFAR["recover"]["epochs"] = args.cifar_epochs
    if args.cifar_pipeline_ratios:
        CIFAR["pipeline_ratios"] = args.cifar_pipeline_ratios
    for part in args.part or ["mnist", "cifar"]:
        setup = MNIST if part == "mnist" else CIFAR
        model, train, test, norm = (mnist_setup if part == "mnist" else cifar_setup)(records)
        pipeline_part(records, part, setup, model, train, test, norm)
        speedup_part(records, part, setup, model, test, norm)
        if not args.skip_recovery:
            recovery_part(records, part, setup, model, train, test, norm, args.seeds)
    print(json.dumps({"done": args.part}))


if __name__ == "__main__":
    main()
