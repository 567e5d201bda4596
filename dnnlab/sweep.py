"""`dnnlab sweep`: the cartesian product of a grid of overrides (times seeds), each an ordinary
run folder, grouped under `<out>/<name>-sweep-<YYYYMMDD-HHMMSS>-<4 hex>/` with a `sweep.json`
that lists the members, their overrides, folders and outcomes. `--resume` skips the finished.
"""

from __future__ import annotations

import itertools
import json
import math
from functools import partial
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from dnnlab import interrupt, runs
from dnnlab.config import Config, ConfigError, apply_overrides, data_seed, sweep_size, sweep_size_error, validate

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
                value = yaml.safe_load(part) if part else None
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
            plain = yaml.safe_load(value) == value
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
        variants: Optional[list[dict[str, Any]]] = None, *, tune: Optional["Tuning"] = None,
    ) -> "Sweep":
        path = runs.new_run_dir(parent, f"{name}-sweep")
        members = expand_tuned(grid, seeds, int(base.get("seed", 0) or 0), variants, tune) if tune else expand(grid, seeds, int(base.get("seed", 0) or 0), variants)
        manifest = {
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "config_path": config_path,
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
                f"{path}: its grid {job.manifest.get('grid')} x {job.manifest.get('seeds')} seeds differs from "
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
) -> Plan:
    """Merge the YAML's `sweep:` section with `--grid`/`--seeds` (and `--tune`, `--tune-metric`,
    `--tune-seeds`, which replace sweep.tune, tune_metric and tune_seeds); validate every member
    up front.

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
            errors.append(str(exc))
    if errors and len(errors) == len(members):
        raise ConfigError(f"every member of the sweep is invalid; the first:\n{errors[0]}")
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
) -> Plan:
    """The plan to finish the sweep at `path`: its own grid, seeds, variants and tuning from
    sweep.json unless --grid/--seeds/--tune are given (then `Sweep.resume` checks that they match)."""
    if grid_items or seeds is not None or tune_items or tune_metric or tune_seeds or raw.get("sweep") is not None:
        return plan(raw, grid_items, seeds, tune_items=tune_items, tune_metric=tune_metric, tune_seeds=tune_seeds)
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
    sign = 1.0 if metric.endswith("loss") else -1.0
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


LOCK = "sweep.lock"


class _Lock(runs.FolderLock):
    """`sweep.lock` holds the PID of the process running a sweep's members: a second `--resume`
    of the same sweep is refused while that process lives; a dead one's lock is taken over."""

    def __init__(self, folder: Path) -> None:
        def busy(pid: int) -> SweepError:
            if not pid:
                return SweepError(f"{Path(folder) / LOCK}: cannot take the lock")
            return SweepError(f"{Path(folder)}: process {pid} is running this sweep ({LOCK}); wait for it or stop it")

        super().__init__(folder, LOCK, busy)


MemberHook = Callable[[dict[str, Any]], None]


def run(
    sweep: Sweep, *, on_start: Optional[MemberHook] = None, on_end: Optional[MemberHook] = None,
    workers: Optional[int] = None, ray: Optional[str] = None, on_warning: Optional[Callable[[str], None]] = None,
) -> None:
    """Run every unfinished member, saving the manifest after each.

    Args:
        workers: run this many members at once, each in its own process (`dnnlab.workers`);
            None runs them one after another in this process. With `ray`, at most this many
            Ray tasks at once (default: one per CPU of the cluster).
        ray: dispatch each member as a Ray task: "local" starts a local Ray cluster, any other
            value is the address of one to join (`ray.init(address=...)`).
        on_warning: told what the workers cannot honour (more workers than cores or devices).

    Whichever way members run, this process alone writes sweep.json and calls the hooks. A
    member that fails (a bad value, missing data, divergence, a crashed worker) is recorded
    and the sweep goes on. Ctrl-C marks the running members interrupted, saves and re-raises:
    the members after them stay pending for `--resume`. In a tuned sweep, a grid point's other
    seeds start once its trials have ended and `resolve` has chosen their value.
    """
    with _Lock(sweep.path), interrupt.deferred():  # Ctrl-C takes effect between compiled calls
        resolve(sweep)  # a tuned sweep stopped after a point's last trial: its seeds are ready
        if ray is not None:
            from dnnlab.workers import RayPool

            _run_parallel(sweep, RayPool(sweep.path, ray, workers, on_warning), on_start, on_end)
        elif workers is not None:
            from dnnlab.workers import Pool

            _run_parallel(sweep, Pool(sweep.path, workers, on_warning), on_start, on_end)
        else:
            _run_pending(sweep, on_start, on_end)


def run_member(
    folder: Path, manifest: dict[str, Any], member: dict[str, Any], cache: dict[str, Any],
    announce: Optional[Callable[[Path], None]] = None, plots: Optional[Callable[[Callable[[], Any]], None]] = None,
) -> dict[str, Any]:
    """Run one member of the sweep in `folder`, or continue it from its saved state.

    The one code path of a member, in this process, in a worker process or in a Ray task.
    Args: the sweep's manifest and the member's record (read, never written); `cache` keeps
    loaded datasets between the members of one process; `announce` is told the run folder as
    soon as it exists; `plots`, when given, is handed the drawing of the member's plots (its
    caller draws them while the next member trains). Returns what sweep.json records: dir,
    status, verdict and causes, or status failed with the error. KeyboardInterrupt propagates;
    the run folder says interrupted.
    """
    from dnnlab import data as datasets
    from dnnlab.experiment import ExperimentError, Shown, execute, finished_outcome, resume

    base, name = manifest["base"], manifest["name"]
    config_name = manifest.get("config_path", "config.yaml")
    shown = Shown(config_name=config_name, announce=announce)
    # an interrupted or killed member with a saved state continues where it stopped
    previous = Path(folder) / member["dir"] if member.get("dir") else None
    try:
        outcome = None
        if previous is not None and ((previous / runs.STATE).exists() or (previous / runs.STATE_PREV).exists()):
            try:
                # None: it had finished, killed before sweep.json said so; it is read back
                outcome = resume(previous, (), shown) or finished_outcome(previous)
            except ExperimentError as exc:
                if exc.code == runs.EXIT_INTERRUPTED:
                    raise KeyboardInterrupt from None
                outcome = None  # a state that cannot be used: the member starts over
            if outcome is not None:
                outcome.complete()
        if outcome is None:
            raw = apply_overrides(base, member["overrides"] + [f"name={name}-{member['index']:03d}"])
            cfg: Config = validate(raw, source=f"member {member['index']}")
            key = json.dumps([cfg.data.model_dump(mode="json"), cfg.seed])
            if key not in cache:
                cache[key] = datasets.load(cfg.data, data_seed(cfg))
            outcome = execute(cfg, cache[key], Path(folder), shown)
            if plots is not None:
                plots(outcome.complete)
            else:
                outcome.complete()
    except (ConfigError, datasets.DataError) as exc:
        return {"status": "failed", "error": str(exc)}
    except Exception as exc:  # a member's crash must not end the sweep
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {
        "dir": outcome.run_dir.name, "status": outcome.summary["status"], "verdict": outcome.diagnosis.verdict,
        "causes": outcome.diagnosis.causes,
    }


def member_folder(sweep: Sweep, member: dict[str, Any]) -> Optional[str]:
    """The run folder of `member` when sweep.json does not name it yet: the newest folder with
    its name that no other member claims (a member that ran where no one reported its folder)."""
    if member.get("dir"):
        return member["dir"]
    claimed = {m.get("dir") for m in sweep.members}
    found = [p.name for p in sweep.path.glob(f"{sweep.manifest['name']}-{member['index']:03d}-*") if p.is_dir() and p.name not in claimed]
    return max(found) if found else None  # the folder names sort by their creation time


def _run_pending(sweep: Sweep, on_start: Optional[MemberHook], on_end: Optional[MemberHook]) -> None:
    cache: dict[str, Any] = {}

    def started(member: dict[str, Any], folder: Path) -> None:
        # the folder is known from the start, so that a killed member can be resumed
        member["dir"] = folder.name
        sweep.save()

    # each member's plots are drawn by a thread while the next member trains (XLA leaves the GIL);
    # all of them are drawn before the sweep returns, whatever ends it
    plots = runs.Background()
    try:
        _run_members(sweep, cache, plots, started, on_start, on_end)
    finally:
        plots.close()


def _draw_later(plots: runs.Background, draw: Callable[[], Any]) -> None:
    plots.submit(partial(_best_effort, draw))


def _best_effort(draw: Callable[[], Any]) -> None:
    try:
        draw()
    except Exception:  # noqa: BLE001 - a plot (or its report.md) must never cost the sweep a member
        pass


def _run_members(
    sweep: Sweep, cache: dict[str, Any], plots: runs.Background, started: Callable[[dict[str, Any], Path], None],
    on_start: Optional[MemberHook], on_end: Optional[MemberHook],
) -> None:
    tried: set[int] = set()
    while True:
        resolve(sweep)  # a tuned point whose trials have ended: its seeds run next
        member = next((m for m in sweep.pending() if m["index"] not in tried), None)
        if member is None:
            break
        tried.add(member["index"])
        member.update(status="running", error=None)
        member.pop("worker", None)
        sweep.save()
        try:
            if on_start:
                on_start(member)
            member.update(run_member(sweep.path, sweep.manifest, member, cache, partial(started, member), partial(_draw_later, plots)))
            if member["status"] == "interrupted":
                raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) stops the sweep, not just this member
        except KeyboardInterrupt:
            member["status"] = "interrupted"
            sweep.save()
            raise
        except Exception as exc:  # a hook's failure is the member's, as a crash would be
            member.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        sweep.save()
        if on_end:
            on_end(member)


def _run_parallel(sweep: Sweep, pool: Any, on_start: Optional[MemberHook], on_end: Optional[MemberHook]) -> None:
    """The members on `pool` (a `workers.Pool` or `workers.RayPool`), up to `pool.capacity` at
    once; the results are written to sweep.json as they come, by this process alone."""
    todo = list(reversed(sweep.pending()))
    tried = {m["index"] for m in todo}
    running: dict[int, dict[str, Any]] = {}

    def record(events: list[tuple[str, int, dict[str, Any]]]) -> bool:
        """Write the pool's events to the manifest; True when a member ended interrupted."""
        stopped = False
        for kind, index, payload in events:
            member = running.get(index)
            if member is None:
                continue
            if kind == "started":
                member["dir"] = payload["dir"]
                sweep.save()
                continue
            del running[index]
            member.update(payload)
            sweep.save()
            if member["status"] == "interrupted":
                stopped = True  # as in a sequential sweep: no on_end for an interrupted member
            elif on_end:
                on_end(member)
        return stopped

    try:
        while todo or running:
            while todo and len(running) < pool.capacity:
                member = todo.pop()
                member.update(status="running", error=None)
                member.pop("worker", None)
                try:
                    if on_start:
                        on_start(member)
                except Exception as exc:  # a hook's failure is the member's
                    member.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    sweep.save()
                    if on_end:
                        on_end(member)
                    continue
                sweep.save()  # before the member starts: its worker reads sweep.json
                running[member["index"]] = member
                member["worker"] = pool.submit(member["index"])
                sweep.save()
            if record(pool.poll(timeout=0.2)):
                raise KeyboardInterrupt  # a member stopped by a signal stops the sweep, as in order
            if resolve(sweep):  # a tuned point whose trials have ended: its seeds go next
                fresh = [m for m in sweep.pending() if m["index"] not in tried]
                tried.update(m["index"] for m in fresh)
                todo += reversed(fresh)
            interrupt.stop_point()
    except KeyboardInterrupt:
        # the running members stop at their next epoch and write their state; --resume continues them
        record(pool.stop())
        for member in running.values():
            member.update(status="interrupted", dir=member_folder(sweep, member))
        sweep.save()
        raise
    finally:
        pool.close()
