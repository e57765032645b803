"""train/acc's count: per sample for classifiers, per right position (padding ignored) for LMs."""

import torch

from kdistill.engine.batch import correct_count


def test_classifier_counts_right_samples():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert correct_count(logits, torch.tensor([0, 1, 1])).item() == 2


def test_per_position_scores_count_each_sample_by_its_share_of_right_positions():
    # (B=2, V=3, T=4): argmax per position is token 0 everywhere except where set below
    logits = torch.zeros(2, 3, 4)
    logits[:, 0] = 1.0
    logits[0, 2, 1] = 5.0  # sample 0, position 1 predicts 2
    labels = torch.tensor([[0, 2, 1, -100],  # 2 right of 3 valid
                           [0, -100, -100, -100]])  # 1 right of 1 valid
    assert torch.isclose(correct_count(logits, labels), torch.tensor(2 / 3 + 1.0))


def test_no_labels_counts_nothing():
    assert correct_count(torch.zeros(3, 2), None).item() == 0
