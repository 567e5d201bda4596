"""The interface between training and output (`Writer`), its fan-out, the background thread
that writes files beside the training loop, and the run folder's writer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # numpy is imported where checkpoints are read or written: the CLI starts without it
    import numpy as np

    from dnnlab.config import Config
from dnnlab.runs.files import (
    atomic_write,
    atomic_write_text,
    finite_or_none,
    write_config,
    write_summary,
)
from dnnlab.runs.names import METRICS_FILE, STATE, STATE_PREV, SUMMARY

# the statuses whose run folder drops its resume state unless train.keep_state: the run is over
# (a diverged run is never resumed); an interrupted or failed run keeps it for --resume
STATE_DROPPED = ("completed", "stopped_early", "diverged")


class Writer:
    """The interface between training and output; every method is optional to implement."""

    def start(self, info: dict[str, Any]) -> None:
        """Called once before the first epoch: epochs, steps_per_epoch, params, device."""

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        """One epoch's metrics (epoch 0 is the model at initialization)."""

    def progress(self, epoch: int, step: int) -> None:
        """Steps done within the running epoch (called from a JAX callback thread)."""

    def checkpoint(self, tag: str, arrays: dict[str, np.ndarray]) -> None:
        """Parameters to keep under `tag` ('best' or 'last')."""

    def state(self, arrays: dict[str, np.ndarray]) -> None:
        """What continuing the run after this epoch needs (`dnnlab run --resume`)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's summary, once, whatever ended it."""

    def close(self) -> None:
        """Stop (a live display), whatever ended the run: after `finish`, or instead of it."""


class MultiWriter(Writer):
    def __init__(self, *writers: Writer) -> None:
        self.writers = writers

    def start(self, info: dict[str, Any]) -> None:
        for w in self.writers:
            w.start(info)

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        for w in self.writers:
            w.write(epoch, metrics)

    def progress(self, epoch: int, step: int) -> None:
        for w in self.writers:
            w.progress(epoch, step)

    def checkpoint(self, tag: str, arrays: dict[str, np.ndarray]) -> None:
        for w in self.writers:
            w.checkpoint(tag, arrays)

    def state(self, arrays: dict[str, np.ndarray]) -> None:
        for w in self.writers:
            w.state(arrays)

    def finish(self, summary: dict[str, Any]) -> None:
        for w in self.writers:
            w.finish(summary)


class Background(Writer):
    """File writers (the run folder, TensorBoard) served by one thread in call order, so that
    writing one epoch's files overlaps the next epoch's training instead of following it.

    `finish` waits for everything queued, then writes the summary. An error in the thread (a
    full disk) is raised in the caller at its next call, and nothing queued after it is
    written: the folder keeps the epochs before it, as when the write itself raised.
    `progress` stays in the caller's thread.
    """

    def __init__(self, *writers: Optional[Writer]) -> None:
        """Serve `writers` (a None among them, such as a TensorBoard writer that is off, is left out)."""
        import queue
        import threading

        self.writers = tuple(w for w in writers if w is not None)
        self.jobs: "queue.Queue[Any]" = queue.Queue()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._serve, name="dnnlab-writer", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None:
                    job()
            except BaseException as exc:  # raised in the caller's thread at its next call
                self.error = exc
            finally:
                self.jobs.task_done()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def submit(self, job: Any) -> None:
        """Queue `job()` behind everything queued before it."""
        self._raise()
        if not self.thread.is_alive():
            raise RuntimeError("the run's writer thread has stopped")
        self.jobs.put(job)

    def drain(self) -> None:
        """Wait until everything queued is written; raise the thread's error if there was one."""
        self.jobs.join()
        self._raise()

    def close(self) -> None:
        """Write what is queued and stop the thread; an error is dropped (the caller is already
        handling one)."""
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()
        self.error = None

    def start(self, info: dict[str, Any]) -> None:
        info = dict(info)
        self.submit(lambda: [w.start(info) for w in self.writers])

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        metrics = dict(metrics)
        self.submit(lambda: [w.write(epoch, metrics) for w in self.writers])

    def progress(self, epoch: int, step: int) -> None:
        for w in self.writers:
            w.progress(epoch, step)

    def checkpoint(self, tag: str, arrays: dict[str, np.ndarray]) -> None:
        self.submit(lambda: [w.checkpoint(tag, arrays) for w in self.writers])

    def state(self, arrays: dict[str, np.ndarray]) -> None:
        self.submit(lambda: [w.state(arrays) for w in self.writers])

    def finish(self, summary: dict[str, Any]) -> None:
        self.drain()
        for w in self.writers:
            w.finish(summary)


class RunDir(Writer):
    """Writes a run folder: config.yaml, metrics.jsonl, summary.json, best.npz, last.npz and
    state.npz (the resume state, with state.prev.npz the one before it)."""

    def __init__(
        self, path: Path, cfg: Optional[Config] = None, *, history: Optional[list[dict[str, Any]]] = None,
        keep_state: bool = False,
    ) -> None:
        """A new run folder, its config.yaml written from `cfg`; or, with `history`, a run
        continued after its last record (the records after it are dropped from metrics.jsonl;
        config.yaml is left as it is). `keep_state` (train.keep_state): a finished run keeps its
        resume state too."""
        self.path = path
        self.resumed = history is not None
        self.keep_state = keep_state
        if history is None:
            if cfg is None:
                raise TypeError("a new run folder needs its config")
            self.lines: list[str] = []
            write_config(path, cfg)
        else:
            self.lines = [json.dumps(finite_or_none(r)) for r in history]

    def start(self, info: dict[str, Any]) -> None:
        if self.resumed:  # the run is running again: its records after the state go, and its summary
            atomic_write_text(self.path / METRICS_FILE, "\n".join(self.lines) + ("\n" if self.lines else ""))
            (self.path / SUMMARY).unlink(missing_ok=True)
            for stale in self.path.glob(".*.tmp"):  # left by a process killed half-way through a write
                stale.unlink(missing_ok=True)

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.lines.append(json.dumps(finite_or_none({"epoch": epoch, **metrics})))
        # the whole file is rewritten atomically: a reader never sees a half line
        atomic_write_text(self.path / "metrics.jsonl", "\n".join(self.lines) + "\n")

    def state(self, arrays: dict[str, "np.ndarray"]) -> None:
        # keep the previous state: a kill between the two renames still leaves one
        if (self.path / STATE).exists():
            os.replace(self.path / STATE, self.path / STATE_PREV)
        self.checkpoint(STATE[: -len(".npz")], arrays)

    def checkpoint(self, tag: str, arrays: dict[str, "np.ndarray"]) -> None:
        import numpy as np

        atomic_write(self.path / f"{tag}.npz", lambda fh: np.savez(fh, **arrays))

    def finish(self, summary: dict[str, Any]) -> None:
        write_summary(self.path, summary)
        if summary.get("status") in STATE_DROPPED and not self.keep_state:
            # the kept and last weights stay (best.npz, last.npz); the resume states hold the
            # weights again with the optimizer's moments: three to four copies a finished run
            # needs only to be trained longer
            for name in (STATE, STATE_PREV):
                (self.path / name).unlink(missing_ok=True)
