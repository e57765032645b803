"""An experiment file's `compress:` section: the distilled student is compressed after the strategy,
each stage a row of the run's table; bad values are `field: fix` lines like the rest."""

from __future__ import annotations

import pytest

from kdistill.config import ConfigError, load_config, validate
from kdistill.experiment import run_experiment

COMPRESS = {"stages": ["prune", "recover"], "prune": {"ratios": [0.5]}, "recover": {"epochs": 1},
            "profile": {"repeats": 2, "warmup": 0}}


def config_with(compress: dict):
    raw = load_config(None, ["training.epochs=2", "data.batch_size=128", "baseline=false",
                             "teacher.options.channels=[8,16]", "teacher.training.epochs=2"]).model_dump(mode="json")
    raw["compress"] = compress
    return validate(raw)


def test_the_distilled_student_is_compressed_after_the_strategy(tmp_path):
    result = run_experiment(config_with(COMPRESS), tmp_path / "run", progress=False)
    roles = [row.role for row in result.rows]
    assert roles[-2:] == ["compressed: prune 50% (pytorch)", "compressed: recover 50% (pytorch)"]
    distilled = result.by_role("student (distilled)")
    recovered = result.by_role("compressed: recover 50% (pytorch)")
    assert recovered.parameters < distilled.parameters
    assert "flops_per_sample" in recovered.extra["profile"]
    assert (tmp_path / "run" / "compress" / "compress.md").read_text().startswith("| stage |")
    resumed = run_experiment(config_with(COMPRESS), tmp_path / "run", resume=True, progress=False)
    assert resumed.by_role("compressed: recover 50% (pytorch)").accuracy == recovered.accuracy  # read, not redone
    # stopped before the compression finished (its table is the last thing written, after quantize / export
    # files): a resume compresses again, and gets the same rows
    (tmp_path / "run" / "compress" / "compress.md").unlink()
    (tmp_path / "run" / "compress" / "model.onnx").write_bytes(b"half an export")
    again = run_experiment(config_with(COMPRESS), tmp_path / "run", resume=True, progress=False)
    assert again.by_role("compressed: recover 50% (pytorch)").accuracy == recovered.accuracy
    assert (tmp_path / "run" / "compress" / "compress.md").is_file()
    assert not (tmp_path / "run" / "compress" / "model.onnx").exists()


@pytest.mark.parametrize(("compress", "expected"), [
    ({"stages": ["prune", "squash"]}, "compress.stages: unknown stage 'squash'"),
    ({"prune": {"ratios": [2]}}, "compress.prune.ratios[0]: Input should be less than 1"),
    ({"prune": {"ratios": [0.5, 0.5]}}, "ratios: must be strictly ascending"),
    ({"accuracy_budget": -1}, "compress.accuracy_budget: Input should be greater than or equal to 0"),
])
def test_bad_compress_values_are_field_lines(compress, expected):
    with pytest.raises(ConfigError) as error:
        config_with(compress)
    assert any(expected in problem for problem in error.value.problems), error.value.problems
