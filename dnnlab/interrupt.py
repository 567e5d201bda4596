"""Ctrl-C and SIGTERM while an experiment runs take effect between compiled calls, never inside
one: a KeyboardInterrupt raised in the middle of an XLA compilation or dispatch can crash the
process at exit. The CLI's signal handler calls `request`; the training loop calls
`stop_point` after each compiled call. Outside `deferred`, the handler raises at once.
"""

from __future__ import annotations

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
    """Raise KeyboardInterrupt here if a stop was requested."""
    if _state["requested"]:
        _state["requested"] = False
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Signals inside this block are deferred; one that no stop point took raises at its end."""
    _state["depth"] += 1
    try:
        yield
    except BaseException:
        _state["depth"] -= 1
        raise
    _state["depth"] -= 1
    if not _state["depth"]:
        stop_point()
