"""Running a sweep's pending members, one after another in this process or on a pool of
workers, with the manifest saved after each and a lock on the folder.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from dnnlab import interrupt, runs
from dnnlab.sweep.grid import Sweep, SweepError, resolve
from dnnlab.sweep.member import member_folder, run_member

LOCK = "sweep.lock"


class _Lock(runs.FolderLock):
    """`sweep.lock` holds the PID of the process running a sweep's members: a second `--resume`
    of the same sweep is refused while that process lives; a dead one's lock is taken over."""

    def __init__(self, folder: Path) -> None:
        def busy(pid: int) -> SweepError:
            if not pid:
                return SweepError(f"{Path(folder) / LOCK}: cannot take the lock")
            return SweepError(f"{Path(folder)}: process {pid} is running this sweep ({LOCK}); wait for it or stop it")

        super().__init__(folder, LOCK, busy)


MemberHook = Callable[[dict[str, Any]], None]
MemberWriters = Callable[[dict[str, Any]], Sequence[runs.Writer]]


def run(
    sweep: Sweep, *, on_start: Optional[MemberHook] = None, on_end: Optional[MemberHook] = None,
    workers: Optional[int] = None, ray: Optional[str] = None, on_warning: Optional[Callable[[str], None]] = None,
    live: Optional[MemberWriters] = None,
) -> None:
    """Run every unfinished member, saving the manifest after each.

    Args:
        workers: run this many members at once, each in its own process (`dnnlab.sweep.workers`);
            None runs them one after another in this process. With `ray`, at most this many
            Ray tasks at once (default: one per CPU of the cluster).
        ray: dispatch each member as a Ray task: "local" starts a local Ray cluster, any other
            value is the address of one to join (`ray.init(address=...)`).
        on_warning: told what the workers cannot honour (more workers than cores or devices).
        live: the live writers of a member (its epochs on the console), for the members that run
            in this process; a worker process or a Ray task shows none.

    Whichever way members run, this process alone writes sweep.json and calls the hooks. A
    member that fails (a bad value, missing data, divergence, a crashed worker) is recorded
    and the sweep goes on. Ctrl-C marks the running members interrupted, saves and re-raises:
    the members after them stay pending for `--resume`. In a tuned sweep, a grid point's other
    seeds start once its trials have ended and `resolve` has chosen their value.
    """
    with _Lock(sweep.path), interrupt.deferred():  # Ctrl-C takes effect between compiled calls
        resolve(sweep)  # a tuned sweep stopped after a point's last trial: its seeds are ready
        if ray is not None:
            from dnnlab.sweep.workers import RayPool

            _run_parallel(sweep, RayPool(sweep.path, ray, workers, on_warning), on_start, on_end)
        elif workers is not None:
            from dnnlab.sweep.workers import Pool

            _run_parallel(sweep, Pool(sweep.path, workers, on_warning), on_start, on_end)
        else:
            _run_pending(sweep, on_start, on_end, live)


def _run_pending(sweep: Sweep, on_start: Optional[MemberHook], on_end: Optional[MemberHook], live: Optional[MemberWriters] = None) -> None:
    cache: dict[str, Any] = {}

    def started(member: dict[str, Any], folder: Path) -> None:
        # the folder is known from the start, so that a killed member can be resumed
        member["dir"] = folder.name
        sweep.save()

    # each member's plots are drawn by a thread while the next member trains (XLA leaves the GIL);
    # all of them are drawn before the sweep returns, whatever ends it
    plots = runs.Background()
    try:
        _run_members(sweep, cache, plots, started, on_start, on_end, live)
    finally:
        plots.close()


def _draw_later(plots: runs.Background, draw: Callable[[], Any]) -> None:
    plots.submit(partial(_best_effort, draw))


def _best_effort(draw: Callable[[], Any]) -> None:
    try:
        draw()
    except Exception:  # noqa: BLE001 - a plot (or its report.md) must never cost the sweep a member
        pass


def _run_members(
    sweep: Sweep, cache: dict[str, Any], plots: runs.Background, started: Callable[[dict[str, Any], Path], None],
    on_start: Optional[MemberHook], on_end: Optional[MemberHook], live: Optional[MemberWriters] = None,
) -> None:
    tried: set[int] = set()
    while True:
        resolve(sweep)  # a tuned point whose trials have ended: its seeds run next
        member = next((m for m in sweep.pending() if m["index"] not in tried), None)
        if member is None:
            break
        tried.add(member["index"])
        member.update(status="running", error=None)
        member.pop("worker", None)
        sweep.save()
        try:
            if on_start:
                on_start(member)
            writers = live(member) if live is not None else ()
            try:
                member.update(run_member(sweep.path, sweep.manifest, member, cache, partial(started, member), partial(_draw_later, plots), writers))
            finally:
                for w in writers:
                    w.close()
            if member["status"] == "interrupted":
                raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) stops the sweep, not just this member
        except KeyboardInterrupt:
            member["status"] = "interrupted"
            sweep.save()
            raise
        except Exception as exc:  # a hook's failure is the member's, as a crash would be
            member.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        sweep.save()
        if on_end:
            on_end(member)


def _start(
    sweep: Sweep, pool: Any, member: dict[str, Any], running: dict[int, dict[str, Any]],
    on_start: Optional[MemberHook], on_end: Optional[MemberHook],
) -> None:
    """Submit `member` to `pool` and count it running (sweep.json saved before and after); a
    failing `on_start` hook fails the member instead."""
    member.update(status="running", error=None)
    member.pop("worker", None)
    try:
        if on_start:
            on_start(member)
    except Exception as exc:  # a hook's failure is the member's
        member.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        sweep.save()
        if on_end:
            on_end(member)
        return
    sweep.save()  # before the member starts: its worker reads sweep.json
    running[member["index"]] = member
    member["worker"] = pool.submit(member["index"])
    sweep.save()


def _run_parallel(sweep: Sweep, pool: Any, on_start: Optional[MemberHook], on_end: Optional[MemberHook]) -> None:
    """The members on `pool` (a `workers.Pool` or `workers.RayPool`), up to `pool.capacity` at
    once; the results are written to sweep.json as they come, by this process alone."""
    todo = list(reversed(sweep.pending()))
    tried = {m["index"] for m in todo}
    running: dict[int, dict[str, Any]] = {}

    def record(events: list[tuple[str, int, dict[str, Any]]]) -> bool:
        """Write the pool's events to the manifest; True when a member ended interrupted."""
        stopped = False
        for kind, index, payload in events:
            member = running.get(index)
            if member is None:
                continue
            if kind == "started":
                member["dir"] = payload["dir"]
                sweep.save()
                continue
            del running[index]
            member.update(payload)
            sweep.save()
            if member["status"] == "interrupted":
                stopped = True  # as in a sequential sweep: no on_end for an interrupted member
            elif on_end:
                on_end(member)
        return stopped

    try:
        while todo or running:
            while todo and len(running) < pool.capacity:
                _start(sweep, pool, todo.pop(), running, on_start, on_end)
            if record(pool.poll(timeout=0.2)):
                raise KeyboardInterrupt  # a member stopped by a signal stops the sweep, as in order
            if resolve(sweep):  # a tuned point whose trials have ended: its seeds go next
                fresh = [m for m in sweep.pending() if m["index"] not in tried]
                tried.update(m["index"] for m in fresh)
                todo += reversed(fresh)
            interrupt.stop_point()
    except KeyboardInterrupt:
        # the running members stop at their next epoch and write their state; --resume continues them
        record(pool.stop())
        for member in running.values():
            member.update(status="interrupted", dir=member_folder(sweep, member))
        sweep.save()
        raise
    finally:
        pool.close()
