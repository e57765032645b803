"""A process that has imported the CLI once and forks one child per case.

Every case still runs the real entry point (`kdistill.cli.main`) in its own process, with its own
working directory, environment, stdout and stderr, exactly as `python -m kdistill.cli` would; only the
1-3 s of importing torch and kdistill is paid once per server instead of once per case, which keeps
a corpus of about a hundred cases inside the suite's time budget. The server itself never runs
torch code before forking (no thread pools exist yet), so forking is safe.

Protocol (one JSON object per line): request {"argv", "cwd", "env", "stdout", "stderr"}, answer {"code"}.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def run_child(request: dict) -> None:
    """In the forked child: become `kdistill ARGV` in the case's directory, then exit with its code."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115  (line-buffered: exits may skip flushing)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = ["kdistill", *request["argv"]]
    code = 1
    try:
        from kdistill.cli import main

        code = main(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def serve() -> None:
    import kdistill.cli  # noqa: F401  (the expensive imports, once)
    import kdistill.cli_run  # noqa: F401
    import kdistill.experiment  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        child = os.fork()
        if child == 0:
            run_child(request)
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        sys.stdout.write(json.dumps({"code": code}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
