"""`dnnlab fix`: the diagnosis's top remedies trained and measured against the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dnnlab.commands.common import (
    MlflowOpt,
    WideOpt,
    _acc,
    _escape,
    _fail,
    _log_mlflow,
    _mlflow_ready,
    _print_table,
    _raw_mlflow,
    console,
    err_console,
)
from dnnlab.commands.sweep import _run_members
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_FAILED,
    EXIT_OK,
    shell_command,
)


def fix(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (or a fix folder, to finish it)", show_default=False)],
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the diagnosis's remedies to try")] = 3,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Seeds per remedy (default: the run's)")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs per remedy (default: the run's)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the fix's sweep folder")] = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (compare's shape plus fixed, winner, fixed_config)")] = False,
    lr_find: Annotated[
        Optional[bool],
        typer.Option("--lr-find/--no-lr-find", help="When the cause is a learning rate, measure each remedy's rate with a range test (default: when the test costs at most a quarter of a remedy's steps)"),
    ] = None,
    mlflow: MlflowOpt = None,
    wide: WideOpt = False,
) -> None:
    """Apply the diagnosis's top remedies to RUN_DIR's config, train each, measure them against the
    run, and keep what worked: exit 0 when a remedy fixed the problem, 1 when none did."""
    from dnnlab.sweep import SweepError
    from dnnlab.sweep import fix as fixing

    _mlflow_ready(mlflow)  # before the fix folder is made
    try:
        job = fixing.resume(run_dir) if (run_dir / "sweep.json").exists() else fixing.plan(run_dir, out, top=top, seeds=seeds, epochs=epochs, lr_find=lr_find)
    except (fixing.FixError, SweepError) as exc:
        raise _fail(_escape(str(exc))) from None
    except OSError as exc:
        raise _fail(_escape(f"cannot write the fix folder under {out}: {exc}")) from None
    if job.sweep is None:
        if as_json:
            nothing = {"run": str(run_dir), "verdict": job.verdict, "fixed": None, "winner": None, "fixed_config": None}
            sys.stdout.write(json.dumps(nothing) + "\n")
        else:
            console.print(f"{run_dir}: verdict {job.verdict}: nothing to fix, nothing trained", markup=False)
        raise typer.Exit(EXIT_OK)
    for skipped in job.skipped:
        err_console.print(f"note: remedy skipped, its config is invalid: {skipped}" if "range test" not in skipped else f"note: {skipped}", markup=False)
    if not (quiet or as_json):
        for found in job.lr_find:
            console.print(f"range test for {' '.join(found['printed'])}: lr {found['lr']:g} ({found['rule']} rule, {found['steps']} steps, "
                          f"{found['seconds']:.1f} s; {found.get('folder', '')})", markup=False)
        if job.lr_find_note:
            console.print(f"note: {job.lr_find_note}", markup=False)
    uri = _mlflow_ready(mlflow or _raw_mlflow(job.sweep.manifest.get("base")))
    _run_members(job.sweep, shell_command("dnnlab", "fix", job.sweep.path), quiet=quiet or as_json)
    fixing.judge(job)
    try:
        _report_fix(job, as_json, wide)
    finally:  # after compare.md: the remedies as children of one parent MLflow run
        _log_mlflow(uri, job.sweep.path, shell_command("dnnlab", "fix", job.sweep.path, "--mlflow", uri))


def _report_fix(job, as_json: bool, wide: bool = False) -> None:
    """The fix's table (or JSON) and its exit code."""
    from dnnlab import compare as comparing

    winner = job.winner
    comp, _ = comparing.compare([str(job.sweep.path)])
    comparing.write(comp, job.sweep.path)
    if as_json:
        out = {
            **comp.to_dict(), "run": str(job.run_dir), "verdict": job.verdict,
            "remedies": [r.to_dict() for r in job.results], "skipped": job.skipped,
            "fixed": winner is not None, "winner": winner.to_dict()["command"] if winner else None,
            "fixed_config": str(job.fixed_config) if job.fixed_config else None,
            "lr_find": job.lr_find, "lr_find_note": job.lr_find_note,
        }
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
        raise typer.Exit(EXIT_OK if winner else EXIT_FAILED)
    _print_table(fix_table(job, console.width, wide))
    if winner is None:
        err_console.print(f"no remedy fixed {job.verdict}; the table says what each did ({job.sweep.path})", markup=False)
        raise typer.Exit(EXIT_FAILED)
    console.print(f"fixed by {winner.to_dict()['command']}: wrote {job.fixed_config}", markup=False)
    console.print(f"run it: {shell_command('dnnlab', 'run', job.fixed_config)}", markup=False)
    raise typer.Exit(EXIT_OK)


def fix_table(job, width: int, wide: bool = False):
    """The remedies, measured against the run itself (dnnlab.tables): each remedy and its verdict
    whole; the change of what the verdict is judged on is the last column dropped."""
    from dnnlab import tables

    results = job.results
    measure = results[0].measure if results else "accuracy"
    word = {"balanced_accuracy": "bal acc", "r2": "R^2"}.get(measure, "acc")
    judged = {"failed-training": "train", "diverged": "train", "undertrained": "val", "overfitting": "val loss"}.get(job.verdict, "val")
    first = results[0] if results else None
    remedy = ["(the run itself)"] + [" ".join(r.remedy["sets"]) for r in results]
    verdicts = [job.verdict] + [", ".join(v or s for v, s in zip(r.verdicts, r.status)) or "-" for r in results]
    cols = [tables.Column("remedy", remedy, keep=True, wrap=True), tables.Column("verdict", verdicts, keep=True, wrap=True)]
    for name, pick in (("train", lambda r: r.train), ("val", lambda r: r.val)):
        control = pick(first)[0] if first else None
        short = [tables.number(control)] + [tables.change(pick(r)[1], pick(r)[0], _within(pick(r))) for r in results]
        full = [_acc(control)] + [_delta(*pick(r)) for r in results]
        cols.append(tables.Column(f"{name} {word}", short, full, priority=6 if judged == name else 4 if name == "val" else 3, right=True))
    loss = [first.val_loss[0] if first else None] + [r.val_loss[1] for r in results]
    cols.append(tables.Column("val loss", [tables.number(v) for v in loss], [_acc(v) for v in loss],
                              priority=6 if judged == "val loss" else 2, right=True))
    cols.append(tables.Column("fixed", [""] + [("yes: " if r.fixed else "no: ") + r.words for r in results], keep=True, wrap=True))
    noise = any(c.endswith("*") for c in cols[2].cells + cols[3].cells)
    return tables.render(
        cols, width, title=f"{job.run_dir.name} was {job.verdict}: {tables.count(len(results), 'remedy', 'remedies')}, measured",
        caption="*: a change within the noise" if noise and not wide else "", wide=wide,
        sources=[str(job.sweep.path / "compare.md"), "--json"],
    )


def _within(triple: tuple) -> bool:
    """Whether a remedy's change from the control is within the noise (`compare.beyond`, the one
    judge); a side without a value has no change."""
    from dnnlab.compare import beyond

    control, value, tol = triple
    return beyond(0.0 if control is None or value is None else value - control, tol) == 0


def _delta(control: Optional[float], value: Optional[float], tol: float) -> str:
    """`0.9123 (+0.1234)`, the change marked when it is within the noise."""
    if value is None:
        return "-"
    if control is None:
        return _acc(value)
    d = value - control
    return f"{value:.4f} ({d:+.4f}{', noise' if _within((control, value, tol)) else ''})"
