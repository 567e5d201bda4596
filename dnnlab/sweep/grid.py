"""Planning a sweep: grids of overrides, members, the sweep folder and its manifest.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from dnnlab import runs
from dnnlab.config import (
    ConfigError,
    apply_overrides,
    safe_yaml,
    sweep_size,
    sweep_size_error,
    validate,
)
from dnnlab.tables import count

MANIFEST = runs.SWEEP_MANIFEST
DONE = ("completed", "stopped_early", "diverged")  # members that --resume does not run again


class SweepError(Exception):
    """A sweep that cannot start or resume; `str()` is the message for the user."""


def split_values(text: str) -> list[str]:
    """Split `1,2,[512,256],relu` on the commas that are not inside brackets or quotes."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`["model.depth=1,2,3", "model.activation=sigmoid,relu"]` -> {key: [values]} (values as YAML)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise SweepError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. --grid model.depth=1,2,3")
        values = []
        for part in split_values(text):
            try:
                value = safe_yaml(part, key) if part else None
            except yaml.YAMLError:
                value = part
            values.append(_number_or_same(value))
        grid[key] = values
    return grid


def _number_or_same(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` as a string; a sweep over learning rates means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def override(key: str, value: Any) -> str:
    """A `--set` string that parses back to `value`."""
    if isinstance(value, str):
        try:
            plain = safe_yaml(value) == value
        except yaml.YAMLError:
            plain = False
        return f"{key}={value}" if plain else f"{key}={json.dumps(value)}"
    return f"{key}={json.dumps(value)}"


@dataclass
class Member:
    index: int
    params: dict[str, Any]  # the grid point, seed included when seeds > 1
    tune: Optional[dict[str, Any]] = None  # in a tuned sweep: {"point": its grid point's index, "trial": bool}

    @property
    def overrides(self) -> list[str]:
        return [override(k, v) for k, v in self.params.items()]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())


def expand(grid: dict[str, list[Any]], seeds: int, base_seed: int, variants: Optional[list[dict[str, Any]]] = None) -> list[Member]:
    """Every combination of the grid's values (first key slowest) and the variants (sets of
    overrides tried together), each with `seeds` seeds."""
    keys = list(grid)
    members = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for variant in variants or [{}]:
            for s in range(seeds):
                params = {**dict(zip(keys, combo)), **variant}
                if seeds > 1:
                    params["seed"] = base_seed + s
                members.append(Member(len(members), params))
    return members


class Sweep:
    """A sweep folder and its manifest."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path, self.manifest = path, manifest

    @classmethod
    def create(
        cls, parent: Path, name: str, config_path: str, base: dict[str, Any], grid: dict[str, list[Any]], seeds: int,
        variants: Optional[list[dict[str, Any]]] = None, *, tune: Optional["Tuning"] = None, sets: Sequence[str] = (),
    ) -> "Sweep":
        """A new sweep folder under `parent` and its manifest; `sets`: the command's --set
        overrides of `config_path`, in order (`base` has them applied), that each member's
        printed commands start from."""
        path = runs.new_run_dir(parent, f"{name}-sweep")
        members = expand_tuned(grid, seeds, int(base.get("seed", 0) or 0), variants, tune) if tune else expand(grid, seeds, int(base.get("seed", 0) or 0), variants)
        manifest = {
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "config_path": config_path,
            "sets": list(sets),
            "base": base,
            "grid": grid,
            "variants": variants or [],
            "seeds": seeds,
            "members": [{"index": m.index, "params": m.params, "overrides": m.overrides, "dir": None, "status": "pending"} for m in members],
        }
        if tune:
            manifest["tune"] = tune_section(members, tune)
            for record, m in zip(manifest["members"], members):
                record["tune"] = m.tune
                if not m.tune["trial"]:
                    record["status"] = "waiting"  # for its point's trials (`resolve`)
        sweep = cls(path, manifest)
        sweep.save()
        return sweep

    @classmethod
    def resume(cls, path: Path, plan: "Plan") -> "Sweep":
        """Open the sweep folder `path` to finish it; SweepError unless `plan` (the grid, seeds,
        variants and base config of this command) is the one it started with."""
        job = cls.open(path)
        tuned = Tuning.read(job.manifest)
        same = [job.manifest.get("grid"), job.manifest.get("seeds"), job.manifest.get("variants", []), tuned and tuned.settings()]
        if same != json.loads(json.dumps([plan.grid, plan.seeds, plan.variants, plan.tune and plan.tune.settings()])):
            raise SweepError(
                f"{path}: its grid {job.manifest.get('grid')} x {count(job.manifest.get('seeds') or 1, 'seed')} differs from "
                f"this command's {plan.grid} x {plan.seeds}{' (or its tuning)' if tuned or plan.tune else ''}; give the same "
                "--grid/--seeds/--tune to resume"
            )
        if job.manifest.get("base") != json.loads(json.dumps(plan.base)):
            raise SweepError(
                f"{path}: the config (or --set) differs from the one this sweep started with; resume with the "
                "same config, or start a new sweep"
            )
        return job

    @classmethod
    def open(cls, path: Path) -> "Sweep":
        try:
            manifest = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SweepError(f"{path}: not a sweep folder (no {MANIFEST})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepError(f"{path}/{MANIFEST}: unreadable ({exc})") from None
        return cls(Path(path), manifest)

    def save(self) -> None:
        runs.write_manifest(self.path, MANIFEST, self.manifest)

    @property
    def members(self) -> list[dict[str, Any]]:
        return self.manifest["members"]

    def pending(self) -> list[dict[str, Any]]:
        """The members to run now: not finished, and not waiting for their point's tuned value."""
        return [m for m in self.members if m["status"] not in DONE and not self.is_waiting(m)]

    def waiting(self) -> list[dict[str, Any]]:
        """A tuned sweep's seeds whose grid point has no chosen value yet."""
        return [m for m in self.members if self.is_waiting(m)]

    def is_waiting(self, member: dict[str, Any]) -> bool:
        """A seed of a tuned point (tuning on the first seed) that has no value of the key yet."""
        tune = member.get("tune")
        return bool(tune) and not tune.get("trial") and (self.manifest.get("tune") or {}).get("key") not in member["params"]


@dataclass
class Plan:
    base: dict[str, Any]  # the config without its sweep section
    grid: dict[str, list[Any]]
    seeds: int
    variants: list[dict[str, Any]]
    tune: Optional["Tuning"] = None  # the key tuned at every grid point, if any


def plan(
    raw: dict[str, Any], grid_items: list[str], seeds: Optional[int], *, yes: bool = False,
    tune_items: Optional[list[str]] = None, tune_metric: Optional[str] = None, tune_seeds: Optional[str] = None,
    keep_going: bool = False,
) -> Plan:
    """Merge the YAML's `sweep:` section with `--grid`/`--seeds` (and `--tune`, `--tune-metric`,
    `--tune-seeds`, which replace sweep.tune, tune_metric and tune_seeds); validate every member
    up front: ConfigError naming each invalid member, unless `keep_going` and some are valid.

    Raises SweepError or ConfigError.
    """
    # the sweep section is checked by the schema before it is read
    section = validate({"sweep": raw["sweep"]}).sweep.model_dump() if raw.get("sweep") is not None else {}
    base = {k: v for k, v in raw.items() if k != "sweep"}
    grid = dict(section.get("grid") or {})
    grid.update(parse_grid(grid_items))
    seeds = seeds if seeds is not None else int(section.get("seeds", 1))
    if seeds < 1:
        raise SweepError(f"--seeds must be at least 1, got {seeds}")
    variants = list(section.get("variants") or [])
    tuned = parse_grid(tune_items) if tune_items else dict(section.get("tune") or {})
    metric = tune_metric or section.get("tune_metric") or "val_loss"
    mode = tune_seeds or section.get("tune_seeds") or "first"
    if tune_items and len(tuned) > 1:
        raise SweepError(f"--tune: one key at a time; got {', '.join(tuned)}")
    if not grid and seeds == 1 and len(variants) < 2 and not tuned:
        raise SweepError("nothing to sweep: give --grid KEY=V1,V2 (or a sweep: section) or --seeds N")
    checked = validate({**base, "sweep": {"grid": grid, "seeds": seeds, "variants": variants, "tune": tuned, "tune_metric": metric, "tune_seeds": mode}})
    tune = Tuning(*next(iter(tuned.items())), metric, mode) if tuned else None
    if tune and metric.startswith("val_") and checked.data.validation_split == 0:
        raise SweepError(
            f"tuning {tune.key} on {metric} needs a validation split: set data.validation_split (e.g. 0.1), "
            "or tune on a training metric (--tune-metric train_loss)"
        )
    if checked.train.seeds > 1 or any(str(k) == "train.seeds" for k in grid):
        raise SweepError(
            "train.seeds: a sweep runs its seeds as members; use `dnnlab sweep --seeds N` (or sweep.seeds) "
            "and leave train.seeds at 1"
        )
    size = sweep_size(grid, variants, 1) * tune.runs(seeds) if tune else sweep_size(grid, variants, seeds)
    too_many = sweep_size_error(size, yes)
    if too_many:
        raise SweepError(too_many)
    base_seed = int(base.get("seed", 0) or 0)
    errors, members = [], expand_tuned(grid, seeds, base_seed, variants, tune) if tune else expand(grid, seeds, base_seed, variants)
    for member in members:
        try:
            validate(apply_overrides(base, member.overrides))
        except ConfigError as exc:
            errors.append(f"member {member.index:03d} ({member.label}): {exc}")
    # every member is checked before any trains: a typo in one value fails the sweep now, not
    # after the valid members have trained (with keep_going, the valid ones train)
    if errors and (not keep_going or len(errors) == len(members)):
        what = "every member of the sweep is invalid" if len(errors) == len(members) else (
            f"{len(errors)} of {count(len(members), 'member')} of the sweep {'is' if len(errors) == 1 else 'are'} invalid")
        hint = "" if len(errors) == len(members) else "\n(fix the grid, or add --keep-going to train the valid members)"
        raise ConfigError(f"{what}; nothing was trained:\n" + "\n".join(errors) + hint)
    return Plan(base, grid, seeds, variants, tune)


def member_warnings(raw: dict[str, Any]) -> list[str]:
    """`config_warnings` of the sweep's base config (what every member sets), once each."""
    from dnnlab.config import config_warnings

    base = {k: v for k, v in raw.items() if k != "sweep"}
    try:
        return config_warnings(validate(base), base)
    except ConfigError:
        return []  # the plan reports invalid configs


def resume_plan(
    path: Path, raw: dict[str, Any], grid_items: list[str], seeds: Optional[int],
    tune_items: Optional[list[str]] = None, tune_metric: Optional[str] = None, tune_seeds: Optional[str] = None,
    keep_going: bool = False,
) -> Plan:
    """The plan to finish the sweep at `path`: its own grid, seeds, variants and tuning from
    sweep.json unless --grid/--seeds/--tune are given (then `Sweep.resume` checks that they match)."""
    if grid_items or seeds is not None or tune_items or tune_metric or tune_seeds or raw.get("sweep") is not None:
        return plan(raw, grid_items, seeds, tune_items=tune_items, tune_metric=tune_metric, tune_seeds=tune_seeds, keep_going=keep_going)
    manifest = Sweep.open(path).manifest
    return Plan(
        {k: v for k, v in raw.items() if k != "sweep"}, manifest.get("grid") or {}, int(manifest.get("seeds") or 1), manifest.get("variants") or [],
        Tuning.read(manifest),
    )


# ---------------------------------------------------------------- tuning a key per grid point
#
# `--tune optimizer.lr=1e-4,...` (or sweep.tune): every grid point (a combination of the grid and
# a variant) trains at each value of the tuned key: its trials. Once they have all ended, the
# value whose kept models are best on the tuning metric (val_loss by default) is chosen, and the
# point is compared at that value alone. Two ways to spend the seeds (sweep.tune_seeds):
# - first: the trials run on the first seed; the point's other seeds run at the chosen value
#   once it is known. values + seeds - 1 runs per point. The chosen trial is the first seed's run
#   at that value (the same config and seed: the very run a new member would repeat), picked for
#   its validation score, so one noisy seed can pick a rate the other seeds do not share.
# - all: every seed trains at every value and the mean over the seeds decides (a value at which
#   any seed diverged or failed is not chosen); the chosen value's trials are the point's seeds.
#   values x seeds runs per point, and a choice that no single seed's luck makes.


@dataclass(frozen=True)
class Tuning:
    """One key tuned at every grid point: its values, the metric that chooses and which seeds tune."""

    key: str
    values: list[Any]
    metric: str = "val_loss"
    seeds: str = "first"  # first | all (see above)

    def runs(self, seeds: int) -> int:
        """Members per grid point."""
        return len(self.values) * seeds if self.seeds == "all" else len(self.values) + seeds - 1

    def settings(self) -> dict[str, Any]:
        return {"key": self.key, "values": self.values, "metric": self.metric, "seeds": self.seeds}

    @classmethod
    def read(cls, manifest: dict[str, Any]) -> Optional["Tuning"]:
        """The tuning of a sweep.json, or None."""
        t = manifest.get("tune")
        if not isinstance(t, dict) or not t.get("key"):
            return None
        return cls(t["key"], list(t.get("values") or []), t.get("metric") or "val_loss", t.get("seeds") or "first")


def expand_tuned(grid: dict[str, list[Any]], seeds: int, base_seed: int, variants: Optional[list[dict[str, Any]]], tune: Tuning) -> list[Member]:
    """The members of a tuned sweep, point by point (`expand`'s order): each point's trials (at
    every value: the first seed, or every seed), then, tuning on the first seed, its other seeds,
    whose params lack the tuned key until `resolve` chooses its value."""
    members: list[Member] = []
    trial_seeds = range(seeds) if tune.seeds == "all" else range(1)
    for p, point in enumerate(expand(grid, 1, base_seed, variants)):
        for value in tune.values:
            for s in trial_seeds:
                params = {**point.params, tune.key: value, **({"seed": base_seed + s} if seeds > 1 else {})}
                members.append(Member(len(members), params, {"point": p, "trial": True}))
        for s in range(1, seeds) if tune.seeds == "first" else ():
            members.append(Member(len(members), {**point.params, "seed": base_seed + s}, {"point": p, "trial": False}))
    return members


def tune_section(members: list[Member], tune: Tuning) -> dict[str, Any]:
    """sweep.json's `tune`: the settings and, per grid point, its params and (once `resolve` has
    chosen) the chosen value and every value's score."""
    points: dict[int, dict[str, Any]] = {}
    for m in members:
        if m.tune and m.tune["trial"]:
            points.setdefault(m.tune["point"], {"params": {k: v for k, v in m.params.items() if k not in (tune.key, "seed")}, "chosen": None})
    return {**tune.settings(), "points": [points[p] for p in sorted(points)]}


def choose(trials: list[tuple[Any, str, dict[str, Any]]], metric: str) -> tuple[Optional[Any], list[dict[str, Any]]]:
    """The tuned value from a grid point's trials (value, status, the kept model's metrics; one
    or several seeds per value): of the values whose every trial finished (completed or stopped
    early) with a finite `metric`, the one with the lowest mean loss or highest mean accuracy; a
    tie goes to the first. Returns (value or None, each value's score for the record)."""
    sign = 1.0 if metric.endswith(("loss", "_mse", "_mae")) else -1.0
    by_value: dict[str, list[tuple[Any, str, Optional[float]]]] = {}
    for value, status, kept in trials:
        score = kept.get(metric) if status in runs.FINISHED else None
        score = score if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score) else None
        by_value.setdefault(json.dumps(value, sort_keys=True), []).append((value, status, score))
    scores, best = [], None
    for group in by_value.values():
        statuses = [st for _, st, _ in group]
        mean = None if any(x is None for *_, x in group) else sum(x for *_, x in group) / len(group)
        status = statuses[0] if len(set(statuses)) == 1 else ", ".join(f"{statuses.count(st)} {st}" for st in dict.fromkeys(statuses))
        scores.append({"value": group[0][0], "status": status, metric: mean, "seeds": len(group)})
        if mean is not None and (best is None or sign * mean < sign * best[1]):
            best = (group[0][0], mean)
    return (best[0] if best else None), scores


def resolve(sweep: Sweep) -> bool:
    """Choose the value of every grid point whose trials have all ended (finished, diverged or
    failed); tuning on the first seed, give it to the point's waiting seeds. A point with no
    value to choose (no value's trials all finished) marks its seeds failed (a --resume runs its
    failed trials again and chooses then). Returns True when sweep.json changed (it is saved)."""
    tune = sweep.manifest.get("tune")
    if not isinstance(tune, dict):
        return False
    key, metric, changed = tune["key"], tune["metric"], False
    for p, point in enumerate(tune["points"]):
        if point.get("chosen") is not None:
            continue
        trials = [m for m in sweep.members if (m.get("tune") or {}).get("point") == p and m["tune"]["trial"]]
        seeds = [m for m in sweep.members if (m.get("tune") or {}).get("point") == p and not m["tune"]["trial"]]
        if any(m["status"] not in DONE + ("failed",) for m in trials):
            continue
        value, scores = choose([(m["params"][key], m["status"], _kept(sweep.path, m)) for m in trials], metric)
        if point.get("scores") != scores:
            point["scores"], changed = scores, True
        if value is None:
            for m in seeds:
                if m["status"] != "failed":
                    m.update(status="failed", error=f"no value of {key} to run at: no value's trials all finished with a {metric}")
            continue
        point["chosen"], changed = value, True
        for m in trials:
            m["tune"]["chosen"] = m["params"][key] == value
        for m in seeds:
            params = {**point["params"], key: value, "seed": m["params"]["seed"]}
            m.update(params=params, overrides=Member(m["index"], params).overrides, status="pending", error=None)
    if changed:
        sweep.save()
    return changed


def _kept(folder: Path, member: dict[str, Any]) -> dict[str, Any]:
    """The kept model's metrics of a member's run folder ({} when it has none)."""
    if not member.get("dir"):
        return {}
    try:
        summary = runs.read_summary(Path(folder) / member["dir"]) or {}
    except (OSError, ValueError):
        return {}
    return runs.kept_metrics(summary)
