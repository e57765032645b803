"""Shared fixtures: small real data, tiny models, and the shared data folder when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kdistill.data import load_digits_bundle, split_validation

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """`$KDISTILL_DATA`, else ../shared/data beside the checkout; None where absent."""
    candidates = [os.environ.get("KDISTILL_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def require_shared(*parts: str) -> Path:
    root = shared_data()
    if root is None or not root.joinpath(*parts).exists():
        pytest.skip(f"shared data {'/'.join(parts)} not found: set KDISTILL_DATA to the shared data folder")
    return root.joinpath(*parts)


@pytest.fixture(scope="session")
def digits():
    bundle = load_digits_bundle()
    train, val = split_validation(bundle.train, 0.1, seed=0)
    return bundle, train, val


@pytest.fixture(autouse=True)
def _single_thread_and_cache(tmp_path_factory, monkeypatch):
    # one thread: on 2 shared cores a second OpenMP thread makes every small op wait for a
    # descheduled thread (measured: the LM tests 6.7 s at 1 thread, 196 s at 2 under load)
    torch.set_num_threads(1)
    monkeypatch.setenv("KDISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "kdistill-cache"))
