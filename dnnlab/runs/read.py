"""Reading run folders back: metrics, summaries, checkpoints, resume states and manifests,
refused with the file and the line when damaged, and the kept model's metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # numpy is imported where checkpoints are read or written: the CLI starts without it
    import numpy as np
from dnnlab.runs.names import (
    CLASS_METRICS,
    CONFIG,
    FINISHED,
    INPUTS,
    MANIFESTS,
    METRICS,
    METRICS_FILE,
    REGRESSION_METRICS,
    PREPROCESSING,
    STATE,
    STATE_PREV,
    SUMMARY,
)


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


def read_preprocessing(folder: Path) -> Optional[dict[str, Any]]:
    """preprocessing.json of a run folder; None for a folder made before runs recorded it. Raises
    ValueError for one that cannot be read (its fields are checked by `data.preprocessing.check_record`)."""
    path = Path(folder) / PREPROCESSING
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); restore it or train the run again") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a preprocessing record (a JSON object); restore it or train the run again")
    return record


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


def run_folder_problem(path: Path) -> Optional[str]:
    """Why `path` is not a run folder (it does not exist, it is a file, it holds no config.yaml),
    or None when it is one: the one message of every command that takes a run folder."""
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path}: not a folder (give a run folder, runs/<name>-...)"
    if not (path / CONFIG).exists():
        return f"{path}: not a run folder (no {CONFIG})"
    return None


def read_config(folder: Path, overrides: Sequence[str] = ()) -> Any:
    """The one reader of a run's config.yaml: the validated Config (with `--set`-style
    `overrides` applied). Raises ConfigError naming the file (and the key) when it cannot be used."""
    from dnnlab.config import load_config

    return load_config(Path(folder) / CONFIG, list(overrides))


def read_raw_config(folder: Path) -> Any:
    """A run's config.yaml as plain data through the guarded YAML loader, not validated (a
    folder written by another version may no longer validate); None when it is empty.
    Raises OSError (FileNotFoundError when there is none) or yaml.YAMLError."""
    from dnnlab.config import safe_yaml

    return safe_yaml((Path(folder) / CONFIG).read_text(encoding="utf-8", errors="replace"))


def load_run(run_dir: Path) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """(history, Config, summary) of a run folder; summary is {} for a killed run.

    Raises ConfigError for a folder without a usable config.yaml (never the defaults), and
    ValueError for a corrupt summary.json.
    """
    from dnnlab.config import ConfigError

    run_dir = Path(run_dir)
    problem = run_folder_problem(run_dir)
    if problem is not None:
        raise ConfigError(problem)
    cfg = read_config(run_dir)
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
    if done and any(k.endswith("_r2") for k in done[-1]):  # regression
        return {k: done[-1].get(k) for k in REGRESSION_METRICS}
    return {k: done[-1].get(k) for k in METRICS + CLASS_METRICS if k in METRICS or k in done[-1]} if done else {}


def is_number(x: Any) -> bool:
    """The one "is it a finite number" of everything read back from a run (a bool is not)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


_number = is_number


def seed_stats(summaries: list[dict[str, Any]], metric: str) -> tuple[Optional[float], float, int]:
    """Mean, standard deviation (ddof 1; 0 for one value) and count of the kept `metric` over
    the runs that finished (completed or stopped early); None when none did."""
    import statistics

    values = [kept_metrics(s).get(metric) for s in summaries if s.get("status") in FINISHED]
    values = [v for v in values if _number(v)]
    if not values:
        return None, 0.0, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def has_state(run_dir: Path) -> bool:
    """Whether a run folder holds a resume state (state.npz, or state.prev.npz before it)."""
    return (Path(run_dir) / STATE).exists() or (Path(run_dir) / STATE_PREV).exists()


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
