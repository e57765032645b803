"""Experiment files that are wrong as files: missing, a directory, binary, not UTF-8, YAML that does
not parse (the line named), a top level that is not sections, an unset `${VAR}`, a misspelt
section, and `--set` on list items the file does not have."""

from __future__ import annotations

from pathlib import Path

from bad_input.harness import Case

OUT = ["--output-dir", "{tmp}/out"]
RUN = ["run", "{tmp}/experiment.yaml", "--no-progress", *OUT]
SMALL = """student: {name: mlp, options: {hidden: [8]}}
training: {epochs: 1}
"""


def a_directory(tmp: Path) -> None:
    (tmp / "experiment.yaml").mkdir()


def yaml_case(case_id: str, content: str | bytes, expect: tuple[str, ...], **kwargs) -> Case:
    return Case(case_id, RUN, expect, files={"experiment.yaml": content}, **kwargs)


CASES = [
    Case("cfg-missing-file", RUN, ("experiment.yaml", "no such config file")),
    Case("cfg-a-directory", RUN, ("experiment.yaml", "is a directory"), setup=a_directory),
    yaml_case("cfg-binary-file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("experiment.yaml", "not a text file")),
    yaml_case("cfg-not-utf8", "name: caf\xe9\n".encode("latin-1") + SMALL.encode(), ("experiment.yaml", "UTF-8")),
    yaml_case("cfg-yaml-syntax-error", "name: x\nstudent:\n  name: mlp\n options: {hidden: [8]}\n",
              ("experiment.yaml", "line 4", "not valid YAML")),
    yaml_case("cfg-unclosed-bracket", "name: x\nstudent: {name: mlp, options: {hidden: [8}}\n",
              ("experiment.yaml", "line 2", "not valid YAML")),
    yaml_case("cfg-tab-indentation", "student:\n\tname: mlp\n", ("experiment.yaml", "line 2", "not valid YAML")),
    yaml_case("cfg-top-level-list", "- student: {name: mlp}\n- training: {epochs: 1}\n",
              ("experiment.yaml", "mapping of sections", "list")),
    yaml_case("cfg-top-level-text", "just a sentence, not sections\n", ("experiment.yaml", "mapping of sections")),
    yaml_case("cfg-empty-file", "", ("student", "required")),
    yaml_case("cfg-unset-environment-variable", "data:\n  name: mnist\n  root: ${KD_BAD_INPUT_UNSET}/mnist\n" + SMALL,
              ("data.root", "KD_BAD_INPUT_UNSET", "unset", "${KD_BAD_INPUT_UNSET:-")),
    yaml_case("cfg-duplicate-section", "training: {epochs: 2}\n" + SMALL + "training: {epochs: 3}\n",
              ("experiment.yaml", "'training' appears twice", "keep one")),
    yaml_case("cfg-misspelt-section", "trainig: {epochs: 1}\nstudent: {name: mlp}\n", ("trainig", "unknown key")),
    Case("cfg-set-item-of-list-not-in-file", [*RUN, "--set", "methods[0].temperature=2"],
         ("methods[0].temperature", "not set in the config file"), files={"experiment.yaml": SMALL}),
    Case("cfg-set-teacher-list-out-of-range", [*RUN, "--set", "teachers[1].name=cnn"],
         ("teachers[1].name", "out of range", "a list of 1"),
         files={"experiment.yaml": "teachers: [{name: mlp, training: {epochs: 1}}]\n" + SMALL}),
]
