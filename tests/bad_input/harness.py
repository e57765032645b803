"""Run one bad input through the real `kdistill` CLI in a subprocess and check what a user sees.

The bar (issue 9): a non-zero exit (2 for bad input), no Python traceback, a short message that
names the field or file at fault, and an output directory that does not block a rerun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_MESSAGE_LINES = 6  # the one line, plus a header or a hint, wrapped by the terminal width


# the corpus is about messages, not devices: on a GPU machine a forked child would initialise CUDA
# (slow, and impossible after the server did) and `--nproc 2` would meet the one-GPU refusal first;
# the GPU paths have their own tests (tests/test_cuda.py)
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}

@dataclass(frozen=True)
class Case:
    """One bad input. In `argv` and in file contents, `{tmp}` is the case's own empty directory and
    `{data}` the shared data folder; the run directory, where a case makes one, is `{tmp}/out`."""

    id: str
    argv: list[str]
    expect: tuple[str, ...]  # substrings (case-insensitive) of the message: the field, file or fix named
    files: dict[str, str | bytes] = field(default_factory=dict)  # relative path -> content, written first
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2
    out_dir: str = "absent"  # "absent": {tmp}/out must not exist afterwards; "any": not checked
    setup: Callable[[Path], None] | None = None  # anything files cannot express (a directory made read-only...)
    needs_shared: str | None = None  # a path under the shared data folder the case needs (skipped without)
    timeout: float = 180.0


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    tmp: Path


def substitute(text: str, tmp: Path, data: Path | None) -> str:
    text = text.replace("{tmp}", str(tmp))
    return text.replace("{data}", str(data)) if data is not None else text


class CliServer:
    """A long-lived `cli_server.py` process; `run` forks the real CLI in a child per case (one at a time)."""

    def __init__(self) -> None:
        server = Path(__file__).with_name("cli_server.py")
        env = {**os.environ, "OMP_NUM_THREADS": "1", **CPU_ONLY}
        self.process = subprocess.Popen([sys.executable, str(server)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env, cwd=REPO)
        self.lock = threading.Lock()

    def run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Outcome:
        stdout, stderr = cwd / ".stdout", cwd / ".stderr"
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(stdout), "stderr": str(stderr)}
        with self.lock:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the CLI server died; run the case with server=None to see why")
        code = json.loads(answer)["code"]
        outcome = Outcome(code, stdout.read_text(errors="replace"), stderr.read_text(errors="replace"), cwd)
        stdout.unlink()
        stderr.unlink()
        return outcome

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def run_case(case: Case, tmp: Path, data: Path | None, server: CliServer | None = None) -> Outcome:
    """Write the case's files, then run `kdistill ARGV` in `tmp`: forked from `server` when given, else
    as a fresh `python -m kdistill.cli` (the same entry point, paying the imports)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for relative, content in case.files.items():
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(substitute(content, tmp, data))
    if case.setup is not None:
        case.setup(tmp)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDISTILL_THREADS": "1", "COLUMNS": "200", **CPU_ONLY,
           **{k: substitute(v, tmp, data) for k, v in case.env.items()}}
    env.pop("KDISTILL_DEBUG", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    argv = [substitute(a, tmp, data) for a in case.argv]
    if server is not None:
        return server.run(argv, tmp, env)
    done = subprocess.run([sys.executable, "-m", "kdistill.cli", *argv], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=case.timeout)
    return Outcome(done.returncode, done.stdout, done.stderr, tmp)


def problems_with(case: Case, outcome: Outcome) -> list[str]:
    """What falls short of the bar; empty when the case is handled well."""
    found = []
    text = (outcome.stdout + outcome.stderr).lower()
    if outcome.code != case.code:
        found.append(f"exit code {outcome.code}, expected {case.code}")
    if "traceback" in outcome.stderr.lower() or "traceback" in outcome.stdout.lower():
        found.append("a Python traceback was printed")
    for needle in case.expect:
        if needle.lower() not in text:
            found.append(f"the message does not contain {needle!r}")
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if len(lines) > MAX_MESSAGE_LINES:
        found.append(f"{len(lines)} lines on stderr (at most {MAX_MESSAGE_LINES})")
    out = outcome.tmp / "out"
    if case.out_dir == "absent" and out.exists():
        found.append(f"the run directory {out} was left behind: {sorted(p.name for p in out.iterdir())}")
    return found
