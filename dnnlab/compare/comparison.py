"""A comparison: the runs grouped into configurations, the comparative verdict on every pair that
differs along one key, and the whole as compare.json writes it (`Comparison.to_dict`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dnnlab import baselines, runs
from dnnlab.compare.groups import Group, best, differing_keys, group, pairs, show
from dnnlab.compare.judge import CALLS, shift
from dnnlab.compare.records import CompareError, RunRecord, collect
from dnnlab.runs import CLASS_METRICS, METRICS, REGRESSION_METRICS

_num = runs.is_number


def _side(g: Group, key: str, along: list[str]) -> str:
    """`key=value` of one side of a comparison, with the keys that vary along with it."""
    return f"{key}={show(g.values.get(key))}" + "".join(f", {k}={show(g.values.get(k))}" for k in along)


def comparisons(groups: list[Group], keys: list[str], metric: str, shown: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The comparative verdict for every pair of groups that differ along one key; `shown`: keys
    that decide no pairing but are named on each side (a tuned sweep's chosen values)."""
    out = []
    for a, b, key, along in pairs(groups, keys, metric):
        fit = "r2" if a.regression else "accuracy"  # data.task: regression compares R^2
        train, val = shift(a, b, "train", fit), shift(a, b, "val", fit)
        if train.call is None or val.call is None:
            continue
        (ta, tb, tol_t), (va, vb, tol_v) = (train.a, train.b, train.noise), (val.a, val.b, val.noise)
        code, words = CALLS[(train.call, val.call)]
        named = along + [k for k in shown if k not in along]
        # whether each side trained, on the skill scale each run's own verdict uses
        (_, skill_a, poor_a), (_, skill_b, poor_b) = a.fit(), b.fit()
        untrained = [side for side, poor in ((_side(b, key, named), poor_b), (_side(a, key, named), poor_a)) if poor]
        if untrained:
            words += f"; {' and '.join(untrained)} did not fit {'its' if len(untrained) == 1 else 'their'} training set"
        context = ", ".join(f"{k}={show(a.values.get(k))}" for k in keys if k != key and k not in along)
        out.append({
            "key": key, "with": along, "a": show(a.values.get(key)), "b": show(b.values.get(key)), "context": context,
            "train": [ta, tb], "val": [va, vb], "tolerance": {"train": tol_t, "val": tol_v}, "call": code,
            "train_skill": [skill_a, skill_b], "trained": [not poor_a, not poor_b],
            "text": (
                f"{_side(b, key, named)} vs {_side(a, key, named) if named else show(a.values.get(key))}"
                f"{f' ({context})' if context else ''}: "
                f"train {tb:.3f} vs {ta:.3f}{'' if fit == 'r2' else _skills(skill_b, skill_a)}, validation {vb:.3f} vs {va:.3f}: {words}"
            ),
        })
    return out


def _skills(b: Optional[float], a: Optional[float]) -> str:
    """` (skill 0.97 vs 0.00)`, the training fit on the skill scale, when both are known."""
    return "" if a is None or b is None else f" (skill {round(b, 2) + 0.0:.2f} vs {round(a, 2) + 0.0:.2f})"


@dataclass
class Comparison:
    records: list[RunRecord]
    keys: list[str]
    groups: list[Group]
    metric: str
    comparisons: list[dict[str, Any]]
    orphans: list[Path] = field(default_factory=list)  # run folders inside a sweep that its manifest does not list
    tuning: list[dict[str, Any]] = field(default_factory=list)  # each tuned sweep's `tune` (`tuning`)

    @property
    def reference(self) -> Optional[dict[str, Any]]:
        """The linear reference when every run that has one shares it (same examples), else None."""
        refs = [r.summary.get("reference") for r in self.records if isinstance(r.summary.get("reference"), dict)]
        if not refs or len(refs) != len(self.records):
            return None
        shared = {json.dumps([x.get("train_accuracy"), x.get("val_accuracy"), x.get("train_r2"), x.get("val_r2")]) for x in refs}
        return refs[0] if len(shared) == 1 else None

    @property
    def fit(self) -> str:
        """The measure of fit the tables show: accuracy, or r2 when the runs are regressions."""
        return "r2" if self.groups and all(g.regression for g in self.groups) else "accuracy"

    @property
    def imbalanced(self) -> bool:
        """Whether any run's training split is imbalanced (its `diagnosis.imbalance_share`)."""
        return any(
            baselines.of_summary(r.summary).imbalanced(r.config.get("diagnosis.imbalance_share", 0.7)) for r in self.records
        )

    @property
    def best(self) -> Optional[Group]:
        return best(self.groups, self.metric)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for g in self.groups:
            row: dict[str, Any] = {"label": g.label, "values": g.values, "runs": [str(r.path) for r in g.runs], "seeds": len(g.runs)}
            for m in METRICS + CLASS_METRICS + (REGRESSION_METRICS if g.regression else ()):
                mean, std = g.stat(m)
                row[m] = {"mean": mean, "std": std}
            bests = [r.best(self.metric) for r in g.runs]
            row["best"] = {"metric": self.metric, "values": [b[0] for b in bests], "epochs": [b[1] for b in bests]}
            row["final"] = [r.summary.get("final") for r in g.runs]
            row["epochs_run"] = [r.summary.get("epochs_run", runs.epochs_run(r.history)) for r in g.runs]
            row["wall_seconds"] = [r.summary.get("wall_seconds") for r in g.runs]
            row["status"] = [r.status for r in g.runs]
            row["verdicts"] = [r.verdict for r in g.runs]
            row["problems"] = sorted({p for r in g.runs for p in r.problems})
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "metric": self.metric, "differing_keys": self.keys, "best": best.label if best else None,
            "groups": self.rows(), "comparisons": self.comparisons, "reference": self.reference,
            "orphans": [str(p) for p in self.orphans], "tuning": self.tuning,
        }


def compare(targets: list[str], metric: str = "val_accuracy") -> tuple[Comparison, list[Path]]:
    """Load the targets and compare them. Returns (comparison, sweep folders among the targets)."""
    if metric not in METRICS + CLASS_METRICS + REGRESSION_METRICS:
        raise CompareError(f"--metric {metric!r}: choose one of {', '.join(METRICS + CLASS_METRICS + REGRESSION_METRICS)}")
    records, folders = collect(targets)
    if metric == "val_accuracy" and records and all(
        (r.summary.get("data") or {}).get("task") == "regression" for r in records
    ):
        metric = "val_r2"  # the default metric, of regression runs
    keys = differing_keys(records)
    tuned = [f.tune for f in folders if f.tune]
    keys += [k for k in dict.fromkeys(t["key"] for t in tuned) if k not in keys]  # the chosen values are shown
    groups = group(records, keys)
    numeric_first = sorted(keys, key=lambda k: not all(_num(g.values.get(k)) for g in groups))
    groups.sort(key=lambda g: [json.dumps(g.values.get(k), sort_keys=True, default=str) if not _num(g.values.get(k)) else f"{g.values[k]:020.6f}" for k in numeric_first])
    compared = {r.path.resolve() for r in records}
    orphans = sorted(child for folder in folders for child in folder.orphans(compared))
    paired = [k for k in keys if k not in {t["key"] for t in tuned}]  # a chosen value follows its configuration
    shown = tuple(k for k in keys if k not in paired)
    comp = Comparison(records, keys, groups, metric, comparisons(groups, paired, metric, shown), orphans, tuned)
    return comp, [f.path for f in folders]
