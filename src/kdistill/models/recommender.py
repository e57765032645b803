"""Neural collaborative filtering (He et al. 2017, NeuMF): a recommender's scoring model.

Input: a long tensor of (user, item) index pairs, shape (B, 2), as `kdistill.data.movielens` gives
them (row 0 of each table is the "unseen" user / item). Two paths share nothing but the input:
GMF, the element-wise product of a user and an item embedding (matrix factorisation, learned), and
an MLP over the concatenation of another user and item embedding; their outputs are concatenated
and a linear head gives the class logits. Embedding width `dim` sets almost all of the model's
size (users x dim + items x dim, twice), which is what distillation shrinks.

Submodules are named for taps: `gmf_user`, `gmf_item`, `mlp_user`, `mlp_item`, `mlp.0`, ...,
`head` (`head:input` is the joint representation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class NeuMF(nn.Module):
    def __init__(self, users: int, items: int, num_classes: int = 2, dim: int = 32,
                 hidden: Sequence[int] = (64, 32), dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("users", users), ("items", items), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1 (got {value!r})")
        self.users, self.items = users, items
        self.gmf_user, self.gmf_item = nn.Embedding(users, dim), nn.Embedding(items, dim)
        self.mlp_user, self.mlp_item = nn.Embedding(users, dim), nn.Embedding(items, dim)
        layers: list[nn.Module] = []
        width = 2 * dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(dim + width, num_classes)
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(table.weight, std=0.01)  # NeuMF's initialisation

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.is_floating_point():
            raise ValueError(f"NeuMF takes (batch, 2) integer (user, item) indices, got {tuple(pairs.shape)} "
                             f"{pairs.dtype}; use a data set of index pairs (e.g. data.name: movielens)")
        user, item = pairs[:, 0], pairs[:, 1]
        for what, ids, size in (("user", user, self.users), ("item", item, self.items)):
            if len(ids) and int(ids.max()) >= size:
                raise ValueError(f"{what} index {int(ids.max())} but the model has {size} {what} rows; set the "
                                 f"model's option {what}s to at least {int(ids.max()) + 1}")
        gmf = self.gmf_user(user) * self.gmf_item(item)
        mlp = self.mlp(torch.cat([self.mlp_user(user), self.mlp_item(item)], dim=1))
        return self.head(torch.cat([gmf, mlp], dim=1))


def neumf(num_classes: int, users: int, items: int, dim: int = 32, hidden: Sequence[int] = (64, 32),
          dropout: float = 0.0) -> NeuMF:
    return NeuMF(users, items, num_classes, dim, hidden, dropout)


__all__ = ["NeuMF", "neumf"]
