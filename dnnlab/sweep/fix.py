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
its training split) the accuracies are balanced accuracies; under `data.task: regression` they
are R^2, and a failed-training fix may show its gain on the training or the validation R^2. A run that had already solved its task
(`diagnose.solved`) is never "fixed": nothing was broken. The noise is `compare`'s: the largest
of half a point, the seeds' spread and 1.96 standard errors of the split sizes. Imports no JAX
until a member trains, or a range test runs: when the cause is a learning rate (lr-too-high,
lr-too-low, plateau), each remedy that sets one gets the rate a range test finds for it
(`dnnlab.lr_find`) instead of the table's guess: with `lr_find` True, or by default when the test
is cheap (`LR_FIND_SHARE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dnnlab import baselines, runs
from dnnlab.compare import Group, load_record, shift
from dnnlab.config import ConfigError, apply_overrides, dump_yaml, read_yaml, safe_yaml, validate
from dnnlab.diagnose import LR_CAUSES  # the causes whose remedies' rates a range test measures
from dnnlab.sweep.grid import Sweep, SweepError, override
from dnnlab.tables import count

LOSS_TOLERANCE = 0.01  # a validation loss must fall by more than 1% of the control's to count
FIXED_CONFIG = "fixed.yaml"
# by default the range tests run when they would add at most this share to the time the remedies
# train, reckoned from the run's own wall time and LR_FIND_SECONDS a test
LR_FIND_SHARE = 0.25
# a range test's cost, compiling included, on 2 CPU cores: `dnnlab fix` of an lr-too-low quickstart
# run (SGD 1e-4; two remedies, each with a test) took 2.4-5.2 s more with --lr-find than without
# on fresh caches (docs/diagnosis.md); the tests themselves run in a fraction of a second
LR_FIND_SECONDS = 2.5
LR_FIND_FOLDER = "lr-find"  # in the fix folder: lr-find/remedy-<i>/lr_find.{json,png}


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
    measure: str = "accuracy"  # what train and val hold: accuracy, balanced_accuracy on imbalanced data, or r2

    def to_dict(self) -> dict[str, Any]:
        return {
            "remedy": self.remedy, "command": runs.set_options(self.remedy["sets"]),
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
    lr_find: list[dict[str, Any]] = field(default_factory=list)  # the range tests behind the remedies' rates
    lr_find_note: Optional[str] = None  # why no range test ran, when one could have

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
    problem = runs.run_folder_problem(run_dir)
    if problem is not None:
        raise FixError(problem)
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
        value = safe_yaml(text, key)
        out[key] = float(value) if isinstance(value, str) and _is_float(value) else value
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plan(
    run_dir: Path, out: Path, *, top: int = 3, seeds: Optional[int] = None, epochs: Optional[int] = None,
    lr_find: Optional[bool] = None,
) -> Fix:
    """Read the run's diagnosis and create the sweep of its top remedies (nothing trains yet).

    Args:
        lr_find: when the cause is a learning rate (LR_CAUSES), measure each remedy's rate with
            a range test (True), never (False), or when it is cheap (None: `LR_FIND_SHARE`).
    A good-fit run gets a Fix without a sweep. Raises FixError for a run that cannot be fixed.
    """
    run_dir = Path(run_dir)
    control, config_path, diagnosis = _control(run_dir)
    inputs = _inputs(run_dir, control)
    fix = Fix(run_dir, diagnosis.get("verdict", "?"))
    remedies = diagnosis.get("remedies") or []
    if fix.verdict == "good-fit" or not remedies:
        return fix
    base, control_seeds = _remedy_base(config_path, inputs, epochs, seeds)
    remedies = remedies[:top]
    found: list[tuple[dict[str, Any], Any]] = []
    if lr_find is not False and set(diagnosis.get("causes") or []) & set(LR_CAUSES):
        remedies, found = _found_rates(fix, base, remedies, lr_find, control, seeds or control_seeds)
    variants = []
    for remedy in remedies:
        variant = _variant(remedy)
        try:
            validate(apply_overrides(base, [override(k, v) for k, v in variant.items()]))
        except ConfigError as exc:
            fix.skipped.append(f"{' '.join(remedy.get('sets') or [remedy['set']])}: {str(exc).splitlines()[0]}")
            continue
        variants.append(variant)
    if not variants:
        raise FixError(f"{run_dir}: {'the top remedy gives no' if top == 1 else f'none of the top {top} remedies gives a'} valid config: " + "; ".join(fix.skipped))
    name = str(base.get("name") or "run")
    fix.sweep = Sweep.create(out, f"{name}-fix", str(config_path), base, {}, seeds or control_seeds, variants)
    for i, (record, result) in enumerate(found):
        from dnnlab import lr_find as finding

        folder = fix.sweep.path / LR_FIND_FOLDER / f"remedy-{i}"
        finding.write(result, folder, str(config_path))
        record["folder"] = str(folder.relative_to(fix.sweep.path))
    fix.sweep.manifest["fix"] = {"run": str(run_dir), "control": [str(p) for p in control], "verdict": fix.verdict, "remedies": remedies,
                                 "lr_find": fix.lr_find, "lr_find_note": fix.lr_find_note}
    fix.sweep.save()
    return fix


def _remedy_base(
    config_path: Path, inputs: Optional[dict[str, Any]], epochs: Optional[int], seeds: Optional[int]
) -> tuple[dict[str, Any], int]:
    """The remedies' base config: the run's, with its data where the run found them, `epochs`,
    no sweep section nor seeds (and one split for every seed); and the run's seed count."""
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
    return base, control_seeds


def _found_rates(
    fix: Fix, base: dict[str, Any], remedies: list[dict[str, Any]], lr_find: Optional[bool], control: list[Path], seeds: int,
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], Any]]]:
    """The remedies with each learning rate they set replaced by a range test's suggestion on the
    config that remedy trains (its other overrides applied), and the tests ((record, RangeTest)).
    A remedy whose measured rate is the run's own changes nothing and is dropped (noted in
    `fix.skipped`). With `lr_find` None, the tests run only when they are cheap."""
    from dnnlab import lr_find as finding

    if not any(s.startswith("optimizer.lr=") for r in remedies for s in r.get("sets") or [r["set"]]):
        return remedies, []
    current = validate(base)
    if lr_find is None:
        note = _costly_note(control, current.train.epochs, seeds, remedies)
        if note is not None:
            fix.lr_find_note = note
            return remedies, []
    from dnnlab.experiment import ExperimentError, load_data

    out, found, loaded = [], [], {}
    for i, remedy in enumerate(remedies):
        sets = list(remedy.get("sets") or [remedy["set"]])
        if not any(s.startswith("optimizer.lr=") for s in sets):
            out.append(remedy)
            continue
        others = [s for s in sets if not s.startswith("optimizer.lr=")]
        try:
            cfg = validate(apply_overrides(base, others))
            key = cfg.data.model_dump_json()
            if key not in loaded:
                loaded[key] = load_data(cfg)
            result = finding.range_test(cfg, loaded[key])
        except (ConfigError, ExperimentError, finding.LrFindError) as exc:
            fix.skipped.append(f"{' '.join(sets)}: no range test ({str(exc).splitlines()[0]}); trained as printed")
            out.append(remedy)
            continue
        if result.suggestion is None:
            fix.skipped.append(f"{' '.join(sets)}: the range test stopped after {count(len(result.lrs), 'step')}, too few to read a "
                               "rate; trained as printed")
            out.append(remedy)
            continue
        lr = finding.shown(result.suggestion)
        was = next(s for s in sets if s.startswith("optimizer.lr=")).partition("=")[2]
        new_sets = [f"optimizer.lr={lr}" if s.startswith("optimizer.lr=") else s for s in sets]
        record = {"remedy": i, "printed": sets, "sets": new_sets, "lr": float(lr), "rule": result.rule, "seconds": result.seconds,
                  "steps": len(result.lrs), "stopped": result.stopped}
        fix.lr_find.append(record)
        found.append((record, result))
        if not others and float(lr) == current.optimizer.lr:
            fix.skipped.append(f"{' '.join(sets)}: a range test finds the run's own rate {lr}: the change would change nothing")
            continue
        out.append({
            **remedy, "set": new_sets[sets.index(remedy["set"])] if remedy["set"] in sets else remedy["set"], "sets": new_sets,
            "why": f"{remedy['why']}; the rate {lr} is a range test's ({result.rule} rule; the table said {was})",
        })
    return _unique(out), found


def _costly_note(control: list[Path], epochs: int, seeds: int, remedies: list[dict[str, Any]]) -> Optional[str]:
    """Why the range tests are left out when they would add more than LR_FIND_SHARE to the
    remedies' training (estimated from the run's own time); None when they are cheap."""
    summary = runs.read_summary(control[0]) or {}
    ran = max(int(summary.get("epochs_run") or 0), 1)
    training = float(summary.get("wall_seconds") or 0.0) * epochs / ran * seeds * len(remedies)
    tests = LR_FIND_SECONDS * sum(any(s.startswith("optimizer.lr=") for s in r.get("sets") or [r["set"]]) for r in remedies)
    if tests > LR_FIND_SHARE * training:
        return (
            f"the remedies' rates are the table's: range tests (about {tests:.0f} s) would add more than "
            f"{LR_FIND_SHARE:.0%} to the remedies' training (about {training:.0f} s, from the run's); --lr-find runs them"
        )
    return None


def _unique(remedies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The remedies without repeats of the same overrides (two rate remedies can measure the same rate)."""
    seen, out = set(), []
    for remedy in remedies:
        key = tuple(sorted(remedy.get("sets") or [remedy["set"]]))
        if key not in seen:
            seen.add(key)
            out.append(remedy)
    return out


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
    fix.lr_find, fix.lr_find_note = info.get("lr_find") or [], info.get("lr_find_note")
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
            f"{runs.set_options(winner.remedy['sets'])} made it {', '.join(v or '?' for v in winner.verdicts)}.\n"
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
    if control.regression:  # data.task: regression: the R^2
        return "r2"
    share = rec.config.get("diagnosis.imbalance_share", 0.7) if rec else 0.7
    return "balanced_accuracy" if rec and baselines.of_summary(rec.summary).imbalanced(share) else "accuracy"


def _judge_one(
    verdict: str, remedy: dict[str, Any], control: Group, group: Group, members: list[dict], solved: bool = False
) -> Result:
    measure = measure_of(control)
    train, val = shift(control, group, "train", measure), shift(control, group, "val", measure)  # the one judge of the noise
    (cl, _), (rl, _) = control.stat("val_loss"), group.stat("val_loss")
    verdicts = [r.verdict for r in group.runs]
    status = [r.status for r in group.runs] or [m["status"] for m in members]
    finished = bool(group.runs) and all(s in runs.FINISHED for s in status)
    trains = finished and not any(v in ("failed-training", "diverged") for v in verdicts)
    up_train, up_val, down_val = train.call == 1, val.call == 1, val.call == -1
    loss_down = rl is not None and cl is not None and rl < cl * (1 - LOSS_TOLERANCE)
    if not finished:
        fixed, words = False, f"did not finish ({', '.join(status)})"
    elif solved:  # a solved task is not made better by a change of verdict
        fixed, words = False, "nothing to fix: the run had already solved its task"
    elif verdict == "diverged":  # the control has no metrics to beat: training at all is the fix
        fixed = trains
        words = "trains now" if fixed else "still does not train"
    elif verdict == "failed-training":
        # under regression the training or the validation R^2 may show the gain
        fixed = trains and (up_train or (measure == "r2" and up_val))
        words = "trains now" if fixed else ("still does not train" if not trains else "no gain on training beyond the noise")
    elif verdict == "undertrained":
        fixed = trains and ("undertrained" not in verdicts or up_val)
        words = "converges now" if fixed else "still undertrained"
    else:  # overfitting
        fixed = loss_down and not down_val
        words = "generalizes better" if fixed else (
            "validation accuracy fell beyond the noise" if down_val else "validation loss not lower beyond 1%"
        )
    return Result(remedy, [r.path for r in group.runs], verdicts, status, (train.a, train.b, train.noise), (val.a, val.b, val.noise),
                  (cl, rl), fixed, words, measure)
