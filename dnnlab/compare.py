"""`dnnlab compare`: runs side by side, seeds aggregated, and the comparative verdict.

The lecture's warning made automatic: when two runs differ along one key, a run that is worse
on validation AND on training failed to train (it is not overfitting); one that is better on
training but worse on validation overfits relative to the other. Imports no JAX.
"""

from __future__ import annotations

import glob
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from dnnlab import baselines, runs, tables
from dnnlab.config import safe_yaml
from dnnlab.runs import CLASS_METRICS, METRICS, REGRESSION_METRICS

IGNORED_KEYS = ("name", "seed")  # seeds of one config are aggregated; names differ per member (logging.* is output only)
TOLERANCE = 0.005  # accuracy differences below half a point are "the same" ...
# ... and so are those within the seeds' spread or 1.96 two-proportion standard errors of the split sizes


class CompareError(Exception):
    """Nothing to compare; `str()` is the message for the user."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"depth": 2}} -> {"model.depth": 2}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


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


_num = runs.is_number


def load_record(path: Path) -> RunRecord:
    """Whatever a run folder holds; problems are noted, never raised."""
    rec = RunRecord(Path(path))
    cfg_path = rec.path / runs.CONFIG
    try:
        raw = safe_yaml(cfg_path.read_text(encoding="utf-8", errors="replace")) or {}
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


def collect(targets: list[str]) -> tuple[list[RunRecord], list[Path]]:
    """Run folders from run folders, sweep folders (their members) and globs.

    Returns:
        (records, sweep folders among the targets). Raises CompareError when nothing matches.
    """
    paths: list[Path] = []
    sweeps: list[Path] = []
    missing = []
    for target in targets:
        matches = sorted(glob.glob(target)) if any(c in target for c in "*?[") else [target]
        if not matches or not Path(matches[0]).exists():
            missing.append(target)
            continue
        for match in map(Path, matches):
            if _is_folder_of_runs(match):
                # a sweep folder, or a multi-seed run folder (`train.seeds`): its members
                sweeps.append(match)
                paths += _members(match)
            elif (match / runs.CONFIG).exists() or (match / runs.METRICS_FILE).exists():
                paths.append(match)
            elif match.is_dir():
                # a folder of runs (e.g. runs/): its run folders, and the members of the
                # sweep and multi-seed folders among them
                for child in sorted(match.iterdir()):
                    if _is_folder_of_runs(child):
                        paths += _members(child)
                    elif (child / runs.CONFIG).exists():
                        paths.append(child)
    if missing:
        raise CompareError(f"not found: {', '.join(missing)}; give run folders, sweep folders or globs")
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    if not unique:
        raise CompareError("no run folders among: " + ", ".join(targets))
    return [load_record(p) for p in unique], sweeps


def _is_folder_of_runs(path: Path) -> bool:
    return any((path / name).exists() for name in runs.MANIFESTS)


def _members(folder: Path) -> list[Path]:
    """The members a sweep or multi-seed folder's manifest lists; every run folder inside it
    when the manifest cannot be read."""
    try:
        found = runs.read_manifest(folder)
    except ValueError:
        found = None
    if found is None:
        return sorted(p for p in folder.iterdir() if (p / runs.CONFIG).exists())
    manifest = found[1]
    if isinstance(manifest.get("tune"), dict):
        # a tuned sweep: the trials that were not chosen are its tuning, not its configurations
        manifest = {**manifest, "members": [m for m in manifest["members"] if not _unchosen(m)]}
    return runs.member_dirs(folder, manifest)


def _unchosen(member: Any) -> bool:
    tune = member.get("tune") if isinstance(member, dict) else None
    return isinstance(tune, dict) and bool(tune.get("trial")) and tune.get("chosen") is False


def _unchosen_dirs(folder: Path) -> set[str]:
    """The run folders of a tuned sweep's trials that were not chosen (listed, never compared)."""
    try:
        found = runs.read_manifest(folder)
    except ValueError:
        return set()
    members = found[1].get("members") if found else None
    return {m["dir"] for m in members or [] if _unchosen(m) and isinstance(m.get("dir"), str)}


def tuning(folder: Path) -> Optional[dict[str, Any]]:
    """A tuned sweep's tuning (sweep.json's `tune`: key, values, metric, each grid point's scores
    and chosen value), or None for any other folder."""
    try:
        found = runs.read_manifest(folder)
    except ValueError:
        return None
    tune = found[1].get("tune") if found else None
    return tune if isinstance(tune, dict) and tune.get("key") else None


@dataclass
class Group:
    """Runs that differ only in their seed (and name)."""

    values: dict[str, Any]  # the differing keys' values
    runs: list[RunRecord]

    @property
    def label(self) -> str:
        if not self.values:
            return self.runs[0].label
        return ", ".join(f"{k.split('.')[-1]}={_show(v)}" for k, v in self.values.items())

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


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


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


def classify(d_train: float, d_val: float, tol_train: float, tol_val: float) -> tuple[str, str]:
    """A comparative call from the accuracy differences (B minus A): (code, words)."""
    t = 1 if d_train > tol_train else -1 if d_train < -tol_train else 0
    v = 1 if d_val > tol_val else -1 if d_val < -tol_val else 0
    return {
        (-1, -1): ("failed-to-train", "worse on training AND validation: it trains worse, it is not overfitting"),
        (1, -1): ("overfits", "better on training but worse on validation: it overfits relative to the other"),
        (1, 1): ("improves-both", "better on training and validation"),
        (-1, 1): ("generalizes-better", "worse on training, better on validation: less overfitting"),
        (0, -1): ("generalizes-worse", "the same on training, worse on validation"),
        (0, 1): ("generalizes-better", "the same on training, better on validation"),
        (-1, 0): ("trains-worse", "worse on training, the same on validation"),
        (1, 0): ("trains-better", "better on training, the same on validation"),
        (0, 0): ("similar", "the same on training and validation (within the noise)"),
    }[(t, v)]


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


def _pairs(groups: list[Group], keys: list[str], metric: str) -> list[tuple[Group, Group, str, list[str]]]:
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
                scored = [g for g in members if g.stat(metric)[0] is not None]
                if not scored:
                    continue
                sign = -1 if lower_is_better(metric) else 1
                best = max(scored, key=lambda g: sign * g.stat(metric)[0])
                out += [(best, g, key, along) for g in members if g is not best]
    return out


def _noise(pa: float, na: Optional[float], pb: float, nb: Optional[float]) -> float:
    """1.96 standard errors of a difference of two accuracies measured on na and nb examples."""
    if not na or not nb:
        return 0.0
    return 1.96 * math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)


def noise_band(
    a: tuple[float, float, Optional[float]], b: tuple[float, float, Optional[float]], proportion: bool = True
) -> float:
    """The noise of a difference between two means over seeds, each side (mean, standard deviation
    over the seeds, examples it was measured on): the largest of half a point (TOLERANCE, in the
    measure's own units), the seeds' spread (the two standard deviations added), and, for a
    proportion such as an accuracy, 1.96 standard errors of the split sizes (math.inf examples:
    a known constant, such as chance). The one rule of every comparative verdict."""
    (ma, sa, na), (mb, sb, nb) = a, b
    return max(TOLERANCE, sa + sb, _noise(ma, na, mb, nb) if proportion else 0.0)


def _r2_noise(ra: float, na: Optional[float], rb: float, nb: Optional[float]) -> float:
    """1.96 standard errors of a difference of two R^2 measured on na and nb examples: the
    large-sample variance of R^2, 4 R^2 (1 - R^2)^2 / n (R^2 clipped to [0, 1])."""
    if not na or not nb:
        return 0.0
    var = lambda r, n: 4 * min(max(r, 0.0), 1.0) * (1 - min(max(r, 0.0), 1.0)) ** 2 / n  # noqa: E731
    return 1.96 * math.sqrt(var(ra, na) + var(rb, nb))


def tolerance(a: Group, b: Group, split: str, measure: str = "accuracy") -> float:
    """The noise of a difference in `split` accuracy (or `measure`: loss) between two groups:
    `noise_band` of their means and spreads over the seeds. A loss has no split-size term (the
    runs do not record the per-example losses' spread)."""
    (ma, sa), (mb, sb) = a.stat(f"{split}_{measure}"), b.stat(f"{split}_{measure}")
    if ma is None or mb is None:
        return TOLERANCE
    if measure == "r2":  # the seeds' spread and the split sizes, as for an accuracy
        return max(TOLERANCE, sa + sb, _r2_noise(ma, a.size(split), mb, b.size(split)))
    proportion = measure in ("accuracy", "balanced_accuracy")
    return noise_band((ma, sa, a.size(split, measure)), (mb, sb, b.size(split, measure)), proportion=proportion)


def _side(g: Group, key: str, along: list[str]) -> str:
    """`key=value` of one side of a comparison, with the keys that vary along with it."""
    return f"{key}={_show(g.values.get(key))}" + "".join(f", {k}={_show(g.values.get(k))}" for k in along)


def comparisons(groups: list[Group], keys: list[str], metric: str, shown: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The comparative verdict for every pair of groups that differ along one key; `shown`: keys
    that decide no pairing but are named on each side (a tuned sweep's chosen values)."""
    out = []
    for a, b, key, along in _pairs(groups, keys, metric):
        fit = "r2" if a.regression else "accuracy"  # data.task: regression compares R^2
        (ta, _), (tb, _) = a.stat(f"train_{fit}"), b.stat(f"train_{fit}")
        (va, _), (vb, _) = a.stat(f"val_{fit}"), b.stat(f"val_{fit}")
        if None in (ta, tb, va, vb):
            continue
        tol_t, tol_v = tolerance(a, b, "train", fit), tolerance(a, b, "val", fit)
        code, words = classify(tb - ta, vb - va, tol_t, tol_v)
        named = along + [k for k in shown if k not in along]
        # whether each side trained, on the skill scale each run's own verdict uses
        (_, skill_a, poor_a), (_, skill_b, poor_b) = a.fit(), b.fit()
        untrained = [side for side, poor in ((_side(b, key, named), poor_b), (_side(a, key, named), poor_a)) if poor]
        if untrained:
            words += f"; {' and '.join(untrained)} did not fit {'its' if len(untrained) == 1 else 'their'} training set"
        context = ", ".join(f"{k}={_show(a.values.get(k))}" for k in keys if k != key and k not in along)
        out.append({
            "key": key, "with": along, "a": _show(a.values.get(key)), "b": _show(b.values.get(key)), "context": context,
            "train": [ta, tb], "val": [va, vb], "tolerance": {"train": tol_t, "val": tol_v}, "call": code,
            "train_skill": [skill_a, skill_b], "trained": [not poor_a, not poor_b],
            "text": (
                f"{_side(b, key, named)} vs {_side(a, key, named) if named else _show(a.values.get(key))}"
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
        scored = [g for g in self.groups if g.stat(self.metric)[0] is not None]
        if not scored:
            return None
        sign = -1 if lower_is_better(self.metric) else 1
        return max(scored, key=lambda g: sign * g.stat(self.metric)[0])

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
            row["epochs_run"] = [r.summary.get("epochs_run", max(len(r.history) - 1, 0)) for r in g.runs]
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
    records, sweeps = collect(targets)
    if metric == "val_accuracy" and records and all(
        (r.summary.get("data") or {}).get("task") == "regression" for r in records
    ):
        metric = "val_r2"  # the default metric, of regression runs
    keys = differing_keys(records)
    tuned = [t for t in map(tuning, sweeps) if t]
    keys += [k for k in dict.fromkeys(t["key"] for t in tuned) if k not in keys]  # the chosen values are shown
    groups = group(records, keys)
    numeric_first = sorted(keys, key=lambda k: not all(_num(g.values.get(k)) for g in groups))
    groups.sort(key=lambda g: [json.dumps(g.values.get(k), sort_keys=True, default=str) if not _num(g.values.get(k)) else f"{g.values[k]:020.6f}" for k in numeric_first])
    orphans = sorted(
        child for folder in sweeps if folder.is_dir() for child in folder.iterdir()
        if (child / runs.CONFIG).exists() and child.resolve() not in {r.path.resolve() for r in records}
        and child.name not in _unchosen_dirs(folder)
    )
    paired = [k for k in keys if k not in {t["key"] for t in tuned}]  # a chosen value follows its configuration
    shown = tuple(k for k in keys if k not in paired)
    return Comparison(records, keys, groups, metric, comparisons(groups, paired, metric, shown), orphans, tuned), sweeps


# ---------------------------------------------------------------- output


def _mean_curve(runs: list[RunRecord], key: str) -> list[tuple[int, float]]:
    by_epoch: dict[int, list[float]] = {}
    for r in runs:
        for rec in r.history:
            if _num(rec.get(key)):
                by_epoch.setdefault(rec["epoch"], []).append(rec[key])
    n = len(runs)
    return [(e, statistics.fmean(v)) for e, v in sorted(by_epoch.items()) if len(v) == n]


def write_plots(comp: Comparison, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    colours = plt.get_cmap("tab10" if len(comp.groups) <= 10 else "tab20")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    fit = comp.fit
    for i, g in enumerate(comp.groups):
        c = colours(i % colours.N)
        for ax, metric in zip(axes, ("loss", fit)):
            for split, style in (("train", "-"), ("val", "--")):
                pts = _mean_curve(g.runs, f"{split}_{metric}")
                if pts:
                    ax.plot(*zip(*pts), style, color=c, label=g.label if split == "train" else None)
    for ax, metric in zip(axes, ("loss", fit)):
        ax.set_xlabel("epoch")
        ax.set_title(f"{metric}: train solid, validation dashed")
        ax.grid(alpha=0.3)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    runs.write_figure(out / "curves.png", fig)
    plt.close(fig)
    made.append(("curves.png", "Training (solid) and validation (dashed) curves, one colour per configuration (mean over seeds)"))

    tuned = {t["key"] for t in comp.tuning}  # a chosen value is no axis: it follows its configuration
    numeric = [k for k in comp.keys if all(_num(g.values.get(k)) for g in comp.groups) and k not in tuned]
    if numeric and len([k for k in comp.keys if k not in tuned]) <= 2:
        key = numeric[0]
        series_key = next((k for k in comp.keys if k != key and k not in tuned), None)
        series: dict[str, list[Group]] = {}
        for g in comp.groups:
            series.setdefault(_show(g.values.get(series_key)) if series_key else "", []).append(g)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, (name, members) in enumerate(series.items()):
            members.sort(key=lambda g: g.values[key])
            xs = [g.values[key] for g in members]
            c = colours(i % colours.N)
            for split, style in (("train", "-o"), ("val", "--s")):
                stats = [g.stat(f"{split}_{fit}") for g in members]
                ys = [m if m is not None else float("nan") for m, _ in stats]
                ax.errorbar(xs, ys, yerr=[s for _, s in stats], fmt=style, color=c, capsize=3,
                            label=f"{series_key.split('.')[-1] + '=' + name + ', ' if series_key else ''}{'train' if split == 'train' else 'validation'}")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{_FIT_WORD[fit]} (final, kept model)")
        ax.set_title(f"{_FIT_WORD[fit]} against {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        name = f"vs_{key.replace('.', '_')}.png"
        runs.write_figure(out / name, fig)
        plt.close(fig)
        made.append((name, f"Final training and validation {_FIT_WORD[fit]} against {key}"))
    return made


_FIT_WORD = {"accuracy": "accuracy", "r2": "R^2"}


def lower_is_better(metric: str) -> bool:
    """Whether a metric ranks lower first: a loss, an MSE or an MAE (accuracies and R^2 rank higher)."""
    return metric.endswith(("loss", "_mse", "_mae"))


def _cell(mean: Optional[float], std: float, seeds: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 else f"{mean:.4f}"


def metric_words(metric: str) -> str:
    """A metric as a table's header says it: `val acc`, `val bal acc`, `train R^2`, `val MSE`."""
    split, _, measure = metric.partition("_")
    word = {"accuracy": "acc", "balanced_accuracy": "bal acc", "r2": "R^2", "mse": "MSE", "mae": "MAE"}.get(measure, measure)
    return f"{split} {word}"


HEADERS = ("seeds", "epochs run", "wall s", "verdict")  # the table's own columns, besides the metrics


def key_headers(comp: Comparison, taken: tuple[str, ...] = HEADERS) -> list[str]:
    """Each compared key's header: its last part (`depth`), or its last two parts when the last
    alone names more than one key of the runs' configs or another header (`optimizer.name` next
    to the run's `name`, `train.epochs` next to `pretrain.epochs`), else the whole key."""
    known = {k for r in comp.records for k in r.config} | set(comp.keys)

    def tail(key: str, parts: int) -> str:
        return ".".join(key.split(".")[-parts:])

    out = []
    for key in comp.keys:
        for parts in range(1, key.count(".") + 2):
            short = tail(key, parts)
            clash = sum(1 for k in known if k == short or k.endswith("." + short)) > 1 or short in taken
            if not clash or parts == key.count(".") + 1:
                break
        out.append(short)
    return out


def named(comp: Comparison, g: Group) -> str:
    """A configuration by its keys' headers (`key_headers`): `depth=6, optimizer.name=adam`."""
    if not comp.keys:
        return g.label
    return ", ".join(f"{h}={_show(g.values.get(k))}" for k, h in zip(comp.keys, key_headers(comp)))


def columns(comp: Comparison) -> tuple[list[tables.Column], list[int]]:
    """The comparison's table, each cell abbreviated (the terminal) and uncut (compare.md,
    `--wide`), and the rows that are no configuration (the linear reference)."""
    seeds = any(len(g.runs) > 1 for g in comp.groups)
    balanced = comp.metric in CLASS_METRICS or comp.imbalanced
    fit = comp.fit
    cols = [tables.Column(h, [_show(g.values.get(k)) for g in comp.groups], keep=True, fold=True, fold_as=f"{k}={{}}")
            for k, h in zip(comp.keys, key_headers(comp))]
    if seeds:
        cols.append(tables.Column("seeds", [str(len(g.runs)) for g in comp.groups], fold=True, fold_as="{} seeds", priority=2, right=True))
    ranked = {split: 6 if split == "val" else 5 if split == "train" else 3 for split in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        stats = [(g.stat(f"{split}_{fit}"), len(g.runs)) for g in comp.groups]
        cols.append(tables.Column(metric_words(f"{split}_{fit}"), [tables.mean_std(*s, n) for s, n in stats],
                                  [_cell(*s, n) for s, n in stats], priority=ranked[split], right=True))
    if balanced:
        stats = [(g.stat("val_balanced_accuracy"), len(g.runs)) for g in comp.groups]
        cols.append(tables.Column("val bal acc", [tables.mean_std(*s, n) for s, n in stats], [_cell(*s, n) for s, n in stats],
                                  priority=7 if comp.metric in CLASS_METRICS else 4, right=True))
    short, full = [], []
    for g in comp.groups:
        bests = [r.best(comp.metric) for r in g.runs]
        vals = [b[0] for b in bests if b[0] is not None]
        mean = statistics.fmean(vals) if vals else None
        short.append(f"{tables.number(mean)} ({','.join(str(b[1]) for b in bests)})" if vals else "-")
        full.append(f"{mean:.4f} ({', '.join(str(b[1]) for b in bests)})" if vals else "-")
    cols.append(tables.Column(f"best {metric_words(comp.metric)} (epoch)", short, full, priority=1))
    epochs = [[r.summary.get("epochs_run", max(len(r.history) - 1, 0)) for r in g.runs] for g in comp.groups]
    cols.append(tables.Column("epochs run", [str(e[0]) if len(set(e)) == 1 else ",".join(map(str, e)) for e in epochs],
                              [", ".join(map(str, e)) for e in epochs], fold=True, fold_as="{} epochs run", priority=2, right=True))
    walls = [[r.summary.get("wall_seconds") for r in g.runs if _num(r.summary.get("wall_seconds"))] for g in comp.groups]
    cols.append(tables.Column("wall s", [tables.number(statistics.fmean(w)) if w else "-" for w in walls],
                              [f"{statistics.fmean(w):.1f}" if w else "-" for w in walls], priority=0, right=True))
    verdicts = [[r.verdict or r.status for r in g.runs] for g in comp.groups]
    cols.append(tables.Column("verdict", [", ".join(f"{v} x{vs.count(v)}" if vs.count(v) > 1 else v for v in dict.fromkeys(vs)) for vs in verdicts],
                              keep=True, wrap=True))
    ref = comp.reference
    if ref is None:
        return cols, []
    cells = {"seeds": "", "epochs run": str(ref.get("epochs", "-")), "verdict": "reference"}
    cells.update({metric_words(f"train_{fit}"): ref.get(f"train_{fit}"), metric_words(f"val_{fit}"): ref.get(f"val_{fit}"),
                  "val bal acc": ref.get("val_balanced_accuracy")})
    for i, c in enumerate(cols):
        value = ("linear reference" if i == 0 else "") if i < len(comp.keys) else cells.get(c.header, "-")
        short, uncut = (value, value) if isinstance(value, str) else (tables.number(value), _cell(value, 0.0, 1))
        c.cells.append(short)
        if c.full is not None:
            c.full.append(uncut)
    return cols, [len(comp.groups)]


def table_rows(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and uncut rows (compare.md)."""
    cols, _ = columns(comp)
    return [c.header for c in cols], [list(row) for row in zip(*(c.uncut() for c in cols))]


def markdown(comp: Comparison, plots: list[tuple[str, str]]) -> str:
    header, rows = table_rows(comp)
    best = comp.best
    lines = ["# Comparison", "", f"{tables.count(len(comp.records), 'run')} in {tables.count(len(comp.groups), 'configuration')}; "
             f"they differ in: {', '.join(comp.keys) or 'nothing but the seed'}. Metrics are the kept model's "
             f"(the restored best epoch, else the last), averaged over the seeds that finished (diverged, "
             f"interrupted and killed runs are listed, never averaged in); ± is the standard deviation over seeds.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if best:
        lines += ["", f"Best on {comp.metric}: **{named(comp, best)}**."]
    if comp.comparisons:
        lines += ["", "## Comparative verdict", ""] + [f"- {c['text']}" for c in comp.comparisons]
    for t in comp.tuning:
        lines += ["", "## Tuning", "", *tuning_lines(t)]
    if comp.orphans:
        lines += ["", "## Not compared", "", "Run folders that the manifest does not list (a member started over, or a "
                  "copy): never averaged in.", ""] + [f"- {p.name}" for p in comp.orphans]
    problems = sorted({f"{r.label}: {p}" for r in comp.records for p in r.problems})
    if problems:
        lines += ["", "## Incomplete runs", ""] + [f"- {p}" for p in problems]
    for name, caption in plots:
        lines += ["", f"{caption}.", "", f"![{caption}]({name})"]
    return "\n".join(lines) + "\n"


def tuning_lines(tune: dict[str, Any]) -> list[str]:
    """A tuned sweep's tuning as Markdown: per grid point, every value's score, the chosen one in bold."""
    key, metric, values = tune["key"], tune["metric"], tune.get("values", [])
    best = "lowest" if metric.endswith("loss") else "highest"
    how = (f"with every seed, and kept the value whose kept models had the {best} mean {metric} (a value at which a seed "
           "did not finish is never kept)" if tune.get("seeds") == "all" else
           f"on its first seed, and kept the value whose kept model had the {best} {metric}; its other seeds ran at "
           "that value alone")
    lines = [f"Each configuration trained at every {key} in {', '.join(_show(v) for v in values)} {how}. The table "
             "above compares the configurations at their chosen values.", ""]
    for point in tune.get("points", []):
        where = ", ".join(f"{k}={_show(v)}" for k, v in point.get("params", {}).items()) or "the config"
        scores = point.get("scores")
        if not scores:
            lines.append(f"- {where}: not chosen yet")
            continue
        shown = []
        for s in scores:
            value = s.get(metric)
            text = f"{_show(s['value'])}: {value:.4f}" if isinstance(value, (int, float)) else f"{_show(s['value'])}: {s.get('status')}"
            shown.append(f"**{text}**" if point.get("chosen") is not None and s["value"] == point["chosen"] else text)
        chosen = f"chose {_show(point['chosen'])}" if point.get("chosen") is not None else "no value's trials all finished: nothing chosen"
        edge = (point.get("chosen") is not None and len(values) > 2 and all(_num(v) for v in values)
                and point["chosen"] in (min(values), max(values)))
        lines.append(f"- {where}: {chosen} ({'; '.join(shown)})" + (": at the edge of the values, the best may lie beyond them" if edge else ""))
    return lines


def write(comp: Comparison, out: Path) -> list[str]:
    """compare.md, compare.json and the plots into `out`; returns problems (plots not drawn).
    CompareError when `out` is a run folder: its own curves.png would be replaced."""
    if is_run_folder(out):
        raise CompareError(
            f"--out {out} is a run folder: the comparison's curves.png would replace the run's own; give a folder of its own"
        )
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    try:
        plots = write_plots(comp, out)
    except Exception as exc:  # a plot must never cost the comparison
        plots, problems = [], [f"plots not drawn: {type(exc).__name__}: {exc}"]
    runs.atomic_write_text(out / "compare.md", markdown(comp, plots))
    runs.atomic_write_text(out / "compare.json", json.dumps(comp.to_dict(), indent=2, default=str) + "\n")
    return problems


from dnnlab import _callable  # noqa: E402  `dnnlab.compare(...)` is the API's function (dnnlab/__init__.py)

_callable(__name__)
