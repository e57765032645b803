"""Issue 9: every bad input is one clear line through the real CLI, exit 2, no traceback, no debris.

The corpus lives in `tests/bad_input/` (one module per category); the cases run two at a time in
subprocesses (each pays the CLI's start-up), then each is asserted on its own.
"""

from __future__ import annotations

import importlib
import pkgutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from bad_input import __path__ as CORPUS_PATH
from bad_input.harness import Case, Outcome, problems_with, run_case
from conftest import shared_data

MODULES = sorted(m.name for m in pkgutil.iter_modules(CORPUS_PATH) if m.name != "harness")
CASES: list[Case] = [case for name in MODULES for case in importlib.import_module(f"bad_input.{name}").CASES]
MINIMUM_CORPUS = 60


def test_corpus_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(CASES) >= MINIMUM_CORPUS, f"{len(CASES)} cases"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome | str]:
    data = shared_data()
    runnable = [c for c in CASES if c.needs_shared is None or (data is not None and (data / c.needs_shared).exists())]
    root = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {c.id: pool.submit(run_case, c, root / c.id, data) for c in runnable}
    return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, outcomes):
    if case.id not in outcomes:
        pytest.skip(f"needs {case.needs_shared} in the shared data folder")
    outcome = outcomes[case.id]
    assert not problems_with(case, outcome), (
        f"{problems_with(case, outcome)}\n--- stdout\n{outcome.stdout}\n--- stderr\n{outcome.stderr}")
