"""Seeding. Each epoch re-seeds from (seed, epoch), so a run resumed at an epoch boundary draws
exactly the random numbers (shuffles, dropout masks) an uninterrupted run would."""

from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(seed: int, *parts: int) -> int:
    value = seed & 0xFFFFFFFF
    for part in parts:
        value = (value * 1_000_003 + part * 7_919 + 0x9E3779B9) % (2**31 - 1)
    return value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
