"""Unreadable files: checkpoints (a loaded teacher, `kdistill layers`) and data files (MNIST's IDX
files, image-folder archives and folders) that are damaged or are something else entirely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bad_files import (
    RunsCode,
    idx_bytes,
    image_members,
    mlp_state,
    mnist_files,
    png_bytes,
    safetensors_bytes,
    tar_bytes,
    torch_bytes,
    truncated,
    zip_bytes,
)

from bad_input.harness import Case

OUT = ["--output-dir", "{tmp}/out"]
RUN = ["run", "{tmp}/experiment.yaml", "--no-progress", *OUT]
TAIL = """student: {name: mlp, options: {hidden: [8]}}
methods: [{name: soft_target}]
training: {epochs: 1}
"""


def teacher_yaml(checkpoint: str = "{tmp}/teacher.pt", name: str = "mlp") -> str:
    """The digits demo with a teacher loaded from `checkpoint` (an MLP of one hidden layer of 16)."""
    return (f"name: loaded-teacher\ndata: {{name: digits}}\n"
            f"teacher: {{name: {name}, options: {{hidden: [16]}}, checkpoint: {checkpoint}}}\n" + TAIL)


def data_yaml(data: str) -> str:
    """An experiment whose data set is `data` (a YAML mapping); the teacher would be trained first."""
    teacher = "{name: mlp, options: {hidden: [16]}, training: {epochs: 1}}"
    return f"name: bad-data\ndata: {data}\nteacher: {teacher}\n" + TAIL


def teacher_case(case_id: str, content: bytes, expect: tuple[str, ...], name: str = "teacher.pt") -> Case:
    return Case(case_id, RUN, (name, *expect),
                files={"experiment.yaml": teacher_yaml("{tmp}/" + name), name: content})


def write_code_payload(tmp: Path) -> None:
    """A teacher whose pickle would `touch {tmp}/out` if unpickled: the harness then finds the run
    directory it must not find, so the case fails if the payload ever runs."""
    (tmp / "teacher.pt").write_bytes(torch_bytes({"state_dict": mlp_state(), "hook": RunsCode(str(tmp / "out"))}))


def write_whole_model(tmp: Path) -> None:
    from kdistill.models import build_model

    (tmp / "teacher.pt").write_bytes(torch_bytes(build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})))


def mnist_case(case_id: str, changed: dict[str, bytes], expect: tuple[str, ...], drop: str | None = None) -> Case:
    files = {f"mnist/{name}": data for name, data in {**mnist_files(), **changed}.items() if name != drop}
    return Case(case_id, RUN, expect, files={"experiment.yaml": data_yaml("{name: mnist, root: {tmp}/mnist}"),
                                             **files})


def images_case(case_id: str, archive: bytes, expect: tuple[str, ...]) -> Case:
    return Case(case_id, RUN, ("images.tar.gz", *expect), env={"KDISTILL_CACHE": "{tmp}/cache"},
                files={"experiment.yaml": data_yaml("{name: image-folder, root: {tmp}/images.tar.gz}"),
                       "images.tar.gz": archive})


STATE = torch_bytes(mlp_state())
IMAGES = image_members()

CASES = [
    # a teacher's checkpoint in an experiment
    teacher_case("file-teacher-empty", b"", ("empty file (0 bytes)",)),
    teacher_case("file-teacher-truncated", truncated(STATE), ("truncated or not a PyTorch checkpoint",)),
    teacher_case("file-teacher-truncated-legacy-format",
                 truncated(torch_bytes(mlp_state(), _use_new_zipfile_serialization=False)), ("truncated",)),
    teacher_case("file-teacher-text", b"teacher: resnet20, accuracy 91.8\n", ("not a PyTorch checkpoint", "text file")),
    teacher_case("file-teacher-png", png_bytes(), ("not a PyTorch checkpoint", "PNG image")),
    teacher_case("file-teacher-random-bytes", np.random.default_rng(1).integers(128, 256, 512, np.uint8).tobytes(),
                 ("truncated or not a PyTorch checkpoint",)),
    teacher_case("file-teacher-zip-not-checkpoint", zip_bytes({"weights.txt": b"1 2 3"}), ("no data.pkl",)),
    teacher_case("file-teacher-safetensors", safetensors_bytes(), ("safetensors",), name="teacher.safetensors"),
    teacher_case("file-teacher-no-state-dict", torch_bytes({"epoch": 30, "best_prec1": 91.8}),
                 ("no state dict", "epoch")),
    teacher_case("file-teacher-wrong-class-count", torch_bytes(mlp_state(num_classes=7)),
                 ("teacher.checkpoint", "(7, 16)", "(10, 16)")),
    teacher_case("file-teacher-wrong-architecture", torch_bytes(mlp_state(hidden=32)),
                 ("does not fit", "(32, 64)", "(16, 64)")),
    Case("file-teacher-pickle-payload", RUN, ("teacher.pt", "python objects beyond tensors", "state_dict()"),
         files={"experiment.yaml": teacher_yaml()}, setup=write_code_payload),
    Case("file-teacher-whole-pickled-model", RUN, ("teacher.pt", "kdistill.models.mlp.MLP", "state_dict()"),
         files={"experiment.yaml": teacher_yaml()}, setup=write_whole_model),
    # `kdistill layers` reads checkpoints too
    Case("file-layers-truncated-checkpoint", ["layers", "{tmp}/teacher.pt"], ("teacher.pt", "truncated"),
         files={"teacher.pt": truncated(STATE)}),
    Case("file-layers-pickle-payload", ["layers", "{tmp}/teacher.pt"], ("teacher.pt", "python objects beyond tensors"),
         setup=write_code_payload),
    Case("file-layers-missing-checkpoint", ["layers", "mlp", "--input-shape", "1,8,8", "--checkpoint", "{tmp}/gone.pt"],
         ("gone.pt", "not found")),
    Case("file-layers-checkpoint-is-a-directory", ["layers", "mlp", "--input-shape", "1,8,8", "--checkpoint", "{tmp}"],
         ("is a directory",)),
    # MNIST's IDX files
    mnist_case("file-mnist-html-as-gzip", {"train-images-idx3-ubyte.gz": b"<html><body>403 Forbidden</body></html>"},
               ("train-images-idx3-ubyte.gz", "not a gzip file", "html")),
    mnist_case("file-mnist-truncated-gzip", {"t10k-images-idx3-ubyte.gz": truncated(idx_bytes(np.zeros((50, 28, 28))))},
               ("t10k-images-idx3-ubyte.gz", "truncated gzip")),
    mnist_case("file-mnist-truncated-idx",
               {"train-images-idx3-ubyte.gz": idx_bytes(np.zeros(1000), shape=(60000, 28, 28))},
               ("train-images-idx3-ubyte.gz", "expected 47040000 bytes of images", "found 1000")),
    mnist_case("file-mnist-wrong-magic",  # type 0x0c: int32 labels
               {"train-labels-idx1-ubyte.gz": idx_bytes(np.zeros(6), magic=b"\x00\x00\x0c\x01")},
               ("train-labels-idx1-ubyte.gz", "magic number 0x00000c01")),
    mnist_case("file-mnist-count-mismatch", {"train-labels-idx1-ubyte.gz": idx_bytes(np.zeros(5))},
               ("train-labels-idx1-ubyte.gz", "5 labels for the 6 images")),
    mnist_case("file-mnist-swapped-files", {"t10k-images-idx3-ubyte.gz": idx_bytes(np.zeros(6))},
               ("t10k-images-idx3-ubyte.gz", "swapped")),
    mnist_case("file-mnist-missing-file", {}, ("t10k-labels-idx1-ubyte.gz", "missing"),
               drop="t10k-labels-idx1-ubyte.gz"),
    # image folders: archives and folders
    images_case("file-images-not-a-tar", b"train/cat/0.png\n", ("not a tar archive",)),
    images_case("file-images-zip-not-tar", zip_bytes(IMAGES), ("not a tar archive", "zip archive")),
    images_case("file-images-truncated-tar",
                truncated(tar_bytes({f"train/cat/{i}.png": png_bytes(32, 32, noise_seed=i) for i in range(8)})),
                ("truncated or damaged archive",)),
    images_case("file-images-no-images", tar_bytes({"README.md": b"# my data"}), ("holds no images",)),
    images_case("file-images-no-class-folders", tar_bytes({"train/0.png": png_bytes(), "test/0.png": png_bytes()}),
                ("outside a class folder",)),
    images_case("file-images-corrupt-member", tar_bytes({**IMAGES, "train/dog/7.png": truncated(png_bytes())}),
                ("train/dog/7.png", "not a readable image")),
    images_case("file-images-missing-test-split", tar_bytes(image_members(splits=("train",))),
                ("'test/<class>/'", "test_split")),
    images_case("file-images-unknown-test-class", tar_bytes({**IMAGES, "test/horse/0.png": png_bytes()}),
                ("horse", "lacks")),
    images_case("file-images-mixed-sizes", tar_bytes({**IMAGES, "train/cat/big.png": png_bytes(8, 8)}),
                ("image_size",)),
    Case("file-images-corrupt-file-in-folder", RUN, ("bad.jpg", "not a readable image"),
         env={"KDISTILL_CACHE": "{tmp}/cache"},
         files={"experiment.yaml": data_yaml("{name: image-folder, root: {tmp}/images}"),
                **{f"images/{name}": data for name, data in IMAGES.items()}, "images/test/dog/bad.jpg": b"\x00" * 64}),
    Case("file-images-folder-missing", RUN, ("data.root", "nowhere"),
         files={"experiment.yaml": data_yaml("{name: image-folder, root: {tmp}/nowhere}")}),
    Case("file-digits-test-fraction", RUN, ("test_fraction",),
         files={"experiment.yaml": data_yaml("{name: digits, options: {test_fraction: 1.5}}")}),
]
