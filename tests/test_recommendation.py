"""Recommendation: MovieLens ratings as (user, movie) -> liked, split by time per user, and the NeuMF
scoring model; a hand-made ratings file checks the split and the indices, the real file its counts."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import require_shared

from kdistill.config import load_config
from kdistill.data import DATASETS
from kdistill.data.movielens import MOVIES, USERS, load_movielens_bundle, movielens_sizes
from kdistill.errors import BadInput
from kdistill.experiment import run_experiment
from kdistill.models import build_model

# user 7: five ratings, user 3: two; timestamps out of file order on purpose
RATINGS = """userId,movieId,rating,timestamp
7,50,5.0,500
7,10,3.5,100
3,10,4.0,50
7,20,4.0,300
7,30,1.0,200
3,99,2.0,60
7,40,4.5,400
"""


def test_each_users_latest_ratings_are_the_test_set(tmp_path):
    (tmp_path / "ratings.csv").write_text(RATINGS)
    bundle = load_movielens_bundle(tmp_path, threshold=4.0, test_fraction=0.4)
    # user 7 (index 2): 5 ratings by time 10, 30, 20 | 40, 50 (the last floor(0.4 * 5) = 2 held out);
    # user 3 (index 1): 10 | 99 (at least one held out). Movies numbered from the training split only:
    # 10 -> 1, 20 -> 2, 30 -> 3; 40, 50 and 99 are first rated in a test period: index 0, "unseen"
    assert bundle.train.inputs.tolist() == [[1, 1], [2, 1], [2, 3], [2, 2]]
    assert bundle.train.labels.tolist() == [1, 0, 0, 1]  # 4.0, 3.5, 1.0, 4.0 against 4 stars
    assert bundle.test.inputs.tolist() == [[1, 0], [2, 0], [2, 0]]
    assert bundle.test.labels.tolist() == [0, 1, 1]
    assert bundle.classes == ["not liked", "liked"] and movielens_sizes(bundle) == (3, 4)


@pytest.mark.parametrize("text, options, expected", [
    (RATINGS.replace("7,20,4.0,300", "7,twenty,4.0,300"), {}, "ratings.csv: line 5: '7,twenty,4.0,300' is not"),
    (RATINGS.replace("3,99,2.0,60", "3,99,7.0,60"), {}, "line 7: rating 7.0 outside MovieLens's 0.5-5 stars"),
    (RATINGS.replace("timestamp", "time"), {}, "no column timestamp"),
    (RATINGS, {"test_fraction": 1.0}, "test_fraction: must be between 0 and 1"),
])
def test_bad_ratings_are_named(tmp_path, text, options, expected):
    (tmp_path / "ratings.csv").write_text(text)
    with pytest.raises(BadInput) as caught:
        load_movielens_bundle(tmp_path, **options)
    assert expected in str(caught.value)


def test_neumf_is_gmf_and_mlp_joined_by_a_linear_head():
    torch.manual_seed(0)
    model = build_model("neumf", 2, (2,), {"users": 4, "items": 5, "dim": 3, "hidden": [6]})
    pairs = torch.tensor([[1, 4], [3, 0]])
    by_hand = []
    for user, item in pairs.tolist():
        gmf = model.gmf_user.weight[user] * model.gmf_item.weight[item]
        joint = torch.cat([model.mlp_user.weight[user], model.mlp_item.weight[item]])
        mlp = torch.relu(model.mlp[0].weight @ joint + model.mlp[0].bias)
        by_hand.append(model.head.weight @ torch.cat([gmf, mlp]) + model.head.bias)
    assert torch.allclose(model(pairs), torch.stack(by_hand), atol=1e-6)
    with pytest.raises(ValueError, match="item index 5 but the model has 5 item rows; set the model's option items "
                                         "to at least 6"):
        model(torch.tensor([[1, 5]]))
    with pytest.raises(ValueError, match=r"takes \(batch, 2\) integer"):
        model(torch.zeros(2, 2))


def test_data_decided_sizes_fill_only_what_the_options_leave_out():
    defaults = {"users": 7, "items": 9, "not_a_parameter": 1}
    model = build_model("neumf", 2, (2,), {"dim": 3, "items": 5}, defaults)
    assert (model.users, model.items) == (7, 5)
    assert model.gmf_user.num_embeddings == 7 and model.mlp_item.num_embeddings == 5
    with pytest.raises(TypeError, match="users"):
        build_model("neumf", 2, (2,), {"dim": 3})  # no data, no sizes: the factory's own message


def test_movielens_file_and_a_run_that_learns_preferences(tmp_path):
    root = require_shared("movielens-small")
    bundle = load_movielens_bundle(root)
    assert len(bundle.train) + len(bundle.test) == 100836  # every rating, once
    assert movielens_sizes(bundle) == (USERS, MOVIES)  # the sizes the module documents
    assert bundle.model_defaults == {"users": USERS, "items": MOVIES}
    assert DATASETS.get("movielens") is load_movielens_bundle
    majority = max(bundle.test.labels.float().mean().item(), 1 - bundle.test.labels.float().mean().item())
    sizes = {"users": USERS, "items": MOVIES}
    adamw = {"name": "adamw", "lr": 0.003}
    raw = {"name": "ml", "seed": 0, "data": {"name": "movielens", "root": str(root), "val_fraction": 0.1,
                                             "batch_size": 512},
           "teacher": {"name": "neumf", "options": {**sizes, "dim": 16}, "training": {"epochs": 2, "optimizer": adamw}},
           # the student's table sizes come from the data (bundle.model_defaults), the teacher's are given
           "student": {"name": "neumf", "options": {"dim": 4, "hidden": [8]}},
           "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 2}, {"name": "hard_label", "weight": 0.1}],
           "training": {"epochs": 2, "optimizer": adamw}}
    (tmp_path / "ml.yaml").write_text(yaml.safe_dump(raw))
    result = run_experiment(load_config(tmp_path / "ml.yaml"), tmp_path / "run", progress=False)
    # later tastes from earlier ones: both models beat always answering the majority class
    for role in ("teacher", "student (distilled)"):
        assert result.by_role(role).accuracy > majority + 0.05, role
