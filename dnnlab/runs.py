"""Run folders: creation, atomic writes, metrics.jsonl, summary.json, checkpoints, reading back.

Every file is written to a temp file in the same folder and renamed into place, so a killed run
leaves each finished epoch readable and never a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np


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

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's summary, once, whatever ended it."""


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

    def finish(self, summary: dict[str, Any]) -> None:
        for w in self.writers:
            w.finish(summary)


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def new_run_dir(parent: Path, name: str, now: Optional[float] = None) -> Path:
    """Create `parent/<name>-<YYYYMMDD-HHMMSS>-<4 hex>/`, never reusing an existing folder."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    while True:
        path = parent / f"{name}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


class RunDir(Writer):
    """Writes a run folder: config.yaml, metrics.jsonl, summary.json, best.npz, last.npz."""

    def __init__(self, path: Path, config_yaml: str) -> None:
        self.path = path
        self.lines: list[str] = []
        atomic_write_text(path / "config.yaml", config_yaml)

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.lines.append(json.dumps(finite_or_none({"epoch": epoch, **metrics})))
        # the whole file is rewritten atomically: a reader never sees a half line
        atomic_write_text(self.path / "metrics.jsonl", "\n".join(self.lines) + "\n")

    def checkpoint(self, tag: str, arrays: dict[str, np.ndarray]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{tag}.", suffix=".npz", dir=self.path)
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / f"{tag}.npz")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def finish(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(finite_or_none(summary), indent=2) + "\n")


# ---------------------------------------------------------------- reading runs back


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The epoch records of a run; a torn last line (from an older writer) is skipped."""
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            break
        out.append(record)
    return out


def read_summary(run: Path) -> Optional[dict[str, Any]]:
    path = Path(run) / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    return summary


def load_checkpoint(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: np.asarray(f[k]) for k in f.files}
