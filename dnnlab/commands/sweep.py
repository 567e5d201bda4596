"""`dnnlab sweep`: a grid of overrides run as members, then compared.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dnnlab.commands.common import (
    ConfigArg,
    Metric,
    MlflowOpt,
    OverridesCommand,
    SetOpt,
    WideOpt,
    _escape,
    _fail,
    _log_mlflow,
    _mlflow_ready,
    _raw_mlflow,
    console,
    err_console,
)
from dnnlab.commands.inspect import _compare_and_print
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    set_words,
    shell_command,
)
from dnnlab.tables import count


class TuneSeeds(str, Enum):
    """Which seeds of a tuned sweep tune (sweep.tune_seeds)."""

    first = "first"
    all = "all"


class _SweepCommand(OverridesCommand):
    """`--ray` alone means a new local Ray cluster: click options take a value, so a bare
    `--ray` (last, before another option, or before the config file) gets `local`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--":
                break
            nxt = args[i + 1] if i + 1 < len(args) else None
            if arg == "--ray" and (nxt is None or nxt.startswith("-") or nxt.endswith((".yaml", ".yml"))):
                args.insert(i + 1, "local")
                break
        return super().parse_args(ctx, args)


def sweep(
    config: ConfigArg,
    grid: Annotated[
        Optional[list[str]],
        typer.Option("--grid", "-g", help="KEY=V1,V2,... (values parsed as YAML); repeatable: the cartesian product runs"),
    ] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Seeds per grid point (seed, seed+1, ...)")] = None,
    tune: Annotated[
        Optional[list[str]],
        typer.Option("--tune", help="KEY=V1,V2,...: every grid point trains at each value on its first seed, keeps the best by --tune-metric, and runs its other seeds at it (replaces sweep.tune)"),
    ] = None,
    tune_metric: Annotated[Optional[Metric], typer.Option("--tune-metric", help="What picks the tuned value: the trials' kept models' metric (default val_loss; sweep.tune_metric)")] = None,
    tune_seeds: Annotated[Optional[TuneSeeds], typer.Option("--tune-seeds", help="first: tune on the first seed, the others run at the chosen value; all: every seed at every value, the mean decides (default first; sweep.tune_seeds)")] = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the sweep folder")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option("--resume", help="A sweep folder to finish: finished members are skipped")] = None,
    metric: Annotated[Metric, typer.Option("--metric", help="Metric that ranks the runs")] = Metric.val_accuracy,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no line per member")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Run a sweep of more than 10,000 members")] = False,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", "-w", min=1, help="Run N members at once, each in its own process pinned to its share of the cores (or its own GPU); with --ray, at most N tasks at once"),
    ] = None,
    ray: Annotated[
        Optional[str],
        typer.Option("--ray", metavar="[ADDRESS]", help="Run each member as a Ray task: alone, on a new local Ray cluster; with ADDRESS, on that cluster (--out must be on a filesystem every node sees)"),
    ] = None,
    mlflow: MlflowOpt = None,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="Train the valid members even when some are invalid (they are recorded as failed)"),
    ] = False,
    wide: WideOpt = False,
) -> None:
    """Run CONFIG over a grid of overrides (and seeds), then compare the members side by side.

    Every member is validated before any trains: an invalid one fails the sweep (exit 2) unless
    --keep-going. A sweep with a member that failed (an invalid config, a crash) exits 1."""
    tuning = {"tune_items": tune or [], "tune_metric": tune_metric.value if tune_metric else None,
              "tune_seeds": tune_seeds.value if tune_seeds else None, "keep_going": keep_going}
    job, uri = _planned(config, grid, seeds, tuning, set_, out, resume, yes, ray, mlflow)
    hint_words = ["dnnlab", "sweep", config, "--resume", job.path, *set_words(set_)]
    hint_words += (["--workers", workers] if workers else []) + (["--ray", ray] if ray else [])
    hint = shell_command(*hint_words)
    _run_members(job, hint, quiet=quiet, workers=workers, ray=ray)
    failed = [m for m in job.members if m["status"] == "failed"]
    _compare_and_print([str(job.path)], job.path, metric.value, as_json=False, wide=wide)
    _log_mlflow(uri, job.path, shell_command(*hint_words, "--mlflow", uri))  # a parent MLflow run, one child per member
    if failed:
        err_console.print(f"{count(len(failed), 'member')} of {len(job.members)} failed; see {job.path / 'sweep.json'}", markup=False)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _planned(
    config: Path, grid: Optional[list[str]], seeds: Optional[int], tuning: dict[str, Any], set_: Optional[list[str]],
    out: Path, resume: Optional[Path], yes: bool, ray: Optional[str], mlflow: Optional[str],
) -> tuple[Any, Optional[str]]:
    """The sweep planned and its folder made (or the folder of --resume reopened), with the MLflow
    URI, before anything trains; a bad config, plan or folder exits 2."""
    from dnnlab import sweep as sweeps
    from dnnlab.config import ConfigError, apply_overrides, read_yaml

    try:
        if ray is not None:
            from dnnlab.sweep.workers import import_ray

            import_ray(ray)  # before the sweep folder is made: without Ray (or its cluster), nothing is written
        raw = apply_overrides(read_yaml(config), set_ or [])
        for warning in sweeps.member_warnings(raw):
            err_console.print(f"warning: {warning}", markup=False)
        uri = _mlflow_ready(mlflow or _raw_mlflow(raw))  # before the sweep folder is made
        if resume is not None:
            job = sweeps.Sweep.resume(resume, sweeps.resume_plan(resume, raw, grid or [], seeds, **tuning))
        else:
            p = sweeps.plan(raw, grid or [], seeds, yes=yes, **tuning)
            job = sweeps.Sweep.create(out, p.base.get("name", "run"), str(config), p.base, p.grid, p.seeds, p.variants, tune=p.tune, sets=set_ or [])
    except (ConfigError, sweeps.SweepError) as exc:
        raise _fail(_escape(str(exc))) from None
    except OSError as exc:
        raise _fail(_escape(f"cannot write the sweep folder under {out}: {exc}")) from None
    return job, uri


def _run_members(job, resume_hint: str, quiet: bool, workers: Optional[int] = None, ray: Optional[str] = None) -> None:
    """Run a sweep's pending members with a progress bar and one line per member (in this
    process, on `workers` processes, or as Ray tasks); a member run in this process shows its
    epochs too."""
    from dnnlab import sweep as sweeps

    todo = job.pending() + job.waiting()  # a tuned sweep's waiting seeds run once their value is chosen
    if not quiet:
        console.print(f"sweep {job.path}: {count(len(job.members), 'member')}, {len(todo)} to run", markup=False)
    from dnnlab.console import GroupProgress

    # in a terminal the running member's epoch bars sit under the member bar; piped, its epoch
    # lines start with its index
    group = GroupProgress(console)
    if quiet:
        from rich.progress import Progress

        bar = Progress(console=console, disable=True)
    else:
        bar = group.bar
    task = bar.add_task("members", total=len(todo), metrics="")

    def on_start(member: dict) -> None:
        bar.update(task, description=f"member {member['index']:03d} {' '.join(member['overrides'])}")

    def on_end(member: dict) -> None:
        outcome = member.get("verdict") or member.get("error", "")  # the whole error: its did-you-mean too
        if not quiet:
            bar.console.print(f"  {member['index']:03d} {' '.join(member['overrides'])}: {member['status']}, {outcome}", markup=False)
        bar.advance(task)

    def live(member: dict) -> list:
        return [] if quiet else [group.writer(f"member {member['index']:03d}")]

    try:
        with bar:
            sweeps.run(job, on_start=on_start, on_end=on_end, workers=workers, ray=ray, live=live,
                       on_warning=lambda text: err_console.print(f"warning: {text}", markup=False))
    except KeyboardInterrupt:
        raise _fail(_escape(f"interrupted; the pending members did not start. Finish it with: {resume_hint}"), EXIT_INTERRUPTED) from None
    except sweeps.SweepError as exc:
        raise _fail(_escape(str(exc))) from None
