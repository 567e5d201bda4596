"""Runs grouped into configurations: the keys their configs differ in, the groups of seeds of one
configuration (`Group`: the mean and spread over its seeds, its split sizes, its baselines), and
the pairs of groups that differ along one key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from dnnlab import baselines, runs
from dnnlab.compare.records import RunRecord, lower_is_better

IGNORED_KEYS = ("name", "seed")  # seeds of one config are aggregated; names differ per member (logging.* is output only)

_num = runs.is_number


def show(v: Any) -> str:
    """A key's value as the tables and verdicts write it (`1e-03`, not `0.001000`)."""
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class Group:
    """Runs that differ only in their seed (and name)."""

    values: dict[str, Any]  # the differing keys' values
    runs: list[RunRecord]

    @property
    def label(self) -> str:
        if not self.values:
            return self.runs[0].label
        return ", ".join(f"{k.split('.')[-1]}={show(v)}" for k, v in self.values.items())

    def size(self, split: str, measure: str = "accuracy") -> Optional[int]:
        """Examples in `split` (train, val or test), from the summaries; for balanced accuracy,
        the number of classes times the smallest class's examples (its noise is the rarest
        class's)."""
        if measure == "balanced_accuracy":
            counts = [((r.summary.get("data") or {}).get("class_counts") or {}).get(split) for r in self.runs]
            sizes = [len(c) * min(n for n in c if n > 0) for c in counts if isinstance(c, list) and any(n > 0 for n in c)]
        else:
            sizes = [(r.summary.get("data") or {}).get(split) for r in self.runs]
        sizes = [n for n in sizes if isinstance(n, int) and n > 0]
        return min(sizes) if sizes else None

    def baselines(self) -> baselines.Baselines:
        """The first run's baselines (`baselines.of_summary`): the seeds of a group share their data."""
        return baselines.of_summary(self.runs[0].summary if self.runs else {})

    @property
    def regression(self) -> bool:
        return bool(getattr(self.baselines(), "regression", False))

    def fit(self) -> tuple[Optional[float], Optional[float], bool]:
        """(the kept model's training fit measure, its skill, whether it is poor): what each run's
        own verdict reads (`diagnose`), with the group's `diagnosis.poor_train_margin` (under
        regression the R^2, poor below `diagnosis.poor_train_r2`)."""
        base = self.baselines()
        if self.regression:
            value = self.stat("train_r2")[0]
            limit = self.runs[0].config.get("diagnosis.poor_train_r2", 0.3) if self.runs else 0.3
            return value, value, value is not None and value < limit
        value = self.stat(f"train_{base.fit_metric}")[0]
        skill = base.accuracy_skill(value)
        margin = self.runs[0].config.get("diagnosis.poor_train_margin", 0.5) if self.runs else 0.5
        target = self.runs[0].config.get("diagnosis.target_train_accuracy") if self.runs else None
        poor = value is not None and (value < target if _num(target) else skill < margin)
        return value, skill, poor

    def stat(self, metric: str) -> tuple[Optional[float], float]:
        """Mean and standard deviation of the kept model's `metric` over the seeds that
        finished (`runs.seed_stats`: diverged, interrupted and killed runs are left out)."""
        mean, std, _ = runs.seed_stats([r.summary for r in self.runs], metric)
        return mean, std


def best(groups: list[Group], metric: str) -> Optional[Group]:
    """The group with the best mean `metric` (the first of equals); None when none has one."""
    scored = [g for g in groups if g.stat(metric)[0] is not None]
    if not scored:
        return None
    sign = -1 if lower_is_better(metric) else 1
    return max(scored, key=lambda g: sign * g.stat(metric)[0])


def differing_keys(records: list[RunRecord]) -> list[str]:
    keys: list[str] = []
    for rec in records:
        keys += [k for k in rec.config if k not in keys]
    return [
        k for k in keys
        if k not in IGNORED_KEYS and not k.startswith(("sweep", "logging.")) and len({json.dumps(r.config.get(k), sort_keys=True) for r in records if r.config}) > 1
    ]


def group(records: list[RunRecord], keys: list[str]) -> list[Group]:
    groups: dict[str, Group] = {}
    for rec in records:
        values = {k: rec.config.get(k) for k in keys}
        ident = json.dumps(values, sort_keys=True, default=str) if rec.config else f"unreadable:{rec.path}"
        groups.setdefault(ident, Group(values, [])).runs.append(rec)
    return list(groups.values())


def _determined_by(groups: list[Group], key: str, other: str) -> bool:
    """True when `other`'s value is a function of `key`'s across the groups (they vary together,
    as the keys of a sweep variant do)."""
    seen: dict[str, str] = {}
    for g in groups:
        k = json.dumps(g.values.get(key), sort_keys=True, default=str)
        v = json.dumps(g.values.get(other), sort_keys=True, default=str)
        if seen.setdefault(k, v) != v:
            return False
    return True


def pairs(groups: list[Group], keys: list[str], metric: str) -> list[tuple[Group, Group, str, list[str]]]:
    """(A, B, key, keys that vary with it) for groups that differ along one key (keys that vary
    together, like a variant's, count as one): numeric keys pair adjacent values (B the larger);
    other keys pair each value with the best one on `metric` (A the best)."""
    out = []
    done: set[str] = set()
    for key in keys:
        if key in done:
            continue
        along = [k for k in keys if k != key and _determined_by(groups, key, k)]
        done.update(k for k in along if _determined_by(groups, k, key))
        others = [k for k in keys if k != key and k not in along]
        slices: dict[str, list[Group]] = {}
        for g in groups:
            slices.setdefault(json.dumps({k: g.values.get(k) for k in others}, sort_keys=True, default=str), []).append(g)
        for members in slices.values():
            if len(members) < 2:
                continue
            if all(_num(g.values.get(key)) for g in members):
                ordered = sorted(members, key=lambda g: g.values[key])
                out += [(a, b, key, along) for a, b in zip(ordered, ordered[1:])]
            else:
                top = best(members, metric)
                if top is not None:
                    out += [(top, g, key, along) for g in members if g is not top]
    return out
