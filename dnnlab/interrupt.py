"""Ctrl-C and SIGTERM, from the first instant of a command to its end.

The handler (`install`, the first thing `dnnlab` does, before it imports anything heavy) only
records the signal: it never raises, so no exception is thrown inside a callback of JAX, XLA or
importlib, where Python drops it ("Exception ignored in ...") or C++ aborts the process. The
code acts on a recorded stop at its stop points (`stop_point`): the training loop's after each
compiled call, the CLI's before a run starts, the wait for the linear reference.

A stop that no stop point takes within STOP_GRACE seconds (a long compilation, a long load, a
command without stop points) ends the process from a watchdog thread, after the registered last
words (`last_words`: the interrupted summary of the run folder being written), with the signal's
exit code. The watchdog learns of a signal from `signal.set_wakeup_fd`, so it counts even while
the main thread is inside XLA. Once a stop point has taken the stop, the shutdown it starts is
left to finish (it writes the summary and the state): a second signal is recorded, never raised.

Only the main thread takes part: signals reach it alone, and a helper thread (the linear
reference trained beside a run) is stopped by its owner, never by a stop meant for the run.
A process that never calls `install` (a test, a notebook) keeps Python's own handlers.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

# seconds a stop may wait for a stop point before the watchdog ends the process: longer than a
# usual compilation, shorter than the grace a batch system gives before its SIGKILL (Slurm's
# KillWait and Kubernetes' terminationGracePeriodSeconds are 30 s by default)
STOP_GRACE = 20.0

_state: dict = {"depth": 0, "requested": False, "taken": False, "received": [], "installed": False}
_first = threading.Event()  # set at the first signal, by the handler or the wakeup pipe
_words: list[Callable[[], None]] = []


def install() -> None:
    """Record SIGINT and SIGTERM from now on (main thread only; again is a no-op), and start the
    watchdog that bounds how long a stop may wait."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _state["installed"] = True
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    try:
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        threading.Thread(target=_wake, args=(read,), name="dnnlab-stop-wakeup", daemon=True).start()
    except (OSError, ValueError):
        pass  # the handler alone arms the watchdog
    threading.Thread(target=_watch, name="dnnlab-stop-watchdog", daemon=True).start()


def _on_signal(signum: int, frame: object) -> None:
    """Record the signal; never raise (see the module docstring)."""
    record(signum)


def record(signum: int) -> None:
    """A stop signal arrived: the next stop point raises KeyboardInterrupt, unless one has
    already taken a stop (the shutdown is under way)."""
    _state["received"].append(signum)
    if not _state["taken"]:
        _state["requested"] = True
    _first.set()


def received() -> list[int]:
    """The stop signals received so far, in order."""
    return list(_state["received"])


def exit_code(code: int) -> int:
    """`code` for a process stopped by a signal: 128 + the first signal (130 for SIGINT, 143 for
    SIGTERM) in place of 130 (interrupted) or 0 (the work was done before the stop took effect)."""
    if _state["received"] and code in (0, 130):
        return 128 + _state["received"][0]
    return code


def request() -> bool:
    """From a signal handler of its own (a worker process): True when the stop is deferred to
    the next stop point."""
    if _state["depth"]:
        _state["requested"] = True
        return True
    return False


def stop_point() -> None:
    """Raise KeyboardInterrupt here if a stop was requested (in the main thread only), once."""
    if _state["requested"] and threading.current_thread() is threading.main_thread():
        _state["requested"] = False
        _state["taken"] = True
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Signals inside this block take effect at its stop points, never inside a compiled call
    (for a process with a handler of its own, `request`). In any thread but the main one this
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1


@contextmanager
def last_words(words: Callable[[], None]) -> Iterator[None]:
    """While the block runs, `words()` is called if the watchdog has to end the process (it
    writes what a stop at a stop point would have written)."""
    _words.append(words)
    try:
        yield
    finally:
        _words.remove(words)


def _wake(read: int) -> None:
    """Read the wakeup pipe: the C-level handler writes each signal's number there at once,
    even while the main thread is inside XLA and Python's handler cannot run yet."""
    while True:
        try:
            data = os.read(read, 64)
        except OSError:
            return
        if not data:
            return
        stops = [b for b in data if b in (signal.SIGINT, signal.SIGTERM)]
        if stops:
            _state.setdefault("woken", stops[0])
            _first.set()


def _watch() -> None:
    """The watchdog: after the first signal, end the process if it is still here STOP_GRACE
    seconds later and no stop point has taken the stop."""
    _first.wait()
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if _state["taken"]:
            return  # a stop point took it: the orderly shutdown is bounded by what it writes
    for words in list(_words):
        try:
            words()
        except Exception:  # noqa: BLE001 - the process ends whatever its last words do
            pass
    try:
        sys.stderr.write(f"interrupted: no stopping point within {STOP_GRACE:g} s; stopped\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    signum = _state["received"][0] if _state["received"] else _state.get("woken", signal.SIGTERM)
    os._exit(128 + signum)
