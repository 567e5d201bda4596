"""Ctrl-C and SIGTERM while an experiment runs take effect between compiled calls, never inside
one: a KeyboardInterrupt raised in the middle of an XLA compilation or dispatch can crash the
process at exit. The CLI's signal handler calls `request`; the training loop calls
`stop_point` after each compiled call. Outside `deferred`, the handler raises at once.

Only the main thread takes part: signals reach it alone, and a helper thread (the linear
reference trained beside a run) is stopped by its owner, never by a stop meant for the run.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_state = {"depth": 0, "requested": False}


def request() -> bool:
    """From a signal handler: True when the stop is deferred to the next stop point."""
    if _state["depth"]:
        _state["requested"] = True
        return True
    return False


def stop_point() -> None:
    """Raise KeyboardInterrupt here if a stop was requested (in the main thread only)."""
    if _state["requested"] and threading.current_thread() is threading.main_thread():
        _state["requested"] = False
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Signals inside this block are deferred; one that no stop point took raises at its end.
    In any thread but the main one this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    except BaseException:
        _state["depth"] -= 1
        raise
    _state["depth"] -= 1
    if not _state["depth"]:
        stop_point()
