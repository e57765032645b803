"""Bad command lines and `--set` overrides."""

from __future__ import annotations

from bad_input.harness import Case

OUT = ["--output-dir", "{tmp}/out"]

CASES = [
    Case("set-not-an-integer", ["run", "--set", "training.epochs=x", *OUT], ("training.epochs", "integer")),
    Case("set-unknown-field", ["run", "--set", "training.epoch=3", *OUT], ("training.epoch",)),
    Case("set-negative-temperature", ["run", "--set", "methods[0].temperature=-1", *OUT],
         ("methods[0].temperature",)),
    Case("nproc-zero", ["run", "--nproc", "0", *OUT], ("--nproc",)),
    Case("resume-not-a-run-dir", ["run", "--resume", "{tmp}"], ("--resume", "config.yaml")),
]
