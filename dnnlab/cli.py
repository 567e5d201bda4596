"""The `dnnlab` command line: the app (its commands in dnnlab/commands/), the entry point and
its exit: parse, validate, call one function, map the outcome to an exit code.

JAX is imported only inside the commands that train, so `--help`, `validate`, `schema` and
`data list` start fast.

Exit codes: 0 completed or stopped early; 1 diverged or failed; 2 bad input; 3 the verdict is
in --fail-on; 130 interrupted (143 by SIGTERM).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dnnlab.commands import app
from dnnlab.commands.common import err_console
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
)


def _teardown_needed() -> bool:
    """Whether anything still running needs the interpreter's orderly shutdown: a thread that is
    not a daemon, a child process, a Ray or MLflow client, the processes of a distributed run."""
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return True
    if "ray" in sys.modules or "mlflow" in sys.modules or os.environ.get("DNNLAB_DEBUG"):
        return True
    if "multiprocessing" in sys.modules and sys.modules["multiprocessing"].active_children():
        return True
    distributed = sys.modules.get("dnnlab.train.distributed")
    return distributed is not None and distributed._PROCESSES.count > 1


def _exit(code: Any) -> None:
    """End the process with `code`. By now every file the command wrote is closed and synced,
    so the interpreter's teardown (freeing JAX, matplotlib and tensorboardX: about half a second
    of a quickstart run, bench/latency.py) is skipped with os._exit when nothing needs it."""
    if (code is None or isinstance(code, int)) and not _teardown_needed():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)


def main() -> None:
    """Console entry point: no traceback reaches the user unless DNNLAB_DEBUG is set.

    SIGINT and SIGTERM stop a command the same way, at its next stop point: the state is
    written, the summary says interrupted (dnnlab.interrupt; `dnnlab.__main__` installs the
    handler before this module is imported)."""
    from dnnlab import interrupt

    interrupt.install()
    # helper threads (the run's file writers, the linear reference, a sweep's plots) share the
    # GIL with the training loop: at the default 5 ms switch interval the loop waits up to 5 ms
    # for it after each compiled call (a sweep of 8 quickstarts: 14.2 s at 5 ms, 12.6 s at 1 ms)
    sys.setswitchinterval(0.001)

    def terminated(code: Any) -> Any:
        """The exit code of a command that a signal stopped (or that finished its work first)."""
        if not isinstance(code, (int, type(None))) or not interrupt.received():
            return code
        if not code:
            err_console.print("interrupted; the command had done its work: everything is written", markup=False)
        return interrupt.exit_code(code or EXIT_OK)

    try:
        try:
            app()
        finally:
            if "dnnlab.report" in sys.modules:
                sys.modules["dnnlab.report"].finish_preloading()
    except SystemExit as exc:
        _exit(terminated(exc.code))
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        _exit(terminated(EXIT_INTERRUPTED))
    except Exception as exc:  # a bug: say so plainly, keep the traceback for DNNLAB_DEBUG=1
        if os.environ.get("DNNLAB_DEBUG"):
            raise
        err_console.print(
            f"error: unexpected {type(exc).__name__}: {exc}\n(set DNNLAB_DEBUG=1 for the traceback, "
            "and please report it)",
            markup=False,
        )
        sys.exit(EXIT_FAILED)
