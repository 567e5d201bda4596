"""MLflow: a finished run folder (or a multi-seed, sweep or fix folder: a parent run with one
child per member) logged to a tracking store, never failing the run.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from dnnlab import runs
from dnnlab.tracking.names import (
    ARTIFACTS,
    MLFLOW_EXTRA,
    TrackingError,
    _enclosing,
    _text,
    flat_config,
    kept_scalars,
    scalars,
)


def require_mlflow() -> None:
    """Raise TrackingError (exit 2) with the install command when MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(f"logging.mlflow / --mlflow needs MLflow, an optional extra: {MLFLOW_EXTRA}") from None


def check_uri(uri: str) -> None:
    """TrackingError (exit 2) when MLflow cannot use `uri` as a tracking store (an unknown scheme;
    a plain folder, whose file store MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE is set):
    said before anything trains, not after. Only the client is made: no server is contacted."""
    require_mlflow()
    _short_retries()
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri)
    except Exception as exc:  # MlflowException and its kin: the URI names no store MLflow can use
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TrackingError(
            f"--mlflow / logging.mlflow {uri!r}: MLflow cannot use it as a tracking store ({type(exc).__name__}: "
            f"{first[:300]}{'...' if len(first) > 300 else ''}); give sqlite:///mlflow.db, http://host:5000 or another store it accepts"
        ) from None


def _short_retries() -> None:
    # MLflow retries an unreachable server 7 times with exponential backoff (minutes); a run
    # that has finished only needs to know soon. Settings the user made are kept.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


_RUN_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "diverged": "FAILED", "failed": "FAILED"}
RUN_DIR_TAG = "dnnlab.run_dir"


class _Store:
    """One tracking store for one command; after the first failure it logs nothing more and
    collects what it left out."""

    def __init__(self, uri: str) -> None:
        _short_retries()
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.error: Optional[str] = None
        self.not_logged: list[str] = []
        self.experiments: dict[str, str] = {}

    def attempt(self, what: Optional[str], fn: Callable[[], Any]) -> Any:
        """fn(), or None once the store has failed (then `what` is recorded as not logged)."""
        if self.error is None:
            try:
                return fn()
            except Exception as exc:  # any failure of the store: the run folder is what counts
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                self.error = f"{type(exc).__name__}: {first[:200]}{'...' if len(first) > 200 else ''}"
        if what is not None:
            self.not_logged.append(what)
        return None

    def experiment(self, name: str) -> str:
        if name not in self.experiments:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self.experiments[name] = self.client.create_experiment(name)
                except Exception:  # created meanwhile by another process
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found is not None:
                self.experiments[name] = found.experiment_id
        return self.experiments[name]

    def existing(self, experiment_id: str, folder: Path) -> list[Any]:
        """The MLflow runs logged from `folder` before (newest first)."""
        path = str(folder.resolve())
        if "'" in path:
            return []
        return self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{path}'", order_by=["attributes.start_time DESC"]
        )


def _millis(path: Path) -> Optional[int]:
    try:
        return int(path.stat().st_mtime * 1000)
    except OSError:
        return None


def _log_leaf(store: _Store, experiment_id: str, run_dir: Path, loaded: tuple[Any, Any, Any], parent_id: Optional[str]) -> str:
    """One run folder (`loaded`: what `runs.load_run` read from it) as an MLflow run, replacing
    the one logged from it before if the folder changed since; returns the MLflow run's id."""
    from mlflow.entities import Metric, Param

    history, cfg, summary = loaded
    raw = cfg.model_dump(mode="json")
    diagnosis = summary.get("diagnosis") or {}
    status = str(summary.get("status") or "unfinished")
    epochs = str(summary.get("epochs_run", runs.epochs_run(history)))
    for old in store.existing(experiment_id, run_dir):
        if old.data.tags.get("status") == status and old.data.tags.get("dnnlab.epochs_run") == epochs and old.info.status != "RUNNING":
            return old.info.run_id  # logged already, and the folder has not changed since
        store.client.delete_run(old.info.run_id)
    tags = {
        RUN_DIR_TAG: str(run_dir.resolve()), "dnnlab.epochs_run": epochs, "status": status,
        "verdict": str(diagnosis.get("verdict", "")), "causes": ", ".join(diagnosis.get("causes") or []),
    }
    if parent_id is not None:
        tags["mlflow.parentRunId"] = parent_id
    start = _millis(run_dir / runs.CONFIG)
    run = store.client.create_run(experiment_id, start_time=start, tags=tags, run_name=run_dir.name)
    run_id = run.info.run_id
    params = [Param(k, _text(v)) for k, v in flat_config(raw).items()]
    metrics, t = [], float(start or time.time() * 1000)
    for record in history:
        t += 1000 * float(record.get("seconds") or 0)
        metrics += [Metric(k, v, int(t), int(record["epoch"])) for k, v in scalars(record).items() if math.isfinite(v)]
    last_epoch = int(history[-1]["epoch"]) if history else 0
    metrics += [Metric(k, v, int(t), last_epoch) for k, v in kept_scalars(summary).items()]
    for i in range(0, len(params), 100):  # MLflow's limits per log_batch call
        store.client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        store.client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for path in [run_dir / name for name in ARTIFACTS] + sorted(run_dir.glob("*.png")):
        if path.exists():
            store.client.log_artifact(run_id, str(path))
    ended = _millis(run_dir / runs.SUMMARY)
    store.client.set_terminated(run_id, _RUN_STATUS.get(status, "KILLED"), end_time=ended)
    return run_id


def _log_parent(store: _Store, experiment_id: str, folder: Path, kind: str, manifest: dict[str, Any]) -> str:
    """A sweep, fix or multi-seed folder as the parent MLflow run (the one logged before is reused)."""
    from mlflow.entities import Param, RunTag

    members = manifest["members"]
    statuses = [m.get("status") for m in members]
    verdicts = sorted({str(m["verdict"]) for m in members if m.get("verdict")})
    open_members = [s for s in statuses if s not in ("completed", "stopped_early", "diverged", "failed")]
    status = manifest.get("status") if kind == "seeds" else ("completed" if not open_members else "unfinished")
    tags = {RUN_DIR_TAG: str(folder.resolve()), "dnnlab.kind": kind, "status": str(status), "verdicts": ", ".join(verdicts)}
    fix = manifest.get("fix")
    if isinstance(fix, dict):
        tags.update({"dnnlab.kind": "fix", "fix.run": str(fix.get("run")), "fix.verdict": str(fix.get("verdict")),
                     "fixed": "yes" if (folder / "fixed.yaml").exists() else "no"})
    found = store.existing(experiment_id, folder)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = store.client.create_run(experiment_id, start_time=_millis(folder), run_name=folder.name, tags=tags).info.run_id
        if kind == "sweep":
            params = {"sweep.grid." + k: v for k, v in (manifest.get("grid") or {}).items()}
            params.update({"sweep.seeds": manifest.get("seeds"), "sweep.variants": manifest.get("variants") or []})
        else:  # the seeds' shared config
            params = flat_config(runs.load_run(folder)[1].model_dump(mode="json"))
        items = [Param(k, _text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            store.client.log_batch(run_id, params=items[i : i + 100])
    store.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    names = [runs.SWEEP_MANIFEST, runs.SEEDS_MANIFEST, runs.CONFIG, runs.SUMMARY, "compare.md", "fixed.yaml"]
    for path in [folder / n for n in names] + sorted(folder.glob("*.png")):
        if path.exists():
            store.client.log_artifact(run_id, str(path))
    store.client.set_terminated(run_id, "FINISHED" if not open_members else "KILLED")
    return run_id


def _experiment_name(folder: Path, manifest: Optional[dict[str, Any]]) -> str:
    """The MLflow experiment: the config's name (a sweep's base config's; a fix goes with the
    run it fixes); a member of a sweep, logged alone, goes with its sweep."""
    if manifest is None and (outer := _enclosing(folder)) is not None:
        return _experiment_name(folder.parent, outer)
    base = (manifest or {}).get("base")
    if isinstance(base, dict) and base.get("name"):
        return str(base["name"])
    if manifest is not None and manifest.get("name"):
        return str(manifest["name"])
    try:
        return runs.load_run(folder)[1].name
    except Exception:
        return "dnnlab"


@dataclass
class Logged:
    """What `log_to_mlflow` did: the MLflow run of the folder (a sweep's, fix's or multi-seed
    folder's parent run), None when it was not logged, and warnings of what was not."""

    run_id: Optional[str]
    problems: list[str]

    def line(self, uri: str) -> Optional[str]:
        """The one line a command prints when everything was logged."""
        return f"logged to MLflow run {self.run_id} at {uri}" if self.run_id and not self.problems else None


def log_to_mlflow(uri: str, folder: Path, again: str = "") -> Logged:
    """Log a finished run folder, or a multi-seed, sweep or fix folder (a parent run with one
    child per member), to the MLflow store at `uri`. Returns the run's id and the warnings
    (none when all was logged; `again` tells how to log later what was not); never raises for
    the store: the run folder is complete whatever happens here. A folder logged before is logged again only if
    it changed (its earlier MLflow run is then deleted); a parent run is reused.

    Raises TrackingError when MLflow is not installed.
    """
    import logging

    require_mlflow()
    folder = Path(folder)
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.WARNING)  # not the store's table creation on every first use
    try:
        store = _Store(uri)
        try:
            found = runs.read_manifest(folder)
        except ValueError as exc:
            return Logged(None, [f"MLflow: not logged: {exc}"])
        manifest = found[1] if found else None
        problems: list[str] = []
        experiment_id = store.attempt(None, lambda: store.experiment(_experiment_name(folder, manifest)))
        parent = None
        if found is not None:
            kind = "seeds" if found[0] == runs.SEEDS_MANIFEST else "sweep"
            parent = store.attempt(f"{folder} (the parent run)", lambda: _log_parent(store, experiment_id, folder, kind, found[1]))
        elif _enclosing(folder) is not None:  # a member logged alone (resumed): under its sweep's run, if logged
            earlier = store.attempt(None, lambda: store.existing(experiment_id, folder.parent))
            parent = earlier[0].info.run_id if earlier else None
        logged = None
        for member in runs.member_dirs(folder, found[1]) if found is not None else [folder]:
            if not (member / runs.SUMMARY).exists():
                problems.append(f"MLflow: {member} not logged: it has not finished (no {runs.SUMMARY})")
                continue
            try:
                loaded = runs.load_run(member)
            except Exception as exc:  # ConfigError, ValueError, OSError: a damaged folder
                problems.append(f"MLflow: {member} not logged: {exc}")
                continue
            logged = store.attempt(f"{member} (params, metrics, tags, artifacts)", lambda m=member, d=loaded: _log_leaf(store, experiment_id, m, d, parent))
        if store.error is not None:
            problems.insert(0, f"MLflow at {uri} failed ({store.error}); not logged: {'; '.join(store.not_logged)}. "
                               f"The run folders are complete{'; log them later with: ' + again if again else ''}")
        return Logged(parent if found is not None else logged, problems)
    finally:
        mlflow_log.setLevel(level)
