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


def test_layers_prints_paths_and_shapes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["layers", "resnet20", "--input-shape", "3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "layer3.2.conv2" in out and "(2, 64, 8, 8)" in out and "(2, 16, 32, 32)" in out


def test_layers_unknown_model_is_a_clear_error(capsys):
    assert main(["layers", "resnet21"]) == 2
    assert "unknown model 'resnet21'" in capsys.readouterr().out
