"""`kdistill methods` and `kdistill layers`: what users read to pick methods and layer names."""

from __future__ import annotations

from kdistill.cli import main
from kdistill.methods import METHODS


def test_methods_lists_every_method_with_options_and_reference(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in METHODS.items():
        assert cls.name in out, name
    assert "temperature=4.0" in out and "arXiv:1503.02531" in out and "start_epoch" in out


def test_methods_name_prints_one_method_in_full(capsys):
    assert main(["methods", "kd"]) == 0  # an alias names its method
    out = capsys.readouterr().out
    assert out.startswith("soft_target (also:") and "temperature: 4.0" in out and "arXiv:1503.02531" in out
    assert "python -m pydoc kdistill.methods.logits" in out
    assert main(["methods", "crd"]) == 0
    assert "objective: info_nce" in capsys.readouterr().out  # nothing cut off, whatever the terminal width
    assert main(["methods", "crdd"]) == 2
    assert "did you mean 'crd'" in capsys.readouterr().err


def test_layers_prints_paths_and_shapes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["layers", "resnet20", "--input-shape", "3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "layer3.2.conv2" in out and "(2, 64, 8, 8)" in out and "(2, 16, 32, 32)" in out


def test_layers_unknown_model_is_a_clear_error(capsys):
    assert main(["layers", "resnet21"]) == 2
    assert "unknown model 'resnet21'" in capsys.readouterr().err


def test_layers_of_a_path_that_is_no_model_says_what_it_is(tmp_path, capsys):
    # both were "unknown model '...'; known: bilstm, cnn, ..." (with a did-you-mean for some)
    assert main(["layers", str(tmp_path)]) == 2
    assert "a folder without config.json, so not a Hugging Face model folder" in capsys.readouterr().err
    assert main(["layers", str(tmp_path / "no" / "model")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_layers_with_an_input_shape_the_model_cannot_take_names_the_option(capsys):
    assert main(["layers", "resnet20", "--input-shape", "3,32"]) == 2
    err = capsys.readouterr().err
    assert "--input-shape 3,32: resnet20 cannot run on one sample of shape (3, 32)" in err
    assert "e.g. 3,32,32" in err and "Traceback" not in err


def test_layers_of_a_checkpoint_file(tmp_path, capsys, monkeypatch):
    import torch

    from kdistill.models import build_model

    monkeypatch.setenv("COLUMNS", "250")
    path = tmp_path / "model.pt"
    state = build_model("resnet8", 10, (3, 32, 32)).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # as DataParallel saves
    assert main(["layers", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layer3.0.conv2" in out and "weight (64, 64, 3, 3)" in out and "module." not in out
