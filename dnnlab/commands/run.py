"""`dnnlab run`: train a config (one seed or several, in one or several processes), or resume
a run folder, and print its verdict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from dnnlab.commands.common import (
    MlflowOpt,
    SetOpt,
    _acc,
    _escape,
    _fail,
    _live_writers,
    _load,
    _load_data,
    _log_mlflow,
    _mlflow_ready,
    _seeds_progress,
    _stop_point,
    _verdicts,
    _warn_imbalance,
    console,
    err_console,
)
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_VERDICT,
    STATUS_EXIT,
    shell_command,
)
from dnnlab.runs import origin as runs_origin


def _argv() -> list[str]:
    """The command line as typed (`dnnlab ...`), for inputs.json."""
    import sys

    return ["dnnlab", *sys.argv[1:]]


def _join(coordinator: Optional[str], num_processes: Optional[int], process_id: Optional[int]) -> int:
    """`run --distributed`: join the run's processes before any JAX work; this process's index."""
    from dnnlab.train import distributed

    try:
        index = distributed.initialize(coordinator, num_processes, process_id)[0]
    except distributed.DeviceError as exc:
        raise _fail(_escape(str(exc)), exc.code) from None
    if index != 0:  # a follower prints only errors (stderr); C++ libraries (gloo) print to stdout
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    return index


def run(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config file (optional with --resume)", show_default=False)] = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the new run folder")] = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary line")] = False,
    fail_on: Annotated[
        Optional[str],
        typer.Option(
            "--fail-on", callback=_verdicts,
            help="Exit 3 when the verdict is one of these, e.g. overfitting,failed-training",
        ),
    ] = None,
    seeds: Annotated[
        Optional[int],
        typer.Option("--seeds", min=1, help="Train N copies that differ only in their seed (train.seeds): mean and std"),
    ] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", help="Continue this run folder from its last saved epoch (--set may extend train.epochs)"),
    ] = None,
    mlflow: MlflowOpt = None,
    keep_state: Annotated[
        bool,
        typer.Option("--keep-state", help="Keep the resume state of the finished run (train.keep_state), to train it longer with --resume later"),
    ] = False,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="One run over several processes or hosts (jax.distributed): the batch is split over every "
            "process's devices; process 0 writes the run folder (docs/scale.md)",
        ),
    ] = False,
    coordinator: Annotated[
        Optional[str],
        typer.Option("--coordinator", metavar="HOST:PORT", help="With --distributed: process 0's address (else DNNLAB_COORDINATOR, else Slurm/Open MPI detection)"),
    ] = None,
    num_processes: Annotated[
        Optional[int],
        typer.Option("--num-processes", min=1, help="With --distributed: how many processes (else DNNLAB_NUM_PROCESSES, else detected)"),
    ] = None,
    process_id: Annotated[
        Optional[int],
        typer.Option("--process-id", min=0, help="With --distributed: this process's index, 0 to N-1 (else DNNLAB_PROCESS_ID, else detected)"),
    ] = None,
) -> None:
    """Train CONFIG, write a run folder and diagnose it: failed training, overfitting or a good fit."""
    sets = (*(set_ or ()), *(("train.keep_state=true",) if keep_state else ()))
    options = RunOptions(config, sets, out, quiet, fail_on, seeds, resume, mlflow, distributed, coordinator, num_processes, process_id)
    if not distributed:
        return _run(options)
    from dnnlab.train.distributed import leave

    try:
        _run(options)
    except typer.Exit as exc:  # a process that stopped before the end of training ends now (see `leave`)
        leave(exc.exit_code)
        raise
    except BaseException:
        import traceback

        traceback.print_exc()
        leave(EXIT_FAILED)
        raise


@dataclass(frozen=True)
class RunOptions:
    """What `dnnlab run` was given: CONFIG, the --set overrides in order (--keep-state's among
    them), and its options as typed."""

    config: Optional[Path] = None
    sets: tuple[str, ...] = ()
    out: Path = Path("runs")
    quiet: bool = False
    fail_on: Optional[str] = None
    seeds: Optional[int] = None
    resume: Optional[Path] = None
    mlflow: Optional[str] = None
    distributed: bool = False
    coordinator: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None

    @property
    def fail_verdicts(self) -> set[str]:
        """The verdicts of --fail-on."""
        return {v.strip() for v in (self.fail_on or "").split(",") if v.strip()}


def _run(options: RunOptions) -> None:
    """`dnnlab run`'s work; exits through typer.Exit."""
    config, out, quiet, mlflow, distributed = options.config, options.out, options.quiet, options.mlflow, options.distributed
    fail_verdicts = options.fail_verdicts
    given = [
        flag for flag, value in
        (("--coordinator", options.coordinator), ("--num-processes", options.num_processes), ("--process-id", options.process_id))
        if value is not None
    ]
    if given and not distributed:
        raise _fail(f"{', '.join(given)} configure a distributed run: add --distributed")
    if distributed and options.resume is not None:
        raise _fail("--resume with --distributed: resume the run in one process (dnnlab run --resume RUN_DIR), "
                    "or start a new distributed run")
    if options.resume is not None:
        _resume(options.resume, config, list(options.sets), quiet, fail_verdicts, mlflow)
    if config is None:
        raise _fail("give a CONFIG file to train, or --resume RUN_DIR")
    follower = distributed and _join(options.coordinator, options.num_processes, options.process_id) != 0
    if follower:  # only process 0 prints and writes; the others train and print only errors
        quiet, mlflow = True, None
    overrides = [*options.sets, *([f"train.seeds={options.seeds}"] if options.seeds is not None else [])]
    cfg = _load(config, overrides, warn=not follower)
    uri = _mlflow_ready(mlflow or (cfg.logging.mlflow if not follower else None))
    ds = _load_data(cfg)
    if not follower:
        _warn_imbalance(cfg, ds)
    from dnnlab import experiment

    _stop_point("before the run started")
    if follower:
        try:
            summary = experiment.run(cfg, ds, out)
        except experiment.ExperimentError as exc:
            raise _fail(_escape(str(exc)), exc.code) from None
        raise typer.Exit(STATUS_EXIT.get(summary.get("status"), EXIT_FAILED))

    def announce(run_dir: Path) -> None:
        if not quiet:
            console.print(f"[bold]{_escape(cfg.name)}[/]: {_escape(ds.name)} from {_escape(ds.source)} -> {_escape(str(run_dir))}")

    # the printed commands (try:, report.md) start from what trained: CONFIG and every override, in order
    origin = runs_origin(config, overrides)
    with _live(quiet) as (writers, seed_writers):
        try:
            outcome = experiment.run(cfg, ds, out, experiment.Shown(writers, not quiet, origin, announce, _argv(), seed_writers))
        except experiment.ExperimentError as exc:
            raise _fail(_escape(str(exc)), exc.code) from None
    try:
        _print(outcome, quiet, origin, fail_verdicts)
    finally:  # after the plots: they are artifacts
        _log_mlflow(uri, outcome.run_dir, shell_command("dnnlab", "run", "--resume", outcome.run_dir, "--mlflow", uri))


def _resume(run_dir: Path, config: Optional[Path], overrides: list[str], quiet: bool, fail_verdicts: set[str], mlflow: Optional[str] = None) -> None:
    """`dnnlab run --resume RUN_DIR`: continue it in place (a finished run is only logged to
    MLflow, with --mlflow); exits."""
    from dnnlab import experiment
    from dnnlab.config import ConfigError
    from dnnlab.runs import read_config

    if mlflow is None:
        try:
            mlflow = read_config(run_dir).logging.mlflow
        except (ConfigError, OSError):
            pass  # resuming says what is wrong with the folder
    uri = _mlflow_ready(mlflow)

    def announce(folder: Path) -> None:
        if not quiet:
            console.print(f"resuming {folder}", markup=False)

    with _live(quiet) as (writers, seed_writers):
        shown = experiment.Shown(writers, not quiet, str(run_dir / "config.yaml"), announce, seed_writers=seed_writers)
        try:
            outcome = experiment.resume(run_dir, overrides, shown, config)  # a run, or a multi-seed folder seed by seed
        except experiment.ExperimentError as exc:
            raise _fail(_escape(str(exc)), exc.code) from None
    again = shell_command("dnnlab", "run", "--resume", run_dir, "--mlflow", uri)
    if outcome is None:
        from dnnlab.runs import read_summary

        status = (read_summary(run_dir) or {}).get("status")
        how = (
            "extend it with --set train.epochs=N" if status == "completed"
            else "a run that stopped early or diverged stays so; train it again to change it"
        )
        console.print(f"{run_dir}: the run {status or 'had finished'}; nothing to resume ({how})", markup=False)
        _log_mlflow(uri, run_dir, again)
        raise typer.Exit(EXIT_OK)
    try:
        _print(outcome, quiet, run_dir / "config.yaml", fail_verdicts)
    finally:
        _log_mlflow(uri, run_dir, again)


@contextmanager
def _live(quiet: bool) -> Iterator[tuple[list, Any]]:
    """(the console's live writers, each seed's: `experiment.Shown`'s writers and seed_writers),
    closed when the block ends."""
    writers = _live_writers(quiet)
    seed_writers, group = _seeds_progress(quiet)
    try:
        yield writers, seed_writers
    finally:
        for w in writers:
            w.close()
        if group is not None:
            group.close()


def _print(outcome, quiet: bool, config: Any, fail_verdicts: set[str]) -> None:
    """The verdict of a run, or of a multi-seed folder (`experiment.SeedsOutcome`); exits with
    its code. `config`: what its commands start from (a config file, or `runs.origin`'s words)."""
    from dnnlab.experiment import SeedsOutcome

    if isinstance(outcome, SeedsOutcome):
        _print_seeds(outcome, quiet, config, fail_verdicts)
    _print_run(outcome, quiet, config, fail_verdicts)


def _splits(acc: str, fit: str, value: Callable[[str], str]) -> str:
    """`train ACC v, val ACC v, test ACC v`: `value` of each split's `fit` metric (accuracy, or R^2)."""
    return ", ".join(f"{split} {acc} {value(f'{split}_{fit}')}" for split in ("train", "val", "test"))


def _exit(status: str, verdicts: Iterable[str], fail_verdicts: set[str], whose: str = "") -> NoReturn:
    """Exit with the code of `status`, or 3 when it is 0 and one of `verdicts` is in --fail-on."""
    code = STATUS_EXIT.get(status, EXIT_FAILED)
    hit = sorted(set(verdicts) & fail_verdicts)
    if code == EXIT_OK and hit:
        err_console.print(f"error: verdict {', '.join(hit)}{whose} is in --fail-on", markup=False)
        code = EXIT_VERDICT
    raise typer.Exit(code)


def _print_run(outcome, quiet: bool, config: Any, fail_verdicts: set[str]) -> None:
    """The diagnosis panel and the summary line of one run; exits with its code. `config`: what
    its commands start from (a config file, or `runs.origin`'s words)."""
    summary, diagnosis, run_dir = outcome.summary, outcome.diagnosis, outcome.run_dir
    if not quiet:
        from dnnlab.console import print_diagnosis

        print_diagnosis(console, diagnosis.to_dict(), config, run_dir)
    from dnnlab.console import fit_key

    final = summary.get("final") or {}
    fit, acc = fit_key(final)  # accuracy, or R^2 under data.task: regression
    line = (
        f"{summary['status']}: {summary['epochs_run']} epochs, {_splits(acc, fit, lambda k: _acc(final.get(k)))}, "
        f"{summary['wall_seconds']:.1f} s, "
        f"verdict {diagnosis.verdict}{' (' + ', '.join(diagnosis.causes) + ')' if diagnosis.causes else ''} -> {run_dir}"
    )
    if _imbalanced(summary, outcome):
        kept = (summary.get("best") if summary.get("restored_best") else final) or {}
        line += f"\n  imbalanced classes: balanced accuracy val {_acc(kept.get('val_balanced_accuracy'))}, test {_acc(kept.get('test_balanced_accuracy'))}"
    if summary.get("restored_best"):
        best = summary.get("best") or {}
        line += (
            f"\n  kept the best epoch {summary['best_epoch']} (by {summary['monitor']}): "
            f"val {acc} {_acc(best.get(f'val_{fit}'))}, test {acc} {_acc(best.get(f'test_{fit}'))}"
        )
    console.print(line, markup=False)
    if summary["status"] == "diverged":
        err_console.print(
            "error: the training loss became non-finite or exploded; lower optimizer.lr or set "
            "optimizer.clip_norm. The epochs before it are in metrics.jsonl.",
            markup=False,
        )
    elif summary["status"] == "interrupted":
        err_console.print(
            f"interrupted after {summary['epochs_run']} epochs; the finished epochs are in {run_dir}; "
            f"continue it with: {shell_command('dnnlab', 'run', '--resume', run_dir)}",
            markup=False,
        )
    try:
        outcome.complete()  # the plots, after the answer
    except KeyboardInterrupt:
        raise _fail("interrupted while drawing the plots; report.md has the verdict", EXIT_INTERRUPTED) from None
    for problem in outcome.problems:
        err_console.print(f"warning: {problem}", markup=False)
    _exit(summary["status"], [diagnosis.verdict], fail_verdicts)


def _imbalanced(summary: dict, outcome) -> bool:
    """Whether the run's training split is imbalanced (summary.json's data.imbalanced)."""
    return bool((summary.get("data") or {}).get("imbalanced"))


def _print_seeds(result, quiet: bool, config: Any, fail_verdicts: set[str]) -> None:
    """`dnnlab run` with train.seeds > 1: the seeds' table and the diagnosis of the group (one
    line per seed with --quiet), then the mean and std; exits. `config`: what the panel's
    commands start from (`_print_run`)."""
    from dnnlab.console import fit_key
    from dnnlab.runs import kept_metrics

    summary = result.summary
    for o in result.outcomes:
        for problem in o.problems:
            err_console.print(f"warning: {problem}", markup=False)
    if not quiet:
        from dnnlab.console import print_diagnosis, seeds_table
        from dnnlab.diagnose import across_seeds

        console.print(seeds_table(summary), soft_wrap=False)
        group = across_seeds([(o.summary.get("seed"), o.diagnosis) for o in result.outcomes])
        print_diagnosis(console, group.to_dict(), config)
    for o in result.outcomes if quiet else ():
        kept = kept_metrics(o.summary)
        fit, acc = fit_key(kept)  # accuracy, or R^2 under data.task: regression
        console.print(
            f"seed {o.summary.get('seed')}: {o.summary['status']}, {o.summary['epochs_run']} epochs, "
            f"{_splits(acc, fit, lambda k, kept=kept: _acc(kept.get(k)))}, verdict {o.diagnosis.verdict}",
            markup=False,
        )
    mean, std = summary["mean"], summary["std"]

    def pm(key: str) -> str:
        return "-" if key not in mean else f"{mean[key]:.4f} ± {std[key]:.4f}"

    fit, acc = fit_key(mean)
    console.print(
        f"{summary['status']}: {len(result.outcomes)} seeds ({summary['seed_mode']}), {_splits(acc, fit, pm)}, "
        f"{summary['wall_seconds']:.1f} s, "
        f"verdicts {', '.join(summary['verdicts'])} -> {result.run_dir}",
        markup=False,
    )
    _exit(summary["status"], summary["verdicts"], fail_verdicts, " (of some seed)")
