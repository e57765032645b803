"""Augmentation draws behave like independent random draws (issue 8, fix 3).

Each statistic is compared with its exact value under independent uniform draws; the bands are
several standard errors wide for the sample sizes used. The earlier affine hash failed all three, as
measured here: 9.99 of 25 offsets seen in 80 epochs (independent: 24.05), the row shift repeating
from one epoch to the next for 0.0 % of samples (independent: 11.1 %; the issue's own measure, over
epoch pairs, found 70 %), flips changing between epochs for 70.9 % (independent: 50 %).
"""

from __future__ import annotations

import torch

from kdistill.data.transforms import Augment, hash_uniform_ints, mix32

SAMPLES = 4000


def _parameters(augment: Augment, epochs: int) -> torch.Tensor:
    """(epochs, SAMPLES, 3) parameters for the first SAMPLES indices."""
    indices = torch.arange(SAMPLES)
    return torch.stack([augment.parameters(indices, epoch) for epoch in range(epochs)])


def test_jitter_visits_its_offsets_like_independent_draws():
    # Hinton's MNIST teacher: +-2 px, 25 offsets, 80 epochs
    params = _parameters(Augment(crop_padding=2, seed=1000), epochs=80)
    codes = params[..., 0] * 5 + params[..., 1]  # (epochs, samples)
    distinct = torch.tensor([len(torch.unique(codes[:, i])) for i in range(SAMPLES)], dtype=torch.float)
    expected = 25 * (1 - (24 / 25) ** 80)  # 24.05
    assert abs(distinct.mean().item() - expected) < 0.1, distinct.mean()


def test_crop_and_flip_change_between_epochs_like_independent_draws():
    params = _parameters(Augment(crop_padding=4, horizontal_flip=True, seed=0), epochs=8)
    same_row = (params[1:, :, 0] == params[:-1, :, 0]).float().mean().item()
    flip_changed = (params[1:, :, 2] != params[:-1, :, 2]).float().mean().item()
    assert abs(same_row - 1 / 9) < 0.015, same_row  # 28,000 pairs: standard error 0.002
    assert abs(flip_changed - 0.5) < 0.02, flip_changed


def test_draws_are_uniform_and_uncorrelated_across_indices_and_parameters():
    params = _parameters(Augment(crop_padding=4, horizontal_flip=True, seed=7), epochs=5).reshape(-1, 3)
    counts = torch.bincount(params[:, 0], minlength=9).float()
    expected = len(params) / 9
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 30, chi2  # 8 degrees of freedom: p < 0.001 above 26.1
    # row and column offsets of one sample, and a sample and its neighbour, are unrelated
    rows, cols = params[:, 0].float(), params[:, 1].float()
    assert abs(torch.corrcoef(torch.stack([rows, cols]))[0, 1].item()) < 0.03
    assert abs(torch.corrcoef(torch.stack([rows[:-1], rows[1:]]))[0, 1].item()) < 0.03


def test_every_key_part_changes_the_draws():
    indices = torch.arange(1000)
    base = hash_uniform_ints(3, 5, indices, 2)
    for other in (hash_uniform_ints(4, 5, indices, 2), hash_uniform_ints(3, 6, indices, 2),
                  hash_uniform_ints(3, 5, indices + 1, 2)):
        assert (other != base).float().mean() > 0.99
    assert (base[:, 0] != base[:, 1]).float().mean() > 0.99
    assert base.min() >= 0 and base.max() < 2**32


def test_mixer_is_a_bijection_on_a_block_of_inputs():
    values = mix32(torch.arange(1 << 16, dtype=torch.long) * 65_537)
    assert len(torch.unique(values)) == 1 << 16
