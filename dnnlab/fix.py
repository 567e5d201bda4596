"""`dnnlab fix`: the recipe's loop closed. Diagnose, apply the top remedies, measure, keep what worked.

The remedies of a run's diagnosis are trained as variants of the run's own config (same data
split, same seed or seeds) in an ordinary sweep folder, so `compare`, `diagnose` and resuming
work on it; the original run is the control. A remedy fixed the problem when:

- failed-training or diverged: the variant trains (its verdict is neither failed-training nor
  diverged) and its training accuracy rose beyond the noise;
- undertrained: its verdict is no longer undertrained (nor failed or diverged), or its
  validation accuracy rose beyond the noise;
- overfitting: the kept model's validation loss fell by more than `LOSS_TOLERANCE` and its
  validation accuracy did not fall beyond the noise.

On imbalanced data (the control's largest class holds more than `diagnosis.imbalance_share` of
its training split) the accuracies are balanced accuracies. A run that had already solved its task
(`diagnose.solved`) is never "fixed": nothing was broken. The noise is `compare`'s: the largest
of half a point, the seeds' spread and 1.96 standard errors of the split sizes. Imports no JAX
until a member trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from dnnlab import baselines, runs
from dnnlab.compare import Group, load_record, tolerance
from dnnlab.config import ConfigError, apply_overrides, dump_yaml, read_yaml, validate
from dnnlab.sweep import Sweep, SweepError, override

LOSS_TOLERANCE = 0.01  # a validation loss must fall by more than 1% of the control's to count
FIXED_CONFIG = "fixed.yaml"


class FixError(Exception):
    """A run that cannot be fixed as asked; `str()` is the message for the user."""


@dataclass
class Result:
    """One remedy, trained and judged against the control."""

    remedy: dict[str, Any]  # as in the diagnosis: set, sets, why
    members: list[Path]
    verdicts: list[Optional[str]]
    status: list[str]
    train: tuple[Optional[float], Optional[float], float]  # control, remedy, tolerance
    val: tuple[Optional[float], Optional[float], float]
    val_loss: tuple[Optional[float], Optional[float]]
    fixed: bool
    words: str
    measure: str = "accuracy"  # what train and val hold: accuracy, or balanced_accuracy on imbalanced data

    def to_dict(self) -> dict[str, Any]:
        return {
            "remedy": self.remedy, "command": runs.shell_command(*(w for s in self.remedy["sets"] for w in ("--set", s))),
            "members": [str(p) for p in self.members], "verdicts": self.verdicts, "status": self.status,
            "train_accuracy": {"control": self.train[0], "remedy": self.train[1], "tolerance": self.train[2]},
            "val_accuracy": {"control": self.val[0], "remedy": self.val[1], "tolerance": self.val[2]},
            "val_loss": {"control": self.val_loss[0], "remedy": self.val_loss[1]},
            "fixed": self.fixed, "words": self.words, "measure": self.measure,
        }


@dataclass
class Fix:
    run_dir: Path
    verdict: str
    sweep: Optional[Sweep] = None
    results: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # remedies whose config is invalid
    fixed_config: Optional[Path] = None

    @property
    def winner(self) -> Optional[Result]:
        fixed = [r for r in self.results if r.fixed]
        return max(fixed, key=lambda r: (r.val[1] or 0.0, -(r.val_loss[1] or 0.0))) if fixed else None


def _control(run_dir: Path) -> tuple[list[Path], Path, dict[str, Any]]:
    """(the control's run folders, its config file, its diagnosis) for a run or multi-seed folder."""
    found = None
    try:
        found = runs.read_manifest(run_dir)
    except ValueError as exc:
        raise FixError(str(exc)) from None
    if found and found[0] == runs.SWEEP_MANIFEST:
        raise FixError(f"{run_dir}: a sweep folder; give one of its members, or `dnnlab fix` a run folder")
    members = runs.member_dirs(run_dir, found[1]) if found else [run_dir]
    if not (run_dir / runs.CONFIG).exists():
        raise FixError(f"{run_dir}: not a run folder (no {runs.CONFIG})")
    summaries = []
    for member in members:
        try:
            history, cfg, summary = runs.load_run(member)
        except (ConfigError, ValueError, OSError) as exc:
            raise FixError(str(exc)) from None
        if not summary.get("status"):
            raise FixError(f"{member}: the run never finished (no summary.json): rerun it before fixing it")
        if not isinstance(summary.get("diagnosis"), dict):
            from dnnlab.diagnose import diagnose

            summary = {**summary, "diagnosis": diagnose(history, cfg, summary).to_dict()}
        summaries.append(summary)
    # the first seed's diagnosis speaks for the run: the seeds share their config
    return members, run_dir / runs.CONFIG, summaries[0]["diagnosis"]


def _inputs(run_dir: Path, control: list[Path]) -> Optional[dict[str, Any]]:
    """What the run started with (its inputs.json), once its config.yaml and data are known to be
    those (`experiment.check_inputs`, for the run and each of its seeds); FixError otherwise."""
    from dnnlab.experiment import ExperimentError, check_inputs

    try:
        inputs = check_inputs(run_dir)
        for member in control:
            if member != run_dir:
                check_inputs(member)
    except ExperimentError as exc:
        raise FixError(str(exc)) from None
    return inputs


def _variant(remedy: dict[str, Any]) -> dict[str, Any]:
    """A remedy's overrides as a sweep variant: {key: value}."""
    out = {}
    for setting in remedy.get("sets") or [remedy["set"]]:
        key, _, text = setting.partition("=")
        value = yaml.safe_load(text)
        out[key] = float(value) if isinstance(value, str) and _is_float(value) else value
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plan(run_dir: Path, out: Path, *, top: int = 3, seeds: Optional[int] = None, epochs: Optional[int] = None) -> Fix:
    """Read the run's diagnosis and create the sweep of its top remedies (nothing trains yet).

    A good-fit run gets a Fix without a sweep. Raises FixError for a run that cannot be fixed.
    """
    run_dir = Path(run_dir)
    control, config_path, diagnosis = _control(run_dir)
    inputs = _inputs(run_dir, control)
    fix = Fix(run_dir, diagnosis.get("verdict", "?"))
    remedies = diagnosis.get("remedies") or []
    if fix.verdict == "good-fit" or not remedies:
        return fix
    try:
        base = read_yaml(config_path)
    except ConfigError as exc:
        raise FixError(str(exc)) from None
    for f in (inputs or {}).get("data", {}).get("files", []):  # the data where the run found them, from any folder
        if f["key"] in ("data.path", "data.test_path") and Path(f["path"]).exists():
            base = apply_overrides(base, [f"{f['key']}={json.dumps(f['path'])}"])
    train = dict(base.get("train") or {})
    control_seeds = int(train.pop("seeds", 1) or 1)
    if epochs is not None:
        train["epochs"] = epochs
    base = {**{k: v for k, v in base.items() if k != "sweep"}, "train": train}
    if control_seeds > 1 or (seeds or 1) > 1:
        # the seeds of a multi-seed run share the first seed's split: so do the remedies' seeds
        data = dict(base.get("data") or {})
        data.setdefault("split_seed", int(base.get("seed", 0) or 0))
        base["data"] = data
    variants = []
    for remedy in remedies[:top]:
        variant = _variant(remedy)
        try:
            validate(apply_overrides(base, [override(k, v) for k, v in variant.items()]))
        except ConfigError as exc:
            fix.skipped.append(f"{' '.join(remedy.get('sets') or [remedy['set']])}: {str(exc).splitlines()[0]}")
            continue
        variants.append(variant)
    if not variants:
        raise FixError(f"{run_dir}: none of the top {top} remedies gives a valid config: " + "; ".join(fix.skipped))
    name = str(base.get("name") or "run")
    fix.sweep = Sweep.create(out, f"{name}-fix", str(config_path), base, {}, seeds or control_seeds, variants)
    fix.sweep.manifest["fix"] = {"run": str(run_dir), "control": [str(p) for p in control], "verdict": fix.verdict, "remedies": remedies[:top]}
    fix.sweep.save()
    return fix


def resume(fix_dir: Path) -> Fix:
    """The Fix of an existing fix folder (to finish its pending members and judge again)."""
    try:
        sweep = Sweep.open(fix_dir)
    except SweepError as exc:
        raise FixError(str(exc)) from None
    info = sweep.manifest.get("fix")
    if not isinstance(info, dict):
        raise FixError(f"{fix_dir}: a sweep folder, but not one that `dnnlab fix` made")
    return Fix(Path(info["run"]), info.get("verdict", "?"), sweep)


def judge(fix: Fix) -> Fix:
    """Compare every remedy's members with the control; write fixed.yaml for the winner."""
    assert fix.sweep is not None
    info = fix.sweep.manifest["fix"]
    control = Group({}, [load_record(Path(p)) for p in info["control"]])
    remedies = info["remedies"]
    fix.results = []
    for remedy in remedies:
        variant = _variant(remedy)
        members = [m for m in fix.sweep.members if {k: v for k, v in m["params"].items() if k != "seed"} == variant]
        if not members:
            continue  # skipped as invalid
        paths = [fix.sweep.path / m["dir"] for m in members if m.get("dir")]
        group = Group(variant, [load_record(p) for p in paths])
        fix.results.append(_judge_one(fix.verdict, remedy, control, group, members, solved=_solved(info["control"])))
    winner = fix.winner
    if winner is not None:
        base = fix.sweep.manifest["base"]
        raw = apply_overrides(base, list(winner.remedy["sets"]))
        cfg = validate(raw)
        fix.fixed_config = fix.sweep.path / FIXED_CONFIG
        header = (
            f"# {cfg.name}, fixed by dnnlab fix: {fix.run_dir} was {fix.verdict}; "
            f"{runs.shell_command(*(w for s in winner.remedy['sets'] for w in ('--set', s)))} made it {', '.join(v or '?' for v in winner.verdicts)}.\n"
        )
        runs.atomic_write_text(fix.fixed_config, header + dump_yaml(cfg))
    return fix


def _solved(control: list[str]) -> bool:
    """Whether the control (its first seed) had already solved its task (`diagnose.solved`)."""
    from dnnlab.config import ConfigError
    from dnnlab.diagnose import solved

    try:
        history, cfg, summary = runs.load_run(Path(control[0]))
    except (ConfigError, ValueError, OSError, IndexError):
        return False
    return solved(history, cfg, summary)


def measure_of(control: Group) -> str:
    """The accuracy a fix is judged on: balanced accuracy when the control's data are imbalanced."""
    rec = control.runs[0] if control.runs else None
    share = rec.config.get("diagnosis.imbalance_share", 0.7) if rec else 0.7
    return "balanced_accuracy" if rec and baselines.of_summary(rec.summary).imbalanced(share) else "accuracy"


def _judge_one(
    verdict: str, remedy: dict[str, Any], control: Group, group: Group, members: list[dict], solved: bool = False
) -> Result:
    measure = measure_of(control)
    (ct, _), (rt, _) = control.stat(f"train_{measure}"), group.stat(f"train_{measure}")
    (cv, _), (rv, _) = control.stat(f"val_{measure}"), group.stat(f"val_{measure}")
    (cl, _), (rl, _) = control.stat("val_loss"), group.stat("val_loss")
    tol_t, tol_v = tolerance(control, group, "train", measure), tolerance(control, group, "val", measure)
    verdicts = [r.verdict for r in group.runs]
    status = [r.status for r in group.runs] or [m["status"] for m in members]
    finished = bool(group.runs) and all(s in runs.FINISHED for s in status)
    trains = finished and not any(v in ("failed-training", "diverged") for v in verdicts)
    up_train = rt is not None and ct is not None and rt - ct > tol_t
    up_val = rv is not None and cv is not None and rv - cv > tol_v
    down_val = rv is not None and cv is not None and cv - rv > tol_v
    loss_down = rl is not None and cl is not None and rl < cl * (1 - LOSS_TOLERANCE)
    if not finished:
        fixed, words = False, f"did not finish ({', '.join(status)})"
    elif solved:  # a solved task is not made better by a change of verdict
        fixed, words = False, "nothing to fix: the run had already solved its task"
    elif verdict == "diverged":  # the control has no metrics to beat: training at all is the fix
        fixed = trains
        words = "trains now" if fixed else "still does not train"
    elif verdict == "failed-training":
        fixed = trains and up_train
        words = "trains now" if fixed else ("still does not train" if not trains else "no gain on training beyond the noise")
    elif verdict == "undertrained":
        fixed = trains and ("undertrained" not in verdicts or up_val)
        words = "converges now" if fixed else "still undertrained"
    else:  # overfitting
        fixed = loss_down and not down_val
        words = "generalizes better" if fixed else (
            "validation accuracy fell beyond the noise" if down_val else "validation loss not lower beyond 1%"
        )
    return Result(remedy, [r.path for r in group.runs], verdicts, status, (ct, rt, tol_t), (cv, rv, tol_v), (cl, rl), fixed, words, measure)
