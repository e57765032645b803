"""CIFAR-10 (JPEG copy), all 50,000 training images: methods against training from scratch.

A teacher that is strong on the JPEG images (the shared pretrained resnet20, fine-tuned on the JPEG
training set: the pretrained ResNets lose about 10 points to the JPEG blur) teaches resnet8. Every
variant trains the same student for the same epochs with the same data order per seed and the same
augmentation (one crop + flip draw per image and epoch, shared by all variants and seeds so that
one teacher cache serves them all). The teacher's logits and the tapped layers that FitNets, CRD
and RKD read are cached with one view per epoch; AT reads layer1..3 (56 KiB per image and view:
56 GB for 20 views), so AT variants run the teacher live on exactly the same inputs, and "KD
(teacher live)" is KD without the cache: the cache on/off comparison.

Each method uses the settings of the authors' code for a CIFAR ResNet pair (mdistiller / RepDistiller
/ the DIST code), listed in VARIANTS; the SGD recipe is theirs (lr 0.05, batch 64, momentum 0.9,
wd 5e-4) with the 240-epoch step schedule shortened to a cosine over --epochs.

Every finished run is a record in benchmarks/results/cifar10_methods.jsonl; recorded runs are skipped,
so the benchmark resumes where it stopped (first seed of every variant first).

    python benchmarks/cifar10_methods.py [--epochs 20] [--seeds 0 1 2] [--variants ...] [--threads 1]
    python benchmarks/table.py cifar10_methods
"""

from __future__ import annotations

import argparse

import torch
from _common import REPO, keep_freed_memory, shared_data
from _records import WORK, Records, Timer, config_digest, train_seconds
from table import render

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import limit_samples, load_image_folder_bundle
from kdistill.data.transforms import Augment
from kdistill.digest import model_digest
from kdistill.engine.cache import CacheSettings
from kdistill.evaluate import count_parameters, cpu_latency_ms
from kdistill.methods import build_method
from kdistill.models import build_model, load_weights

BENCHMARK = "cifar10_methods"
AUGMENT_SEED = 0
TEACHER_SEED = 1000
CACHE_TAPS = ("layer2", "linear:input")  # every cached variant's teacher layers: one shared cache

CE = {"name": "hard_label", "weight": 1.0}
KD = [{"name": "soft_target", "weight": 0.9, "temperature": 4}, {"name": "hard_label", "weight": 0.1}]
AT = {"name": "attention_transfer", "weight": 1000, "p": 2,
      "student_layers": ["layer1", "layer2", "layer3"], "teacher_layers": ["layer1", "layer2", "layer3"]}
# name -> (methods, teacher source): "cache", "live" or None (no teacher)
VARIANTS: dict[str, tuple[list[dict], str | None]] = {
    "scratch": ([CE], None),
    # mdistiller KD: T 4, KD 0.9, CE 0.1
    "KD": (KD, "cache"),
    # mdistiller DKD: CE 1, alpha 1, T 4, warm-up 20 of 240 epochs (a share); beta 2 as its res56 -> res20
    "DKD": ([CE, {"name": "dkd", "alpha": 1.0, "beta": 2.0, "temperature": 4, "warmup": 20 / 240}], "cache"),
    # DIST's CIFAR runs: CE 1, beta = gamma = 2, tau 4
    "DIST": ([CE, {"name": "dist", "beta": 2.0, "gamma": 2.0, "temperature": 4}], "cache"),
    # RepDistiller / mdistiller CRD: CE 1, weight 0.8, 128-d, 16384 negatives, tau 0.07, momentum 0.5
    "CRD": ([CE, {"name": "crd", "student_layer": "linear:input", "teacher_layer": "linear:input", "weight": 0.8,
                  "feature_dim": 128, "num_negatives": 16384, "nce_temperature": 0.07, "momentum": 0.5}], "cache"),
    # mdistiller FitNet: CE 1, hint weight 100 on the second stage (hint layer 2), trained jointly
    "FitNets": ([CE, {"name": "hint", "weight": 100, "student_layer": "layer2", "teacher_layer": "layer2"}],
                "cache"),
    # mdistiller RKD: CE 1, distance 25, angle 50 on the pooled penultimate features
    "RKD": ([CE, {"name": "rkd", "student_layer": "linear:input", "teacher_layer": "linear:input",
                  "distance_weight": 25, "angle_weight": 50}], "cache"),
    # mdistiller AT: CE 1, p 2, weight 1000 on the outputs of the three stages
    "AT": ([CE, AT], "live"),
    "KD+AT": ([*KD, AT], "live"),
    "KD (teacher live)": (KD, "live"),
    # AT at the weight the validation sweep chose (cifar10_sweep.py: 100 / 300 / 1000 -> 80.56 / 80.80 /
    # 79.34 % against scratch 80.58 on 5,000 held-out training images): the test run of that choice
    "AT 300 (chosen on validation)": ([CE, {**AT, "weight": 300}], "live"),
    # DIST at the weight the validation sweep preferred (beta = gamma 1 / 2 / 4 -> 83.26 / 82.38 / 79.74 %,
    # KD 82.40): the test run of that choice
    "DIST 1 (chosen on validation)": ([CE, {"name": "dist", "beta": 1.0, "gamma": 1.0, "temperature": 4}], "cache"),
    # CRD with its authors' negatives: their CIFAR loader draws them from other classes only
    # (cifar10_sweep.py measures it against all-sample negatives on the validation split)
    "CRD (other-class negatives)": ([CE, {"name": "crd", "student_layer": "linear:input",
                                          "teacher_layer": "linear:input", "weight": 0.8, "feature_dim": 128,
                                          "num_negatives": 16384, "nce_temperature": 0.07, "momentum": 0.5,
                                          "negatives": "other_classes"}], "cache"),
    # RepDistiller's "CRD+KD" row (-r 1 -a 1 -b 0.8): CE 1 + KD 1 at T 4 + CRD 0.8, its CIFAR negatives
    "CRD+KD": ([CE, {"name": "soft_target", "weight": 1.0, "temperature": 4},
                {"name": "crd", "student_layer": "linear:input", "teacher_layer": "linear:input", "weight": 0.8,
                 "feature_dim": 128, "num_negatives": 16384, "nce_temperature": 0.07, "momentum": 0.5,
                 "negatives": "other_classes"}], "cache"),
    # CRD+KD's own KD mix (CE 1 + KD 1, against the KD row's 0.1 + 0.9) without CRD: what the CRD term adds
    "KD (CE 1 + KD 1)": ([CE, {"name": "soft_target", "weight": 1.0, "temperature": 4}], "cache"),
}


def recipe(epochs: int, lr: float = 0.05) -> dict:
    # written out as the first records have them (their digests key the recorded runs)
    optimizer = {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False,
                 "betas": (0.9, 0.999)}
    return {"optimizer": optimizer, "schedule": ScheduleSettings(name="cosine").model_dump(), "batch_size": 64,
            "augment": {"crop_padding": 4, "horizontal_flip": True, "seed": AUGMENT_SEED}, "epochs": epochs}


def fit(distiller: Distiller, train, epochs: int) -> None:
    """Train in the run's own directory: an interrupted run (Ctrl-C, end of a session) resumes."""
    resume = distiller.checkpoint_path is not None and distiller.checkpoint_path.exists()
    distiller.fit(train, epochs=epochs, resume=resume)


def make_distiller(teacher, student, methods, config: dict, seed: int, norm, cache=None, description="",
                   run_name: str = ""):
    sgd = {k: v for k, v in config["optimizer"].items() if k != "betas"}  # betas: recorded, not an SGD argument
    return Distiller(teacher, student, methods, optimizer=OptimizerSettings(**sgd),
                     schedule=ScheduleSettings(**config["schedule"]), batch_size=config["batch_size"], seed=seed,
                     augment=Augment(**config["augment"]), student_normalization=norm,
                     teacher_normalization=norm if teacher is not None else None, teacher_cache=cache,
                     description=description, progress=False,
                     run_dir=WORK / BENCHMARK / "runs" / f"{run_name}-{config_digest(config)}" if run_name else None)


def accuracy(model, norm, test) -> float:
    return 100 * Distiller(None, model, progress=False, student_normalization=norm).evaluate(test)["acc"]


def prepare_teacher(records: Records, bundle, norm, name: str, epochs: int, lr: float):
    """The pretrained teacher fine-tuned on the JPEG training set (recorded like any run)."""
    depth = name.removeprefix("resnet")
    source = shared_data() / "teachers" / f"cifar10-resnet{depth}.th"
    config = {**recipe(epochs, lr), "model": name, "init": source.name, "train_samples": len(bundle.train)}
    path = WORK / BENCHMARK / f"teacher-{name}-{config_digest(config)}.pt"
    kept = REPO / "benchmarks" / "artifacts" / f"{BENCHMARK}-{path.name}"  # in git: later sessions reuse it
    if not path.exists() and kept.exists():
        path = kept
    teacher = load_weights(build_model(name, 10, (3, 32, 32)), source)
    if records.find("teacher", TEACHER_SEED, config) and path.exists():
        teacher.load_state_dict(torch.load(path, weights_only=True))
        return teacher.eval()
    pretrained = accuracy(teacher, norm, bundle.test)
    print(f"teacher {name} pretrained: {pretrained:.2f} % on the JPEG test set", flush=True)
    with Timer() as timer:
        torch.manual_seed(TEACHER_SEED)
        trainer = make_distiller(None, teacher, [build_method("hard_label", {})], config, TEACHER_SEED, norm,
                                 description="teacher fine-tune", run_name="teacher")
        fit(trainer, bundle.train, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), path)
    found = accuracy(teacher, norm, bundle.test)
    records.append("teacher", TEACHER_SEED, config, {"test_acc": found, "pretrained_test_acc": pretrained},
                   timer.seconds, params=count_parameters(teacher), train_seconds=train_seconds(trainer.history),
                   latency_ms_b1=cpu_latency_ms(teacher, torch.randn(1, 3, 32, 32)))
    print(f"teacher {name} fine-tuned: {found:.2f} % ({timer.seconds:.0f} s)", flush=True)
    return teacher.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet20")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--teacher-lr", type=float, default=0.02)
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-limit", type=int, help="a seeded subset (smoke checks only; the table uses all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    bundle = load_image_folder_bundle(shared_data() / "cifar10-jpeg.tar.gz")
    norm = (bundle.mean, bundle.std)
    if args.train_limit:
        bundle.train = limit_samples(bundle.train, args.train_limit, seed=0)
    teacher = prepare_teacher(records, bundle, norm, args.teacher, args.teacher_epochs, args.teacher_lr)
    cache = CacheSettings(WORK / BENCHMARK / "cache", dtype="float16", features=True, extra_taps=CACHE_TAPS)
    for seed in args.seeds:  # every variant's first seed before any second seed
        for variant in args.variants:
            specs, source = VARIANTS[variant]
            config = {**recipe(args.epochs), "student": args.student, "methods": specs,
                      "train_samples": len(bundle.train)}
            if source is not None:
                config.update(teacher=args.teacher, teacher_digest=model_digest(teacher), teacher_source=source)
            if records.find(variant, seed, config):
                continue
            torch.manual_seed(seed)
            student = build_model(args.student, 10, (3, 32, 32))
            methods = [build_method(s["name"], {k: v for k, v in s.items() if k != "name"}) for s in specs]
            with Timer() as timer:
                distiller = make_distiller(teacher if source else None, student, methods, config, seed, norm,
                                           cache if source == "cache" else None, f"{variant} seed {seed}",
                                           run_name=f"{variant.replace(' ', '_')}-seed{seed}")
                fit(distiller, bundle.train, args.epochs)
            found = accuracy(student, norm, bundle.test)
            last = distiller.history[-1]
            records.append(variant, seed, config, {"test_acc": found, "train_acc": 100 * last["train/acc"]},
                           timer.seconds, params=count_parameters(student),
                           latency_ms_b1=cpu_latency_ms(student, torch.randn(1, 3, 32, 32)),
                           notes=distiller.notes, train_seconds=train_seconds(distiller.history))
            print(f"{variant} seed {seed}: {found:.2f} % ({timer.seconds:.0f} s)", flush=True)
    print(render(BENCHMARK))


if __name__ == "__main__":
    main()
