"""The runs as `compare` reads them: each run folder's config, summary and history (`RunRecord`),
and the run folders that targets name (run folders, sweep and multi-seed folders through their
manifests, read once per folder, and globs)."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from dnnlab import runs
from dnnlab.config import flatten

_num = runs.is_number


class CompareError(Exception):
    """Nothing to compare; `str()` is the message for the user."""


def lower_is_better(metric: str) -> bool:
    """Whether a metric ranks lower first: a loss, an MSE or an MAE (accuracies and R^2 rank higher)."""
    return metric.endswith(("loss", "_mse", "_mae"))


@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any] = field(default_factory=dict)  # flat, dotted keys
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        if self.summary.get("status"):
            return self.summary["status"]
        return "unfinished" if self.history else "empty"

    @property
    def verdict(self) -> Optional[str]:
        return (self.summary.get("diagnosis") or {}).get("verdict")

    def kept(self) -> dict[str, Any]:
        """Metrics of the model the run kept (`runs.kept_metrics`)."""
        return runs.kept_metrics(self.summary, self.history)

    def best(self, metric: str) -> tuple[Optional[float], Optional[int]]:
        """The best value of `metric` over the epochs, and its epoch."""
        values = [(r.get(metric), r["epoch"]) for r in self.history if r.get("epoch", 0) > 0 and _num(r.get(metric))]
        if not values:
            return None, None
        pick = min if lower_is_better(metric) else max
        return pick(values, key=lambda ve: ve[0])


def load_record(path: Path) -> RunRecord:
    """Whatever a run folder holds; problems are noted, never raised."""
    rec = RunRecord(Path(path))
    try:
        raw = runs.read_raw_config(rec.path) or {}
        if isinstance(raw, dict):
            rec.config = flatten(raw)
        else:
            rec.problems.append(f"config.yaml is not a mapping (a YAML {type(raw).__name__}): its keys are not compared")
    except FileNotFoundError:
        rec.problems.append(f"no {runs.CONFIG}")
    except (OSError, yaml.YAMLError) as exc:
        rec.problems.append(f"config.yaml unreadable: {exc}")
    try:
        rec.summary = runs.read_summary(rec.path) or {}
        if not rec.summary:
            rec.problems.append("no summary.json (killed or still running)")
    except (OSError, ValueError) as exc:
        rec.problems.append(f"summary.json unreadable: {exc}")
    try:
        rec.history = runs.read_metrics(rec.path)
    except (OSError, ValueError) as exc:
        rec.problems.append(f"metrics.jsonl unreadable: {exc}")
    if not isinstance(rec.config, dict):
        rec.problems.append("config.yaml is not a mapping")
        rec.config = {}
    return rec


def is_run_folder(path: Path) -> bool:
    """A single run's folder (its own config.yaml or metrics.jsonl, no manifest of members)."""
    path = Path(path)
    return ((path / runs.CONFIG).exists() or (path / runs.METRICS_FILE).exists()) and not _is_folder_of_runs(path)


def _is_folder_of_runs(path: Path) -> bool:
    return any((path / name).exists() for name in runs.MANIFESTS)


@dataclass(frozen=True)
class FolderOfRuns:
    """A sweep or multi-seed folder as its manifest lists it (`read_folder`)."""

    path: Path
    members: list[Path]  # the run folders compared; every run folder inside when the manifest cannot be read
    unchosen: frozenset[str] = frozenset()  # folders of a tuned sweep's trials that were not chosen: listed, never compared
    tune: Optional[dict[str, Any]] = None  # a tuned sweep's tuning (`tuning`)

    def orphans(self, compared: set[Path]) -> list[Path]:
        """Run folders inside that the manifest does not list (a member started over, or a copy)."""
        if not self.path.is_dir():
            return []
        return [child for child in self.path.iterdir()
                if (child / runs.CONFIG).exists() and child.resolve() not in compared and child.name not in self.unchosen]


def read_folder(folder: Path) -> FolderOfRuns:
    """A sweep or multi-seed folder, its manifest read once: the members it lists (a tuned sweep's
    trials that were not chosen are its tuning, not its configurations), those trials, and its tuning."""
    try:
        found = runs.read_manifest(folder)
    except ValueError:
        found = None
    if found is None:
        return FolderOfRuns(folder, sorted(p for p in folder.iterdir() if (p / runs.CONFIG).exists()))
    manifest = found[1]
    members = manifest["members"]
    unchosen = frozenset(m["dir"] for m in members if _unchosen(m) and isinstance(m.get("dir"), str))
    tune = manifest.get("tune")
    if isinstance(tune, dict):
        manifest = {**manifest, "members": [m for m in members if not _unchosen(m)]}
    return FolderOfRuns(folder, runs.member_dirs(folder, manifest), unchosen, tune if isinstance(tune, dict) and tune.get("key") else None)


def _unchosen(member: Any) -> bool:
    tune = member.get("tune") if isinstance(member, dict) else None
    return isinstance(tune, dict) and bool(tune.get("trial")) and tune.get("chosen") is False


def tuning(folder: Path) -> Optional[dict[str, Any]]:
    """A tuned sweep's tuning (sweep.json's `tune`: key, values, metric, each grid point's scores
    and chosen value), or None for any other folder."""
    return read_folder(folder).tune if _is_folder_of_runs(folder) else None


def collect(targets: list[str]) -> tuple[list[RunRecord], list[FolderOfRuns]]:
    """Run folders from run folders, sweep folders (their members) and globs.

    Returns:
        (records, the sweep and multi-seed folders among the targets). Raises CompareError when
        nothing matches.
    """
    paths: list[Path] = []
    folders: list[FolderOfRuns] = []
    missing = []
    for target in targets:
        matches = sorted(glob.glob(target)) if any(c in target for c in "*?[") else [target]
        if not matches or not Path(matches[0]).exists():
            missing.append(target)
            continue
        for match in map(Path, matches):
            if _is_folder_of_runs(match):
                # a sweep folder, or a multi-seed run folder (`train.seeds`): its members
                folders.append(read_folder(match))
                paths += folders[-1].members
            elif (match / runs.CONFIG).exists() or (match / runs.METRICS_FILE).exists():
                paths.append(match)
            elif match.is_dir():
                # a folder of runs (e.g. runs/): its run folders, and the members of the
                # sweep and multi-seed folders among them
                for child in sorted(match.iterdir()):
                    if _is_folder_of_runs(child):
                        paths += read_folder(child).members
                    elif (child / runs.CONFIG).exists():
                        paths.append(child)
    if missing:
        raise CompareError(f"not found: {', '.join(missing)}; give run folders, sweep folders or globs")
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    if not unique:
        raise CompareError("no run folders among: " + ", ".join(targets))
    return [load_record(p) for p in unique], folders
