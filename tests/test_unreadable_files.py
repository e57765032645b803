"""Issue 9: checkpoints and data files that cannot be read are named as such, one line each."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
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

from kdistill.data import load_image_folder_bundle, load_mnist_bundle
from kdistill.data.mnist import read_idx
from kdistill.errors import BadInput, UnreadableFile
from kdistill.file_checks import MissingFile
from kdistill.models import build_model, load_weights, read_weights
from kdistill.models.loading import recorded_accuracy


def case_id(value) -> str:
    """Readable, stable test ids (bytes values hold gzip timestamps: pytest-xdist needs equal ids)."""
    return value if isinstance(value, str) else type(value).__name__

def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def unreadable(call, *args) -> str:
    """The one-line message of the UnreadableFile that `call(*args)` raises."""
    with pytest.raises(UnreadableFile) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message and len(caught.value.problems) == 1
    return message


# --- checkpoints

def test_missing_checkpoint_is_bad_input_and_still_file_not_found(tmp_path):
    with pytest.raises(MissingFile) as caught:
        read_weights(tmp_path / "teacher.pt")
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, BadInput)
    assert "teacher.pt: file not found" in str(caught.value)


@pytest.mark.parametrize("data, expected", [
    (b"", "empty file (0 bytes)"),
    (truncated(torch_bytes(mlp_state())), "truncated or not a PyTorch checkpoint (an incomplete zip archive"),
    (truncated(torch_bytes(mlp_state(), _use_new_zipfile_serialization=False)), "truncated or damaged"),
    (b"epoch 3, accuracy 0.91\n", "not a PyTorch checkpoint (it looks like a text file)"),
    (png_bytes(), "not a PyTorch checkpoint (it looks like a PNG image)"),
    (np.random.default_rng(0).integers(128, 256, 300, dtype=np.uint8).tobytes(), "truncated or not a PyTorch"),
    (zip_bytes({"notes.txt": b"x"}), "zip archive but not a PyTorch checkpoint (no data.pkl inside)"),
    (safetensors_bytes(), "a safetensors file"),
    (torch_bytes({"epoch": 3, "optimizer": {}}), "holds no state dict (keys: epoch, optimizer)"),
    (torch_bytes(torch.zeros(3)), "holds no state dict (a Tensor)"),
], ids=case_id)
def test_unreadable_checkpoint_says_what_it_is(tmp_path, data, expected):
    path = write(tmp_path, "teacher.pt", data)
    message = unreadable(read_weights, path)
    assert message.startswith(f"{path}: ") and expected in message


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = write(tmp_path, "evil.pt", torch_bytes({"weights": mlp_state(), "hook": RunsCode(str(marker))}))
    message = unreadable(read_weights, path)
    assert "holds Python objects beyond tensors (posix.system)" in message
    assert "torch.save(model.state_dict(), path)" in message
    assert not marker.exists()


def test_a_whole_pickled_model_names_its_class(tmp_path):
    path = write(tmp_path, "model.pt", torch_bytes(torch.nn.Linear(3, 2)))
    assert "torch.nn.modules.linear.Linear" in unreadable(read_weights, path)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    assert "is a directory" in unreadable(read_weights, tmp_path)


def test_legacy_format_and_nested_data_parallel_checkpoints_still_load(tmp_path):
    state = mlp_state()
    legacy = write(tmp_path, "legacy.pt", torch_bytes(state, _use_new_zipfile_serialization=False))
    wrapped = write(tmp_path, "wrapped.th", torch_bytes({"state_dict": {f"module.{k}": v for k, v in state.items()},
                                                         "best_prec1": 91.8}))
    for path in (legacy, wrapped):
        model = load_weights(build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), path)
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key])


def test_mismatch_names_missing_unexpected_keys_and_both_shapes(tmp_path):
    path = write(tmp_path, "teacher.pt", torch_bytes(mlp_state(num_classes=7)))
    with pytest.raises(BadInput) as caught:
        load_weights(build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), path)
    assert "checkpoint (7, 16) vs model (10, 16)" in str(caught.value)
    other = write(tmp_path, "cnn.pt", torch_bytes(build_model("cnn", 10, (1, 8, 8), {}).state_dict()))
    with pytest.raises(BadInput) as caught:
        load_weights(build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), other)
    message = str(caught.value)
    assert "does not fit the model (MLP)" in message and "missing (" in message and "unexpected (" in message


def test_an_extra_key_prefix_is_pointed_out(tmp_path):
    inner = {f"model.{k}": v for k, v in mlp_state().items()}  # a LightningModule's `self.model`
    path = write(tmp_path, "lightning.ckpt", torch_bytes({"state_dict": inner}))
    with pytest.raises(BadInput, match="extra 'model.' prefix"):
        load_weights(build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), path)


@pytest.mark.parametrize("extra, expected", [
    ({"best_prec1": 91.8}, 0.918),
    ({"best_acc1": torch.tensor(93.6)}, 0.936),
    ({"acc": 0.75}, 0.75),
    ({"best_acc1": 80.0, "acc": 0.5}, 0.80),  # the best accuracy is what a checkpoint is kept for
    ({"accuracy": "high"}, None),
    ({"acc": True}, None),
    ({"acc": 250.0}, None),
    ({"epoch": 30}, None),
], ids=case_id)
def test_recorded_accuracy_is_a_fraction(tmp_path, extra, expected):
    path = write(tmp_path, "teacher.pt", torch_bytes({"state_dict": mlp_state(), **extra}))
    found = recorded_accuracy(path)
    assert found is None if expected is None else found == pytest.approx(expected)


def test_a_bare_state_dict_records_no_accuracy(tmp_path):
    assert recorded_accuracy(write(tmp_path, "teacher.pt", torch_bytes(mlp_state()))) is None


# --- MNIST

def test_small_mnist_folder_loads_gzipped_or_unpacked(tmp_path):
    for name, data in mnist_files(count=6).items():
        write(tmp_path / "gz", name, data)
        write(tmp_path / "raw", name.removesuffix(".gz"), gzip.decompress(data))
    for folder in ("gz", "raw"):
        bundle = load_mnist_bundle(tmp_path / folder)
        assert bundle.train.inputs.shape == (6, 1, 28, 28) and bundle.test.labels.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("data, expected", [
    (b"<html>404 Not Found</html>", "not a gzip file (it looks like an HTML or XML page"),
    (truncated(idx_bytes(np.zeros((60, 28, 28)))), "truncated gzip file"),
    (idx_bytes(np.zeros(1000), shape=(60000, 28, 28)),
     "truncated: expected 47040000 bytes of images (60000, 28, 28), found 1000"),
    (idx_bytes(np.zeros((2, 28, 28)), magic=b"\x00\x00\x0d\x03"),  # 0x0d: float32 pixels
     "not an unsigned-byte IDX file (magic number 0x00000d03"),
    (idx_bytes(np.zeros(5)), "are the image and label files swapped?"),
    (idx_bytes(np.zeros((2, 28, 28)), compress=False)[:10], "truncated: the IDX header needs 16 bytes, found 10"),
], ids=case_id)
def test_broken_idx_file_says_what_is_wrong(tmp_path, data, expected):
    path = write(tmp_path, "train-images-idx3-ubyte.gz", data)
    message = unreadable(read_idx, path, 3)
    assert message.startswith(str(path)) and expected in message


def test_image_and_label_counts_must_agree(tmp_path):
    for name, data in mnist_files(count=6, label_count=5).items():
        write(tmp_path, name, data)
    message = unreadable(load_mnist_bundle, tmp_path)
    assert "train-labels-idx1-ubyte.gz: 5 labels for the 6 images in train-images-idx3-ubyte.gz" in message


def test_a_missing_mnist_file_is_still_file_not_found(tmp_path):
    files = mnist_files()
    files.pop("t10k-labels-idx1-ubyte.gz")
    for name, data in files.items():
        write(tmp_path, name, data)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz: MNIST file missing"):
        load_mnist_bundle(tmp_path)


# --- image folders

def test_tiny_image_archive_loads(tmp_path):
    bundle = load_image_folder_bundle(write(tmp_path, "tiny.tar.gz", tar_bytes(image_members())))
    assert bundle.classes == ["cat", "dog"] and bundle.train.inputs.shape == (4, 3, 4, 4)


@pytest.mark.parametrize("data, expected", [
    (b"just some text\n", "not a tar archive (it looks like a text file)"),
    (zip_bytes(image_members()), "not a tar archive (it looks like a zip archive); unpack it"),
    (b"", "empty file (0 bytes), not a tar archive"),
    (truncated(tar_bytes({f"train/cat/{i}.png": png_bytes(32, 32, noise_seed=i) for i in range(8)})),
     "truncated or damaged archive"),
    (tar_bytes({"README.txt": b"hello"}), "holds no images in class folders"),
    (tar_bytes({"train/0.png": png_bytes(), "test/0.png": png_bytes()}), "train/0.png is outside a class folder"),
    (tar_bytes({**image_members(), "train/cat/broken.png": truncated(png_bytes())}),
     "member train/cat/broken.png: not a readable image: truncated or damaged (PNG image)"),
    (tar_bytes(image_members(splits=("train",))), "has no 'test/<class>/' images (found splits: train)"),
    (tar_bytes({**image_members(), "test/horse/0.png": png_bytes()}),
     "'test/' has classes that 'train/' lacks (horse)"),
    (tar_bytes({**image_members(), "train/cat/big.png": png_bytes(8, 8)}), "set data.options.image_size"),
], ids=case_id)
def test_broken_image_archive_says_what_is_wrong(tmp_path, data, expected):
    path = write(tmp_path, "images.tar.gz", data)
    message = unreadable(load_image_folder_bundle, path)
    assert message.startswith(str(path)) and expected in message


def test_corrupt_image_in_a_folder_is_named(tmp_path):
    for name, data in {**image_members(), "train/dog/bad.jpg": b"not a jpeg"}.items():
        write(tmp_path / "images", name, data)
    message = unreadable(load_image_folder_bundle, tmp_path / "images")
    assert message.startswith(str(tmp_path / "images" / "train" / "dog" / "bad.jpg"))
    assert "not a readable image: an unknown image format (it looks like a text file)" in message


def test_missing_image_folder(tmp_path):
    with pytest.raises(MissingFile, match="image folder not found"):
        load_image_folder_bundle(tmp_path / "nowhere")
