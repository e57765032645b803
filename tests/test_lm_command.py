"""`kdistill lm`: a config runs teacher, scratch student and distilled student, saves them with
`save_pretrained`, and reports held-out perplexity; sequence-level KD through the data option."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from lm_fixtures import (
    BLOCK,
    VOCAB,
    one_thread,  # noqa: F401  (autouse: one thread)
)

from kdistill.cli import main
from kdistill.config import load_config
from kdistill.errors import BadInput
from kdistill.lm import load_tokenizer, perplexity
from kdistill.lm.experiment import LMExperiment

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def write_config(tmp_path, **changes) -> str:
    from pydoc_data.topics import topics

    text = [line.strip() for name in sorted(topics)[:6] for line in topics[name].splitlines() if line.strip()]
    (tmp_path / "train.txt").write_text("\n".join(text[:120]))  # about 100 blocks: a few steps a stage
    (tmp_path / "held.txt").write_text("\n".join(text[-30:]))
    training = {"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.003}}
    config = {"name": "lm-test", "seed": 0,
              "data": {"name": "kdistill.lm:text_corpus", "root": str(tmp_path), "batch_size": 16,
                       "options": {"train": "train.txt", "held_out": "held.txt", "vocab_size": VOCAB,
                                   "block_size": BLOCK}},
              "teacher": {"name": "kdistill.lm:causal_lm", "options": {**TINY, "n_layer": 2}, "training": training,
                          "cache": {"top_k": 16, "dtype": "float32"}},
              "student": {"name": "kdistill.lm:causal_lm", "options": TINY},
              "methods": [{"name": "forward_kl"}], "training": training, "baseline": True, **changes}
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_lm_command_runs_every_stage_and_saves_loadable_models(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    assert main(["lm", write_config(tmp_path), "--output-dir", str(out), "--no-progress"]) == 0
    rows = {row["model"]: row for row in json.loads((out / "results.json").read_text())}
    assert list(rows) == ["teacher", "student-scratch", "student"]
    assert rows["teacher"]["parameters"] > rows["student"]["parameters"] == rows["student-scratch"]["parameters"]
    assert all(1 < row["perplexity"] < 2 * VOCAB for row in rows.values())
    assert "held-out perplexity" in capsys.readouterr().out
    assert len(list((out / "teacher-cache").iterdir())) == 1  # the top-k cache, built once
    # the student loads back with transformers alone and scores what the run recorded
    loaded = AutoModelForCausalLM.from_pretrained(out / "student")
    config = load_config(str(tmp_path / "lm.yaml"))
    from kdistill.lm.experiment import load_corpus

    corpus, _ = load_corpus(config)
    assert load_tokenizer(out / "student" / "tokenizer.json").get_vocab() == corpus.tokenizer.get_vocab()
    assert perplexity(loaded, corpus.held_out)["perplexity"] == pytest.approx(rows["student"]["perplexity"], rel=1e-5)
    # `kdistill layers` reads the saved student: its blocks and attention maps for 8 tokens
    capsys.readouterr()
    assert main(["layers", str(out / "student"), "--input-shape", "8"]) == 0
    listed = capsys.readouterr().out
    assert "GPT2LMHeadModel" in listed and "(2, 2, 8, 8)" in listed and f"(2, 8, {corpus.vocab_size})" in listed


def test_sequence_level_kd_trains_on_teacher_text(tmp_path, monkeypatch):
    import kdistill.lm.experiment as experiment

    seen = []
    original = experiment.generate_blocks

    def spy(*args, **kwargs):
        blocks = original(*args, **kwargs)
        seen.append(blocks)
        return blocks

    monkeypatch.setattr(experiment, "generate_blocks", spy)
    config = load_config(write_config(tmp_path, baseline=False, methods=[{"name": "hard_label"}]),
                         ["data.options.student_text=teacher"])
    rows = LMExperiment(config, tmp_path / "run").run()
    assert [row["model"] for row in rows] == ["teacher", "student"]
    assert len(seen) == 1 and torch.all(seen[0].attention_mask == 1)  # generated blocks: full, unpadded
    assert seen[0].input_ids.ne(1).all()  # the padding token (id 1) is never sampled
    assert not (tmp_path / "run" / "teacher-cache").exists()  # hard_label alone never needs the teacher's logits
    with pytest.raises(BadInput, match="student_text"):
        LMExperiment(load_config(str(tmp_path / "lm.yaml"), ["data.options.student_text=mixed"]),
                     tmp_path / "other").run()


def test_methods_of_two_temperatures_sharing_a_top_k_cache_are_refused(tmp_path, capsys):
    methods = [{"name": "forward_kl", "temperature": 1.0}, {"name": "reverse_kl", "temperature": 2.0}]
    config = write_config(tmp_path, baseline=False, methods=methods)
    assert main(["lm", config, "--output-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "temperatures [1.0, 2.0] share one top-k cache" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing to resume: removed, so the same command can run again
