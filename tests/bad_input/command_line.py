"""Bad command lines: `--set` syntax and values, `--nproc`, `--threads`, output directories that cannot
be used, `--resume` of a run that is not one or whose files are damaged, and failures after the run
directory was made (a late config problem, an exception in the first epoch: no debris)."""

from __future__ import annotations

from pathlib import Path

from bad_input.harness import Case

OUT = ["--output-dir", "{tmp}/out"]
RUN = ["run", "--no-progress"]
# a run directory as kdistill writes it, small enough that nothing trains before the damage is found
RUN_CONFIG = """name: resumed
teacher: {name: mlp, options: {hidden: [8]}, training: {epochs: 1}}
student: {name: mlp, options: {hidden: [8]}}
training: {epochs: 2}
baseline: false
"""
RESUME = ["run", "--resume", "{tmp}/run", "--no-progress"]
BOOM = """from kdistill import Callback


class Boom(Callback):
    def on_step_end(self, distiller, step_info):
        raise RuntimeError("boom in the first epoch")
"""


def wrong_class_teacher(tmp: Path) -> None:
    """A teacher checkpoint for 7 classes, for a data set of 10: found once the data is loaded."""
    import torch

    from kdistill.models import build_model

    torch.save(build_model("mlp", 7, (1, 8, 8), {"hidden": [16]}).state_dict(), tmp / "teacher.pt")


def existing_file(tmp: Path) -> None:
    (tmp / "out").write_text("a file where the run directory should go\n")


CASES = [
    # under --nproc the workers find it; the launcher keeps their exit code, adds no agent traceback
    Case("cli-nproc-misspelt-teacher-layer", [*RUN, "experiment.yaml", "--nproc", "2", *OUT],
         ("methods[0].teacher_layer", "features.9", "closest"),
         files={"experiment.yaml": "teacher: {name: cnn, training: {epochs: 1}}\nstudent: {name: mlp, options: "
                "{hidden: [8]}}\nmethods:\n  - {name: hint, student_layer: hidden.0, teacher_layer: features.9}\n"
                "training: {epochs: 1}\n"}),
    # --set
    Case("cli-set-not-an-integer", [*RUN, "--set", "training.epochs=x", *OUT], ("training.epochs", "integer")),
    Case("cli-set-unknown-field", [*RUN, "--set", "training.epoch=3", *OUT], ("training.epoch", "unknown key")),
    Case("cli-set-list-item-value", [*RUN, "--set", "methods[0].temperature=-1", *OUT],
         ("methods[0].temperature", "must be > 0")),
    Case("cli-set-no-equals", [*RUN, "--set", "training.epochs", *OUT], ("training.epochs", "key=value")),
    Case("cli-set-empty-key", [*RUN, "--set", "=5", *OUT], ("--set =5", "key is empty")),
    Case("cli-set-index-out-of-range", [*RUN, "--set", "methods[5].weight=1", *OUT],
         ("methods[5].weight", "out of range", "a list of 2")),
    Case("cli-set-index-of-absent-list", [*RUN, "--set", "teachers[1].name=cnn", *OUT],
         ("teachers[1].name", "no item [1]")),
    Case("cli-set-bad-index", [*RUN, "--set", "methods[x].weight=1", *OUT], ("methods[x]", "not a field name")),
    Case("cli-set-index-of-a-section", [*RUN, "--set", "training[0]=1", *OUT], ("training", "not a list")),
    Case("cli-set-value-not-yaml", [*RUN, "--set", "training.epochs=[5", *OUT], ("training.epochs", "not valid YAML")),
    Case("cli-set-into-a-value", [*RUN, "--set", "seed.value=3", *OUT], ("seed", "a value, not a section")),
    # processes and threads
    Case("cli-nproc-zero", [*RUN, "--nproc", "0", *OUT], ("--nproc", ">= 1")),
    Case("cli-threads-zero", [*RUN, "--threads", "0", *OUT], ("--threads", ">= 1")),
    Case("cli-threads-env-not-a-number", [*RUN, *OUT], ("KDISTILL_THREADS", "'many'"),
         env={"KDISTILL_THREADS": "many"}),
    Case("cli-device-unknown", [*RUN, "--device", "gpu0", *OUT], ("training.device", "cuda")),
    # output directories
    Case("cli-output-dir-under-a-file", [*RUN, "--output-dir", "{tmp}/blocker/out"], ("blocker", "is a file"),
         files={"blocker": "not a directory\n"}),
    Case("cli-output-dir-is-a-file", [*RUN, *OUT], ("output_dir", "is a file"), setup=existing_file, out_dir="any"),
    Case("cli-output-dir-not-empty", [*RUN, *OUT], ("already exists and is not empty", "--resume"),
         files={"out/notes.txt": "someone's notes\n"}, out_dir="any"),
    Case("cli-output-dir-refused-by-the-system", [*RUN, "--output-dir", "/sys/kdistill-bad-input/out"],
         ("cannot create the run directory", "/sys/kdistill-bad-input"), code=3),
    # resume
    Case("cli-resume-not-a-run-dir", ["run", "--resume", "{tmp}"], ("--resume", "config.yaml")),
    Case("cli-resume-with-a-config-file", ["run", "{tmp}/run/config.yaml", "--resume", "{tmp}/run"],
         ("--resume takes the run's own config",), files={"run/config.yaml": RUN_CONFIG}),
    Case("cli-resume-set-changes-finished-stages", [*RESUME, "--set", "methods[0].temperature=2"],
         ("methods[0].temperature", "changes what the finished stages computed", "training.device"),
         files={"run/config.yaml": RUN_CONFIG}),
    Case("cli-resume-binary-config", RESUME, ("run/config.yaml", "not a text file"),
         files={"run/config.yaml": b"\x80\x04\x95\x00\x00PK\x03\x04"}),
    Case("cli-resume-truncated-config", RESUME, ("run/config.yaml", "line 2", "not valid YAML"),
         files={"run/config.yaml": "name: resumed\nstudent: {name: mlp, opt"}),
    Case("cli-resume-garbage-checkpoint", RESUME, ("teacher/checkpoints/last.pt", "truncated or not a PyTorch"),
         files={"run/config.yaml": RUN_CONFIG, "run/teacher/checkpoints/last.pt": b"not a checkpoint at all\n"}),
    Case("cli-resume-empty-checkpoint", RESUME, ("last.pt", "truncated or not a PyTorch checkpoint"),
         files={"run/config.yaml": RUN_CONFIG, "run/teacher/checkpoints/last.pt": b""}),
    Case("cli-resume-damaged-stage-record", RESUME, ("teacher/stage.json", "not a stage record"),
         files={"run/config.yaml": RUN_CONFIG, "run/teacher/stage.json": '{"stage": "teach',
                "run/teacher/metrics.jsonl": ""}),
    # failures once the run directory exists: it is removed again (nothing to resume)
    Case("cli-late-wrong-class-teacher-no-debris", [*RUN, "{tmp}/experiment.yaml", *OUT], ("teacher.checkpoint",),
         files={"experiment.yaml": "teacher: {name: mlp, options: {hidden: [16]}, checkpoint: {tmp}/teacher.pt}\n"
                                   "student: {name: mlp, options: {hidden: [8]}}\ntraining: {epochs: 1}\n"},
         setup=wrong_class_teacher),
    Case("cli-exception-in-first-epoch-no-debris",
         [*RUN, "--set", "teacher.training.callbacks=[boom:Boom]", *OUT],
         ("RuntimeError: boom in the first epoch", "--debug"), files={"boom.py": BOOM}, code=1),
]
