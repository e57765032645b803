"""The bad-input corpus: malformed configs, files and command lines, one module per category.

Each module defines `CASES: list[Case]`; `tests/test_bad_input.py` runs every case through the real
CLI in a subprocess (see `harness.py`).
"""
