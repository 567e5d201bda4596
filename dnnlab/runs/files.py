"""Writing a run folder: atomic files (a temp file renamed into place, never through a
symlink), new folders, locks, manifests, config.yaml, summary.json and the inputs a run is tied to.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional

if TYPE_CHECKING:
    from dnnlab.config import Config
from dnnlab.runs.names import CONFIG, INPUTS, MANIFESTS, PREPROCESSING, SUMMARY


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def _file_mode() -> int:
    """The mode a plainly created file gets under the user's umask (0644 under the usual 022):
    mkstemp's 0600 would hide a run from colleagues on a shared machine."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """The one way dnnlab writes a file: `write(fh)` fills a temp file in the same folder, which
    is synced and renamed over `path`. A reader never sees a half-written file, and a symlink at
    `path` is replaced, never followed: its target, wherever it points, is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _file_mode())
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def write_figure(path: Path, fig: Any, dpi: int = 90) -> None:
    """A matplotlib figure as a PNG, written like every other file (`atomic_write`)."""
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))


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


class FolderLock:
    """`folder/name` holds the PID of the process working in a folder (a run's training, a
    sweep's members): a second process is refused while that one lives (`busy(pid)`: the error
    to raise); a dead one's lock is taken over."""

    def __init__(self, folder: Path, name: str, busy: Callable[[int], Exception]) -> None:
        self.path, self.busy = Path(folder) / name, busy

    def __enter__(self) -> "FolderLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise self.busy(pid) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            return self
        raise self.busy(0)

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_manifest(folder: Path, name: str, manifest: dict[str, Any]) -> None:
    """sweep.json or seeds.json: the members of a folder of runs."""
    assert name in MANIFESTS, name
    atomic_write_text(Path(folder) / name, json.dumps(manifest, indent=2) + "\n")


def write_config(folder: Path, cfg: Config) -> None:
    """The one writer of a run's config.yaml: the resolved config (`config.dump_yaml`), which
    `read.read_config` reads back to an equal Config."""
    from dnnlab.config import dump_yaml

    atomic_write_text(Path(folder) / CONFIG, dump_yaml(cfg))


def config_digest(config: dict[str, Any]) -> str:
    """The SHA-256 of a resolved config (as `Config.model_dump(mode="json")` gives it)."""
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def write_inputs(folder: Path, config: dict[str, Any], data: dict[str, Any], command: Optional[dict[str, Any]] = None) -> None:
    """inputs.json: what a run started with, that `run --resume` and `fix` hold it to: the
    resolved config and its hash, and the data's fingerprint (`data.fingerprint`); and, when
    known, `command`: the config file and the overrides it was given, in order, and the command line."""
    record = {"config": config, "config_sha256": config_digest(config), "data": data}
    if command is not None:
        record["command"] = command
    atomic_write_text(Path(folder) / INPUTS, json.dumps(record, indent=2) + "\n")


def write_preprocessing(folder: Path, record: dict[str, Any]) -> None:
    """preprocessing.json: how raw inputs become the model's inputs (`data.preprocessing.describe`),
    with the training split's statistics; what `predict`, `export` and the Python API read."""
    atomic_write_text(Path(folder) / PREPROCESSING, json.dumps(record, indent=2) + "\n")


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """The one writer of summary.json (a run's, with its diagnosis once diagnosed; or a
    multi-seed folder's aggregate)."""
    atomic_write_text(Path(folder) / SUMMARY, json.dumps(finite_or_none(summary), indent=2) + "\n")
