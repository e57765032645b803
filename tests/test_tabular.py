"""Tables from CSV files (kdistill.data.tabular) and the NSL-KDD intrusion records: encodings against
hand-made files, every unreadable row named by its line, the real files' known counts, and a
kdistill run on them that learns."""

from __future__ import annotations

import gzip
import math

import pytest
import torch
import yaml
from conftest import require_shared

from kdistill.config import load_config
from kdistill.data import DATASETS
from kdistill.data.nsl_kdd import ATTACK_FAMILY, COLUMNS, load_nsl_kdd_bundle
from kdistill.data.tabular import feature_statistics, load_csv_table_bundle, read_table
from kdistill.errors import BadInput
from kdistill.experiment import run_experiment

TRAIN = """bytes,proto,rate,label
0,tcp,0.5,normal
9,udp,0.25,attack
99,tcp,1.0,normal
"""
TEST = """bytes,proto,rate,label
999,icmp,0.0,attack
0,udp,0.5,normal
"""


def write(folder, train=TRAIN, test=TEST):
    (folder / "train.csv").write_text(train)
    (folder / "test.csv").write_text(test)
    return folder


def test_features_are_numbers_then_training_categories_one_hot(tmp_path):
    bundle = load_csv_table_bundle(write(tmp_path), categorical=["proto"], log1p=["bytes"])
    # numeric columns first (bytes as log(1 + x), rate as is), then proto's training categories sorted
    expected_train = torch.tensor([[0.0, 0.5, 1, 0], [math.log(10), 0.25, 0, 1], [math.log(100), 1.0, 1, 0]])
    assert torch.allclose(bundle.train.inputs, expected_train)
    # icmp never appears in training: its one-hot slots are all zero, the others stay where they were
    expected_test = torch.tensor([[math.log(1000), 0.0, 0, 0], [0.0, 0.5, 0, 1]])
    assert torch.allclose(bundle.test.inputs, expected_test)
    assert bundle.classes == ["attack", "normal"]  # label names sorted
    assert bundle.train.labels.tolist() == [1, 0, 1] and bundle.test.labels.tolist() == [0, 1]
    assert bundle.input_shape == (4,) and bundle.num_classes == 2
    # the models' standardisation: the training split's per-feature statistics (population std)
    mean, std = bundle.mean, bundle.std
    assert mean[1] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert std[1] == pytest.approx(math.sqrt(((0.5 - 7 / 12) ** 2 + (0.25 - 7 / 12) ** 2 + (1 - 7 / 12) ** 2) / 3))


def test_constant_features_get_unit_std_and_gzip_files_read(tmp_path):
    assert feature_statistics(torch.tensor([[1.0, 2.0], [1.0, 4.0]]))[1] == (1.0, 1.0)
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress(TRAIN.encode()))
    (tmp_path / "test.csv").write_text(TEST)
    bundle = load_csv_table_bundle(tmp_path, train="train.csv.gz", categorical=["proto"],
                                   label_map={"normal": "normal", "attack": "attack"})
    assert len(bundle.train) == 3 and bundle.train.inputs[1, 0] == 9.0  # no log1p asked: raw counts


@pytest.mark.parametrize("train, test, options, expected", [
    (TRAIN + "5,tcp,0.1\n", TEST, {}, "train.csv: line 5: 3 values where the header has 4 columns"),
    (TRAIN.replace("0.25", "fast"), TEST, {}, "train.csv: line 3: column 'rate': 'fast' is not a number"),
    (TRAIN.replace("9,udp", "-9,udp"), TEST, {"log1p": ["bytes"]}, "line 3: column 'bytes': -9 is negative"),
    (TRAIN.replace("0.25", "nan"), TEST, {}, "line 3: column 'rate': nan is not a finite number"),
    (TRAIN, TEST.replace("0,udp,0.5,normal", "0,udp,0.5,benign"), {},
     "test.csv: line 3: label 'benign' is not one of the training labels (attack, normal)"),
    (TRAIN, TEST, {"categorical": ["protocol"]}, "data.options.categorical: no column 'protocol'"),
    (TRAIN, TEST, {"log1p": ["proto"]}, "data.options.log1p: proto also listed as categorical"),
    (TRAIN, TEST, {"label_map": {"normal": "normal"}}, "train.csv: line 3: label 'attack' is not one the data set"),
    ("a,a,label\n1,2,x\n", TEST, {"categorical": []}, "column names repeated (a)"),
])
def test_unreadable_rows_are_named_with_their_line(tmp_path, train, test, options, expected):
    options = {"categorical": ["proto"], **options}
    with pytest.raises(BadInput) as caught:
        load_csv_table_bundle(write(tmp_path, train, test), **options)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_empty_and_missing_files_are_refused(tmp_path):
    (tmp_path / "empty.csv").write_text("bytes,label\n\n")
    with pytest.raises(BadInput, match="no data rows"):
        read_table(tmp_path / "empty.csv")
    with pytest.raises(BadInput, match="file not found"):
        read_table(tmp_path / "absent.csv")
    assert DATASETS.get("csv-table") is load_csv_table_bundle


def test_nsl_kdd_files_have_their_published_counts():
    root = require_shared("nsl-kdd")
    binary = load_nsl_kdd_bundle(root)
    # KDDTrain+_20Percent: 25,192 connections, 13,449 normal; KDDTest+: 22,544, 9,711 normal (Tavallaee et al.)
    assert binary.classes == ["normal", "attack"]
    assert binary.train.labels.bincount().tolist() == [13449, 25192 - 13449]
    assert binary.test.labels.bincount().tolist() == [9711, 22544 - 9711]
    # 38 numeric features + one-hot protocol (3), service (66 in the 20 % file) and flag (11)
    assert binary.input_shape == (38 + 3 + 66 + 11,)
    families = load_nsl_kdd_bundle(root, task="category")
    assert families.classes == ["normal", "dos", "probe", "r2l", "u2r"]
    assert families.train.labels.bincount().tolist()[0] == 13449
    # every attack of either file has a family (the test file's 17 new attacks included)
    for name in ("KDDTrain+_20Percent.txt.gz", "KDDTest+.txt.gz"):
        labels = set(read_table(root / name, COLUMNS).column("label")) - {"normal"}
        assert labels <= set(ATTACK_FAMILY), labels - set(ATTACK_FAMILY)
    with pytest.raises(BadInput, match="task: 'multi' is not one of binary, category"):
        load_nsl_kdd_bundle(root, task="multi")


def test_a_run_on_nsl_kdd_learns_to_detect_intrusions(tmp_path):
    root = require_shared("nsl-kdd")
    raw = {"name": "nsl", "seed": 0,
           "data": {"name": "nsl-kdd", "root": str(root), "val_fraction": 0.1, "batch_size": 256},
           "teacher": {"name": "mlp", "options": {"hidden": [64]}, "training": {"epochs": 2}},
           "student": {"name": "mlp", "options": {"hidden": [8]}},
           "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 4}, {"name": "hard_label", "weight": 0.1}],
           "training": {"epochs": 2, "optimizer": {"name": "adamw", "lr": 0.003}}}
    (tmp_path / "nsl.yaml").write_text(yaml.safe_dump(raw))
    result = run_experiment(load_config(tmp_path / "nsl.yaml"), tmp_path / "run", progress=False)
    # held-out records from the training distribution: far above the majority class (53 % normal)
    for stage in ("teacher", "student-distilled"):
        last = (tmp_path / "run" / stage / "metrics.jsonl").read_text().splitlines()[-1]
        assert yaml.safe_load(last)["val/acc"] > 0.93, stage
    # the test file's unseen attacks are harder, but both models still detect most connections right
    assert result.by_role("teacher").accuracy > 0.7 and result.by_role("student (distilled)").accuracy > 0.7


def test_munge_rows_lie_between_each_row_and_its_nearest_neighbour():
    from kdistill.data.munge import munge, nearest_neighbours, nominal_groups

    # two far clusters of two rows; within a cluster the rows differ in the nominal attribute (the
    # last two columns, one one-hot block), so on standardised features each row's nearest
    # neighbour is its cluster mate (distance 2 sqrt 2 against 2 sqrt 3 across)
    rows = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0], [0.1, 1.0, 0.0, 0.0, 1.0],
                         [100.0, 100.0, 100.0, 1.0, 0.0], [100.0, 101.0, 100.0, 0.0, 1.0]])
    features = ["a", "b", "c", "proto=tcp", "proto=udp"]
    groups = nominal_groups(features)
    assert groups == [[3, 4]]
    standardised = (rows - rows.mean(0)) / rows.std(0, unbiased=False)
    assert nearest_neighbours(standardised).tolist() == [1, 0, 3, 2]
    # swap_prob 0: the rows themselves; 1: every attribute drawn at the neighbour (spread -> tiny noise)
    assert torch.equal(munge(rows, copies=2, swap_prob=0.0, nominal=groups), torch.cat([rows, rows]))
    swapped = munge(rows, copies=1, swap_prob=1.0, spread=1e6, nominal=groups)
    assert torch.allclose(swapped, rows[[1, 0, 3, 2]], atol=1e-4)
    # p = 0.5 over many copies: about half of the attributes come from the neighbour, each one-hot
    # block stays one-hot, and continuous draws centre on the neighbour with sd |e - e'| / spread
    drawn = munge(rows, copies=4000, swap_prob=0.5, spread=2.0, nominal=groups, seed=3).reshape(4000, 4, 5)
    assert torch.equal(drawn[..., 3:].sum(-1), torch.ones(4000, 4))
    assert abs((drawn[:, 0, 4] == 1.0).float().mean().item() - 0.5) < 0.03  # row 0 took udp from row 1
    kept = (drawn[:, 0, 1] == 0.0).float().mean()  # row 0, column b kept (the neighbour's value is 1.0)
    assert abs(kept.item() - 0.5) < 0.03
    moved = drawn[:, 0, 1][drawn[:, 0, 1] != 0.0]
    assert abs(moved.mean().item() - 1.0) < 0.03 and abs(moved.std().item() - 0.5) < 0.03
    assert torch.equal(munge(rows, copies=3, seed=7, nominal=groups), munge(rows, copies=3, seed=7, nominal=groups))
    with pytest.raises(BadInput, match="at least two rows"):
        munge(rows[:1])
