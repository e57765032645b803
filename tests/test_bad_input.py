"""Issue 9: every bad input is one clear line through the real CLI, exit 2, no traceback, no debris.

The corpus lives in `tests/bad_input/` (one module per category); each case runs the real CLI entry
point in its own process, forked two at a time from servers that imported kdistill once
(`bad_input/cli_server.py`), then each is asserted on its own. `test_entry_point_in_a_fresh_process`
runs a few cases as a plain `python -m kdistill.cli` too, so the forking cannot hide a start-up problem.
"""

from __future__ import annotations

import importlib
import pkgutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from bad_input import __path__ as CORPUS_PATH
from bad_input.harness import Case, CliServer, Outcome, problems_with, run_case
from conftest import shared_data

MODULES = sorted(m.name for m in pkgutil.iter_modules(CORPUS_PATH) if m.name not in ("harness", "cli_server"))
CASES: list[Case] = [case for name in MODULES for case in importlib.import_module(f"bad_input.{name}").CASES]
MINIMUM_CORPUS = 60


def test_corpus_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(CASES) >= MINIMUM_CORPUS, f"{len(CASES)} cases"


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome | str]:
    data = shared_data()
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.originalname == "test_bad_input" and hasattr(item, "callspec")}  # -k runs only these
    runnable = [c for c in CASES if c.id in selected
                and (c.needs_shared is None or (data is not None and (data / c.needs_shared).exists()))]
    root = tmp_path_factory.mktemp("bad-input")
    servers = [CliServer() for _ in range(2)]
    try:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            futures = {c.id: pool.submit(run_case, c, root / c.id, data, servers[i % len(servers)])
                       for i, c in enumerate(runnable)}
        return {case_id: future.result() for case_id, future in futures.items()}
    finally:
        for server in servers:
            server.close()


def launches_workers(case: Case) -> bool:
    """A case that starts `--nproc 2` workers (half a minute): slow, run with the other multi-process tests."""
    return "--nproc" in case.argv and case.argv[case.argv.index("--nproc") + 1] not in ("0", "1")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if launches_workers(c) else [])
                                  for c in CASES])
def test_bad_input(case: Case, outcomes):
    if case.id not in outcomes:
        pytest.skip(f"needs {case.needs_shared} in the shared data folder")
    outcome = outcomes[case.id]
    assert not problems_with(case, outcome), (
        f"{problems_with(case, outcome)}\n--- stdout\n{outcome.stdout}\n--- stderr\n{outcome.stderr}")


FRESH_PROCESS_CASES = 3


@pytest.mark.slow
def test_entry_point_in_a_fresh_process(tmp_path):
    """A few cases as a user starts them, `python -m kdistill.cli ...`: the same outcome as forked."""
    for case in [c for c in CASES if c.needs_shared is None][:FRESH_PROCESS_CASES]:
        outcome = run_case(case, tmp_path / case.id, shared_data())
        assert not problems_with(case, outcome), (case.id, outcome.stdout, outcome.stderr)
