"""Run folders: their file names, creation, atomic writes, metrics.jsonl, summary.json,
checkpoints, reading back, and the rules every reader shares (the kept model's metrics, the
statistics over seeds).

This module is the one owner of the run folder's format: training writes through `RunDir`,
summary.json is written only by `write_summary`, and diagnose, compare, evaluate and the CLI
read through `load_run`, `read_manifest` and `kept_metrics`. Every file is written to a temp
file in the same folder and renamed into place, so a killed run leaves each finished epoch
readable and never a half-written file.
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

if TYPE_CHECKING:  # numpy is imported where checkpoints are read or written: the CLI starts without it
    import numpy as np

CONFIG = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY = "summary.json"
REPORT = "report.md"
SEEDS_MANIFEST = "seeds.json"  # a multi-seed run folder (train.seeds): its seed-<s>/ members
SWEEP_MANIFEST = "sweep.json"  # a sweep folder: its members
MANIFESTS = (SWEEP_MANIFEST, SEEDS_MANIFEST)
CHECKPOINTS = ("best", "last")  # <tag>.npz
STATE, STATE_PREV = "state.npz", "state.prev.npz"  # what `run --resume` continues from
INPUTS = "inputs.json"  # what the run started with: its resolved config (and hash), its data's fingerprint
RUN_LOCK = "run.lock"  # the process training in the folder (`FolderLock`)

# the six evaluation-mode metrics every epoch records
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
# each split's balanced accuracy (the mean per-class recall): in summary.json's final and best for
# every run, and in the records too when the classes are watched (`train.class_aware`)
CLASS_METRICS = ("train_balanced_accuracy", "val_balanced_accuracy", "test_balanced_accuracy")
# the statuses whose kept model counts in a mean over seeds; diverged, interrupted and killed
# runs are listed, never averaged in
FINISHED = ("completed", "stopped_early")

# the exit codes of the commands, and a run's status as one
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_VERDICT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
STATUS_EXIT = {"completed": EXIT_OK, "stopped_early": EXIT_OK, "diverged": EXIT_FAILED, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}


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


def shell_command(*words: Any) -> str:
    """The one formatter of every command dnnlab prints or writes (`dnnlab run --resume RUN_DIR`,
    a remedy's `--set key=value`): each word shell-quoted, so that a path with a space, a `$(...)`
    or a quote pastes as the word it is."""
    import shlex

    return shlex.join(str(w) for w in words)


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


def cache_root() -> Path:
    """Where dnnlab keeps what it can recompute (the reference models, compiled programs):
    `$DNNLAB_CACHE`, else `~/.cache/dnnlab`. It must be private to the user: the compiled
    programs are executable (docs/security.md; `cache_exposure`)."""
    return Path(os.environ.get("DNNLAB_CACHE") or Path("~/.cache/dnnlab").expanduser())


_CACHE_PROBLEMS: dict[str, Optional[str]] = {}


def cache_problem() -> Optional[str]:
    """Why `cache_root()` cannot be used (it cannot be created or written), or None; checked once
    per folder in a process. Where it cannot, compiled programs and references are not kept
    (`train.use_compile_cache`, `stored.folder`) and the runs go on."""
    root = cache_root()
    if str(root) not in _CACHE_PROBLEMS:
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: it holds executable programs
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=root)
            os.close(fd)
            os.unlink(probe)
            _CACHE_PROBLEMS[str(root)] = None
        except OSError as exc:
            _CACHE_PROBLEMS[str(root)] = (
                f"the cache folder {root} cannot be written ({exc.strerror or exc}): compiled programs and linear "
                "references are not kept, so each run compiles and fits them again; set DNNLAB_CACHE to a writable folder"
            )
    return _CACHE_PROBLEMS[str(root)]


def cache_exposure() -> Optional[str]:
    """Why the cache folder is not private to this user, or None: it, or its folder of compiled
    programs, belongs to another user or can be written by the group or by anyone. The programs
    kept there are executable (the program store unpickles them, JAX loads them as compiled), so
    whoever can write them runs code as this user: where the folder is not private, compiled
    programs are neither loaded nor kept (`compiled_cache_off`); the runs go on without them."""
    root = cache_root()
    for folder in (root, root / "programs", root / "xla"):
        try:
            st = folder.stat()
        except OSError:
            continue
        who = ("another user owns it" if st.st_uid != os.getuid() else
               "anyone can write it" if st.st_mode & 0o002 else "its group can write it" if st.st_mode & 0o020 else None)
        if who is not None:
            return (
                f"the cache folder {folder} is not private ({who}): the compiled programs kept there are executable, so "
                f"they are not loaded or kept; make it yours alone (chmod 700 {folder}) or set DNNLAB_CACHE to a private "
                "folder (docs/security.md)"
            )
    return None


def compiled_cache_off() -> bool:
    """Whether compiled programs are not kept on disk (JAX's cache and dnnlab's store): with
    DNNLAB_NO_COMPILE_CACHE=1, when the cache folder cannot be written (`cache_problem`), or when
    it is not private (`cache_exposure`)."""
    return (os.environ.get("DNNLAB_NO_COMPILE_CACHE", "") not in ("", "0") or cache_problem() is not None
            or cache_exposure() is not None)


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
    """Writes a run folder: config.yaml, metrics.jsonl, summary.json, best.npz, last.npz and
    state.npz (the resume state, with state.prev.npz the one before it)."""

    def __init__(self, path: Path, config_yaml: str, *, history: Optional[list[dict[str, Any]]] = None) -> None:
        """A new run folder; or, with `history`, a run continued after its last record (the
        records after it are dropped from metrics.jsonl)."""
        self.path = path
        self.resumed = history is not None
        if history is None:
            self.lines: list[str] = []
            atomic_write_text(path / CONFIG, config_yaml)
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


def config_digest(config: dict[str, Any]) -> str:
    """The SHA-256 of a resolved config (as `Config.model_dump(mode="json")` gives it)."""
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def write_inputs(folder: Path, config: dict[str, Any], data: dict[str, Any]) -> None:
    """inputs.json: what a run started with, that `run --resume` and `fix` hold it to: the
    resolved config and its hash, and the data's fingerprint (`data.fingerprint`)."""
    record = {"config": config, "config_sha256": config_digest(config), "data": data}
    atomic_write_text(Path(folder) / INPUTS, json.dumps(record, indent=2) + "\n")


def read_inputs(folder: Path) -> Optional[dict[str, Any]]:
    """inputs.json of a run folder; None for a folder made before runs recorded it. Raises
    ValueError for one that cannot be read."""
    path = Path(folder) / INPUTS
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    data = record.get("data") if isinstance(record, dict) else None
    if (not isinstance(record.get("config"), dict) or not isinstance(record.get("config_sha256"), str)
            or not isinstance(data, dict) or not isinstance(data.get("digest"), str) or not isinstance(data.get("files"), list)
            or not all(isinstance(f, dict) and isinstance(f.get("key"), str) and isinstance(f.get("path"), str) for f in data["files"])):
        raise ValueError(f"{path}: not what a run records of its inputs (config, config_sha256, data); restore it or delete it")
    return record


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """The one writer of summary.json (a run's, with its diagnosis once diagnosed; or a
    multi-seed folder's aggregate)."""
    atomic_write_text(Path(folder) / SUMMARY, json.dumps(finite_or_none(summary), indent=2) + "\n")


# ---------------------------------------------------------------- reading runs back


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The epoch records of a run.

    Raises ValueError naming the line for a line that is not an epoch record, or whose metrics
    are not numbers (null stands for a non-finite value): epochs are never dropped silently.
    """
    path = Path(run) / METRICS_FILE
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not JSON ({exc.msg}); repair or delete that line") from None
        if not isinstance(record, dict) or isinstance(record.get("epoch"), bool) or not isinstance(record.get("epoch"), int):
            raise ValueError(f"{path}, line {number}: not an epoch record (an object with an integer `epoch`)")
        for key in METRICS:
            value = record.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{path}, line {number}: {key} is {value!r}, not a number")
        if record["epoch"] != len(out):  # what `run --resume` continues from: 0, 1, 2, ... once each
            raise ValueError(
                f"{path}, line {number}: epoch {record['epoch']} where epoch {len(out)} was expected (a duplicated or "
                "missing epoch); repair or delete that line"
            )
        out.append(record)
    return out


def read_summary(run: Path) -> Optional[dict[str, Any]]:
    path = Path(run) / SUMMARY
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    for key, types in SUMMARY_TYPES.items():
        value = summary.get(key)
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise ValueError(f"{path}: `{key}` is {value!r}; expected {' or '.join(t.__name__ for t in types)}")
    for key in ("final", "best", "initial"):
        for metric, value in (summary.get(key) or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{path}: `{key}.{metric}` is {value!r}, not a number")
    return summary


# the fields every reader relies on, and their JSON types (null is allowed for each)
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "epochs_run": (int,), "best_epoch": (int,), "restored_best": (bool,),
    "final": (dict,), "best": (dict,), "initial": (dict,), "data": (dict,), "diagnosis": (dict,),
    "reference": (dict,), "wall_seconds": (int, float), "monitor": (str,),
    "per_class": (dict,), "loss": (dict,), "penalty": (dict,),
}


def load_checkpoint(path: Path) -> dict[str, "np.ndarray"]:
    """The named arrays of a checkpoint; ValueError for a damaged or truncated file."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in f.files}
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: damaged or truncated ({type(exc).__name__}: {exc})") from None


def load_run(run_dir: Path) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """(history, Config, summary) of a run folder; summary is {} for a killed run.

    Raises ConfigError for a folder without a usable config.yaml (never the defaults), and
    ValueError for a corrupt summary.json.
    """
    from dnnlab.config import ConfigError, load_config

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir}: not a run folder (no {CONFIG})")
    cfg = load_config(run_dir / CONFIG)
    return read_metrics(run_dir), cfg, read_summary(run_dir) or {}


def read_manifest(folder: Path) -> Optional[tuple[str, dict[str, Any]]]:
    """(file name, manifest) of a sweep or multi-seed folder; None for any other folder.

    Raises ValueError when the manifest exists but cannot be read.
    """
    for name in MANIFESTS:
        path = Path(folder) / name
        if path.exists():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: unreadable ({exc})") from None
            if not isinstance(manifest, dict) or not isinstance(manifest.get("members"), list):
                raise ValueError(f"{path}: expected an object with a list of members")
            return name, manifest
    return None


def member_dirs(folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """The member folders a manifest lists that exist (a killed run's started members too);
    folders it does not list (orphans) are never members."""
    return [
        Path(folder) / m["dir"] for m in manifest["members"]
        if isinstance(m, dict) and isinstance(m.get("dir"), str) and (Path(folder) / m["dir"] / CONFIG).exists()
    ]


def kept_metrics(summary: dict[str, Any], history: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """The metrics of the model a run kept: its best epoch's when it restored it, else its last
    epoch's; for a run with no summary (killed), the last recorded epoch of `history`."""
    if summary.get("restored_best") and summary.get("best"):
        return summary["best"]
    if summary.get("final"):
        return summary["final"]
    done = [r for r in history or [] if isinstance(r.get("epoch"), int) and r["epoch"] > 0]
    return {k: done[-1].get(k) for k in METRICS + CLASS_METRICS if k in METRICS or k in done[-1]} if done else {}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def seed_stats(summaries: list[dict[str, Any]], metric: str) -> tuple[Optional[float], float, int]:
    """Mean, standard deviation (ddof 1; 0 for one value) and count of the kept `metric` over
    the runs that finished (completed or stopped early); None when none did."""
    import statistics

    values = [kept_metrics(s).get(metric) for s in summaries if s.get("status") in FINISHED]
    values = [v for v in values if _number(v)]
    if not values:
        return None, 0.0, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def kept_checkpoint(run_dir: Path, summary: dict[str, Any], which: str = "kept") -> Path:
    """best.npz when the run kept its best epoch (or when asked), else last.npz."""
    if which == "kept":
        which = "best" if summary.get("restored_best") else "last"
    path = Path(run_dir) / f"{which}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


class StateError(ValueError):
    """A resume state that does not fit the run (`str()` names the array and the file)."""


def nonfinite_array(arrays: dict[str, "np.ndarray"]) -> Optional[str]:
    """The name of the first floating-point array that holds a NaN or an infinity, or None."""
    import numpy as np

    for name, a in arrays.items():
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            return name
    return None


def state_problem(arrays: dict[str, "np.ndarray"]) -> Optional[str]:
    """Why the arrays of a state.npz cannot be continued from (a wrong type, a NaN: a damaged or
    edited file), or None. Every floating-point array of the model's state and its best model is
    float32 and finite; the epoch an integer; early stopping's state three numbers."""
    epoch, es = arrays.get("epoch"), arrays.get("early_stopping")
    if epoch is None or epoch.shape != () or epoch.dtype.kind not in "iu":
        return "`epoch` is not an integer"
    if es is None or es.shape != (3,) or es.dtype.kind != "f":
        return "`early_stopping` is not three numbers"
    model = {k: a for k, a in arrays.items() if k.startswith(("state.", "best."))}
    for name, a in model.items():
        if a.dtype.kind not in "biuf" or (a.dtype.kind == "f" and a.dtype.name != "float32"):
            return f"array {name} is {a.dtype.name}; a state holds float32 numbers and integers"
    bad = nonfinite_array(model)
    return None if bad is None else f"array {bad} holds a NaN or an infinity"


def read_state(run_dir: Path) -> tuple[dict[str, "np.ndarray"], str, list[str]]:
    """(the newest usable resume state, its file name, why a newer one was passed over):
    state.npz, else state.prev.npz (`state_problem`).

    Raises StateError when neither can be used.
    """
    problems = []
    for name in (STATE, STATE_PREV):
        path = Path(run_dir) / name
        if not path.exists():
            problems.append(f"no {name}")
            continue
        try:
            arrays = load_checkpoint(path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        problem = state_problem(arrays)
        if problem is None:
            return arrays, name, [p for p in problems if not p.startswith("no ")]
        problems.append(f"{path}: {problem}")
    raise StateError(f"{run_dir}: nothing to resume from ({'; '.join(problems)}); the run saves its state after each epoch")
