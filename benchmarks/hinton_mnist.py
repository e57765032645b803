"""Hinton, Vinyals and Dean 2015, section 3: distillation on MNIST.

Teacher 784-1200-1200 (dropout 0.2 input / 0.5 hidden, +-2 px jitter); student 784-800-800 trained
from the labels and by distillation at T=20 (0.9 soft + 0.1 hard), same epochs and recipe; test
errors out of 10,000. The paper: 67 / 146 / 74 errors, 91 % of the gap. The recipe is the one a
plain-PyTorch reference used on this machine (issue 8): AdamW (weight decay 0, i.e. Adam) 1e-3,
500-step linear warm-up then per-step cosine to 0, batch 128 with the last partial batch dropped,
pixels in [0, 1] (no normalisation); teacher 120 epochs, students 50. The distilled students read
the teacher's logits from the teacher cache (no augmentation for students: one view).

Every finished run is a record in benchmarks/results/hinton_mnist.jsonl; recorded runs are skipped
(the teacher's weights are kept in benchmarks/runs/hinton_mnist/ to serve later sessions).

    python benchmarks/hinton_mnist.py [--teacher-epochs 120] [--student-epochs 50] [--seeds 0 1 2] [--threads 1]
    python benchmarks/hinton_mnist.py --variants own-teacher  # + teachers of seeds 1001, 1002, one per student seed
    python benchmarks/hinton_mnist.py --variants jittered  # + students on jittered views, the teacher on each
    python benchmarks/hinton_mnist.py --variants longer [--longer-epochs 200]  # + scratch and distilled, trained longer
    python benchmarks/hinton_mnist.py --variants ensemble  # + students taught by the mean of teachers 1000-1002
    python benchmarks/hinton_mnist.py --variants tuned --tuned-temperature T --tuned-hard-weight W
        # + students distilled at the T and label weight `kdistill tune benchmarks/hinton_mnist_tune.yaml`
        # chose on a validation split (soft weight 0.9 as searched)
    python benchmarks/table.py hinton_mnist
"""

from __future__ import annotations

import argparse

import torch
from _common import keep_freed_memory, shared_data
from _records import WORK, Records, Timer, config_digest, train_seconds
from table import render

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.data import load_mnist_bundle
from kdistill.data.transforms import Augment
from kdistill.digest import model_digest
from kdistill.engine.cache import CacheSettings
from kdistill.evaluate import count_parameters
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model
from kdistill.strategies import TeacherEnsemble, evaluate_ensemble

BENCHMARK = "hinton_mnist"
TEACHER_SEED = 1000
TEACHER = {"hidden": [1200, 1200], "dropout": 0.5, "input_dropout": 0.2}
STUDENT = {"hidden": [800, 800]}
OWN_TEACHER = "distilled (teacher of its own: seed 1000 + student seed)"
JITTERED_SCRATCH = "scratch (jittered)"
JITTERED_DISTILLED = "distilled (jittered: the teacher on every view)"
TUNED = "distilled (T and label weight chosen on validation)"
ENSEMBLE = "teacher ensemble (seeds 1000-1002, mean of probabilities)"
ENSEMBLE_DISTILLED = "distilled (teacher: the ensemble of seeds 1000-1002)"


def longer(variant: str, epochs: int) -> str:
    return f"{variant} ({epochs} epochs)"


def recipe(epochs: int) -> dict:
    # written out as the first records have them (their digests key the recorded runs)
    optimizer = {"name": "adamw", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
                 "betas": (0.9, 0.999)}
    return {"optimizer": optimizer, "schedule": ScheduleSettings(name="cosine", warmup_steps=500).model_dump(),
            "batch_size": 128, "drop_last": True, "normalization": None, "epochs": epochs}


def run_dir(name: str, config: dict):
    return WORK / BENCHMARK / "runs" / f"{name}-{config_digest(config)}"


def distiller_for(teacher, student, methods, config: dict, seed: int, name: str, augment: Augment | None = None,
                  cache: CacheSettings | None = None) -> Distiller:
    adam = {k: v for k, v in config["optimizer"].items() if k not in ("momentum", "nesterov")}  # recorded, unused
    return Distiller(teacher, student, methods, optimizer=OptimizerSettings(**adam),
                     schedule=ScheduleSettings(**config["schedule"]), batch_size=config["batch_size"],
                     drop_last=config["drop_last"], seed=seed, augment=augment, teacher_cache=cache,
                     description=name, progress=False, run_dir=run_dir(name, config))


def fit(distiller: Distiller, train, epochs: int) -> None:
    """In the run's own directory: an interrupted run (Ctrl-C, end of a session) resumes."""
    distiller.fit(train, epochs=epochs, resume=distiller.checkpoint_path.exists())


def errors(distiller: Distiller, test) -> int:
    return round((1 - distiller.evaluate(test)["acc"]) * len(test))


def train_teacher(records: Records, bundle, epochs: int, seed: int = TEACHER_SEED):
    config = {**recipe(epochs), "model": TEACHER, "jitter_px": 2}
    suffix = "" if seed == TEACHER_SEED else f"-seed{seed}"  # the first teacher's file keeps its name
    path = WORK / BENCHMARK / f"teacher-{epochs}ep{suffix}.pt"
    torch.manual_seed(seed)
    teacher = build_model("mlp", 10, (1, 28, 28), TEACHER)
    if records.find("teacher", seed, config) and path.exists():
        teacher.load_state_dict(torch.load(path, weights_only=True))
        return teacher.eval()
    with Timer() as timer:
        trainer = distiller_for(None, teacher, [HardLabel()], config, seed, f"teacher{suffix}",
                                augment=Augment(crop_padding=2, seed=seed))
        fit(trainer, bundle.train, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), path)
    found = errors(trainer, bundle.test)
    records.append("teacher", seed, config, {"test_errors": found, "test_acc": 100 - found / 100},
                   timer.seconds, params=count_parameters(teacher), train_seconds=train_seconds(trainer.history))
    print(f"teacher: {found} errors ({timer.seconds:.0f} s)", flush=True)
    return teacher.eval()


def record_ensemble(records: Records, bundle, teachers, temperature: float) -> None:
    """The ensemble's own test errors: the mean of the teachers' probabilities (at T = 1, the usual
    ensemble; at the distillation's T too, the mixture the students are taught)."""
    config = {"teachers": [model_digest(t) for t in teachers], "combination": "mean of probabilities",
              "mixture_temperature": temperature}
    if records.find(ENSEMBLE, TEACHER_SEED, config):
        return
    with Timer() as timer:
        found = round((1 - evaluate_ensemble(teachers, bundle.test)["acc"]) * len(bundle.test))
        mixture = TeacherEnsemble(teachers, temperature=temperature)
        at_t = round((1 - evaluate_ensemble([mixture], bundle.test)["acc"]) * len(bundle.test))
    records.append(ENSEMBLE, TEACHER_SEED, config, {"test_errors": found, "test_acc": 100 - found / 100,
                                                    f"test_errors_mixture_at_T{temperature:g}": at_t},
                   timer.seconds, params=sum(count_parameters(t) for t in teachers), teacher_row=ENSEMBLE)
    print(f"{ENSEMBLE}: {found} errors ({at_t} for the mixture at T = {temperature:g})", flush=True)


def run_student(records: Records, bundle, variant: str, seed: int, config: dict, methods, teacher, args,
                architecture: dict = STUDENT, epochs: int | None = None, augment: Augment | None = None,
                **extra):
    """Train (or resume, or load when recorded) one student; returns it."""
    name = f"{variant.split(' ')[0]}-seed{seed}"  # the config digest in the directory name tells variants apart
    torch.manual_seed(seed)
    student = build_model("mlp", 10, (1, 28, 28), architecture)
    final = run_dir(name, config) / "student.pt"
    recorded = records.find(variant, seed, config)
    if recorded and final.exists():
        student.load_state_dict(torch.load(final, weights_only=True))
        return student.eval()
    cache = CacheSettings(WORK / BENCHMARK / "cache", dtype="float32") if teacher is not None else None
    with Timer() as timer:
        distiller = distiller_for(teacher, student, methods, config, seed, name, augment=augment, cache=cache)
        fit(distiller, bundle.train, epochs or args.student_epochs)
    found = errors(distiller, bundle.test)
    if recorded:  # recorded elsewhere, weights not kept here: retrained only to teach the next generation
        return student.eval()
    records.append(variant, seed, config, {"test_errors": found, "test_acc": 100 - found / 100}, timer.seconds,
                   params=count_parameters(student), notes=distiller.notes,
                   train_seconds=train_seconds(distiller.history), **extra)
    print(f"{variant} seed {seed}: {found} errors ({timer.seconds:.0f} s)", flush=True)
    return student.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=120)
    parser.add_argument("--student-epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--soft-weight", type=float, default=0.9)
    parser.add_argument("--tuned-temperature", type=float, help="variant 'tuned': the searched temperature")
    parser.add_argument("--tuned-hard-weight", type=float, help="variant 'tuned': the searched label weight")
    parser.add_argument("--longer-epochs", type=int, default=200, help="variant 'longer': the students' epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="*", default=["born-again", "born-again-2", "born-again-teacher-size",
                                                          "born-again-teacher-size-no-dropout"],
                        help="which born-again generations to train (scratch and distilled always run); "
                             "'own-teacher' distils student seed k from a teacher of its own, seed 1000 + k; "
                             "'jittered' trains scratch and distilled students on +-2 px jittered views; "
                             "'tuned' distils at --tuned-temperature and --tuned-hard-weight; "
                             "'longer' trains scratch and distilled for --longer-epochs; "
                             "'ensemble' distils from the mean of teachers 1000-1002 (trained if missing)")
    args = parser.parse_args()
    if "tuned" in args.variants and (args.tuned_temperature is None or args.tuned_hard_weight is None):
        parser.error("--variants tuned needs --tuned-temperature and --tuned-hard-weight (from the search's best.yaml)")
    if "longer" in args.variants and args.longer_epochs == args.student_epochs:
        parser.error("--longer-epochs equals --student-epochs: the 'longer' students would be the plain ones")
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    records = Records(BENCHMARK)
    bundle = load_mnist_bundle(shared_data() / "mnist")
    teacher = train_teacher(records, bundle, args.teacher_epochs)
    student_recipe = recipe(args.student_epochs)
    kd = {"temperature": args.temperature, "soft_weight": args.soft_weight}

    def distill():
        return [SoftTarget(weight=args.soft_weight, temperature=args.temperature),
                HardLabel(weight=round(1 - args.soft_weight, 6))]

    for seed in args.seeds:  # every variant's first seed first
        scratch_config = {**student_recipe, "model": STUDENT}
        # the student trained from the labels; then distilled from the big teacher; then born-again
        # generations: the same architecture distilled from the scratch student of the same seed, and
        # from the distilled student of the same seed (student of round k teaches round k + 1)
        distilled_config = {**scratch_config, **kd, "teacher": model_digest(teacher)}
        # a recorded student whose weights are gone is retrained only when a generation needs it as teacher
        if "born-again" in args.variants or not records.find("scratch", seed, scratch_config):
            scratch = run_student(records, bundle, "scratch", seed, scratch_config, [HardLabel()], None, args)
        if "born-again-2" in args.variants or not records.find("distilled", seed, distilled_config):
            distilled = run_student(records, bundle, "distilled", seed, distilled_config, distill(), teacher, args)
        if "born-again" in args.variants:
            run_student(records, bundle, "born-again (teacher: scratch student)", seed,
                        {**scratch_config, **kd, "teacher": "scratch student, same seed"}, distill(), scratch, args)
        if "born-again-2" in args.variants:
            run_student(records, bundle, "born-again-2 (teacher: distilled student)", seed,
                        {**scratch_config, **kd, "teacher": "distilled student, same seed"}, distill(), distilled,
                        args)
        if "born-again-teacher-size" in args.variants:
            # Furlanello et al.'s born-again setting: the teacher's own architecture and recipe
            # (dropout, +-2 px jitter, its epochs), distilled from the teacher (cache: one view per epoch)
            size_config = {**recipe(args.teacher_epochs), "model": TEACHER, "jitter_px": 2, **kd,
                           "teacher": model_digest(teacher)}
            run_student(records, bundle, "born-again (teacher's size, taught by the teacher)", seed, size_config,
                        distill(), teacher, args, architecture=TEACHER, epochs=args.teacher_epochs,
                        augment=Augment(crop_padding=2, seed=0))  # one jitter stream: one cache for all seeds
        if "born-again-teacher-size-no-dropout" in args.variants:
            # the same, without the teacher's dropout: at T = 20 the soft targets are the regulariser
            # (Hinton et al.'s distilled nets had none); with dropout the student fits them through
            # dropout noise (a 10-epoch check: 188 test errors with dropout, 107 without; see
            # docs/benchmarks.md)
            plain = {"hidden": TEACHER["hidden"]}
            plain_config = {**recipe(args.teacher_epochs), "model": plain, "jitter_px": 2, **kd,
                            "teacher": model_digest(teacher)}
            run_student(records, bundle, "born-again (teacher's size, no dropout, taught by the teacher)", seed,
                        plain_config, distill(), teacher, args, architecture=plain, epochs=args.teacher_epochs,
                        augment=Augment(crop_padding=2, seed=0))
        if "own-teacher" in args.variants:
            # the teacher is a run with a seed too: student seed k learns from teacher seed 1000 + k, so
            # the table's teacher row and the gap average over teachers, not one teacher's luck
            own = train_teacher(records, bundle, args.teacher_epochs, TEACHER_SEED + seed)
            run_student(records, bundle, OWN_TEACHER, seed,
                        {**scratch_config, **kd, "teacher": "teacher of seed 1000 + student seed"}, distill(), own,
                        args, teacher_digest=model_digest(own))
        if "jittered" in args.variants:
            # the students with the teacher's +-2 px jitter: the distilled one reads the teacher on every
            # jittered view (one cached view per epoch), so the transfer set grows with the epochs; the
            # scratch twin tells what the jitter alone gives (one jitter stream: one cache for all seeds)
            jittered, jitter = {**scratch_config, "jitter_px": 2}, Augment(crop_padding=2, seed=0)
            run_student(records, bundle, JITTERED_SCRATCH, seed, jittered, [HardLabel()], None, args,
                        augment=jitter, baseline=JITTERED_SCRATCH)
            run_student(records, bundle, JITTERED_DISTILLED, seed, {**jittered, **kd, "teacher": model_digest(teacher)},
                        distill(), teacher, args, augment=jitter, baseline=JITTERED_SCRATCH)
        if "tuned" in args.variants:
            # the temperature and label weight a search chose on 6,000 held-out training images
            # (benchmarks/hinton_mnist_tune.yaml, soft weight 0.9 fixed there too), trained on all 60,000
            tuned = {"temperature": args.tuned_temperature, "soft_weight": 0.9, "hard_weight": args.tuned_hard_weight,
                     "chosen_by": "kdistill tune benchmarks/hinton_mnist_tune.yaml (validation split)"}
            run_student(records, bundle, TUNED, seed, {**scratch_config, **tuned, "teacher": model_digest(teacher)},
                        [SoftTarget(weight=0.9, temperature=args.tuned_temperature),
                         HardLabel(weight=args.tuned_hard_weight)], teacher, args)
        if "longer" in args.variants:
            # the same two students trained for longer (the schedule stretched to the new length): at 50
            # epochs the distilled student's soft-target loss is still falling when the cosine reaches 0,
            # and Hinton et al.'s students were not trained on a 50-epoch budget
            long_scratch = longer("scratch", args.longer_epochs)
            long_distilled = longer("distilled", args.longer_epochs)
            long_recipe = {**recipe(args.longer_epochs), "model": STUDENT}
            run_student(records, bundle, long_scratch, seed, long_recipe, [HardLabel()], None, args,
                        epochs=args.longer_epochs, baseline=long_scratch)
            run_student(records, bundle, long_distilled, seed, {**long_recipe, **kd, "teacher": model_digest(teacher)},
                        distill(), teacher, args, epochs=args.longer_epochs, baseline=long_scratch)
        if "ensemble" in args.variants:
            # a stronger teacher than any one of them: the three teachers' mean distribution at T, as one
            # model (TeacherEnsemble), so the cache holds it; the gap is measured to the ensemble's errors
            members = [teacher] + [train_teacher(records, bundle, args.teacher_epochs, TEACHER_SEED + k)
                                   for k in (1, 2)]
            record_ensemble(records, bundle, members, args.temperature)
            ensemble = TeacherEnsemble(members, temperature=args.temperature).eval()
            run_student(records, bundle, ENSEMBLE_DISTILLED, seed,
                        {**scratch_config, **kd, "teacher": [model_digest(t) for t in members],
                         "combination": f"mean of probabilities at T = {args.temperature:g}"},
                        distill(), ensemble, args, teacher_row=ENSEMBLE)
    print(render(BENCHMARK))


if __name__ == "__main__":
    main()
