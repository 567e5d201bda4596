"""The `dnnlab` command line: parse, validate, call one function, map the outcome to an exit code.

JAX is imported only inside the commands that train, so `--help`, `validate`, `schema` and
`data list` start fast.

Exit codes: 0 completed or stopped early; 1 diverged or failed; 2 bad input; 3 the verdict is
in --fail-on; 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dnnlab.console import SafeConsole
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_VERDICT,
    STATUS_EXIT,
    shell_command,
)


class Metric(str, Enum):
    """The metrics that rank runs (runs.METRICS, and the balanced accuracies of runs.CLASS_METRICS)."""

    train_loss = "train_loss"
    train_accuracy = "train_accuracy"
    val_loss = "val_loss"
    val_accuracy = "val_accuracy"
    test_loss = "test_loss"
    test_accuracy = "test_accuracy"
    val_balanced_accuracy = "val_balanced_accuracy"
    test_balanced_accuracy = "test_balanced_accuracy"


class TuneSeeds(str, Enum):
    """Which seeds of a tuned sweep tune (sweep.tune_seeds)."""

    first = "first"
    all = "all"


class Checkpoint(str, Enum):
    kept = "kept"
    best = "best"
    last = "last"


app = typer.Typer(
    name="dnnlab",
    help="Train a YAML-configured network with JAX and tell failed training from overfitting.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: where they are found, and downloading them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# the commands that train, and so compile and fit linear references that the cache folder keeps
TRAINING_COMMANDS = ("run", "sweep", "fix", "check", "lr-find")


@app.callback()
def _before_command(ctx: typer.Context) -> None:
    """Before a command that trains: a cache folder that cannot be written is said once (the
    runs go on without it)."""
    if ctx.invoked_subcommand in TRAINING_COMMANDS:
        from dnnlab.runs import cache_exposure, cache_problem

        problem = cache_problem() or cache_exposure()
        if problem is not None:
            err_console.print(f"warning: {problem}", markup=False)

# control characters in what is printed (text from data files: class and column names, paths)
# are shown as escapes, never obeyed by the terminal (console.visible)
console = SafeConsole(highlight=False, soft_wrap=True)
err_console = SafeConsole(stderr=True, highlight=False, soft_wrap=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a key: --set model.depth=8 (VALUE is parsed as YAML); repeatable"),
]


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def _load(config: Path, overrides: Optional[list[str]], warn: bool = True):
    """The validated config; each option it sets that will not be honoured is a printed warning."""
    from dnnlab.config import ConfigError, load_config_with_warnings

    try:
        cfg, warnings = load_config_with_warnings(config, overrides or [])
    except ConfigError as exc:
        raise _fail(_escape(str(exc))) from None
    for warning in warnings if warn else ():
        err_console.print(f"warning: {warning}", markup=False)
    return cfg


def _join(coordinator: Optional[str], num_processes: Optional[int], process_id: Optional[int]) -> int:
    """`run --distributed`: join the run's processes before any JAX work; this process's index."""
    from dnnlab import distributed

    try:
        index = distributed.initialize(coordinator, num_processes, process_id)[0]
    except distributed.DeviceError as exc:
        raise _fail(_escape(str(exc)), exc.code) from None
    if index != 0:  # a follower prints only errors (stderr); C++ libraries (gloo) print to stdout
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    return index


def _load_data(cfg):
    from dnnlab.data import split_warnings
    from dnnlab.experiment import ExperimentError, load_data

    try:
        ds = load_data(cfg)
    except ExperimentError as exc:
        raise _fail(_escape(str(exc)), exc.code) from None
    for warning in split_warnings(cfg.data, ds):
        err_console.print(f"warning: {warning}", markup=False)
    return ds


def _warn_imbalance(cfg, ds) -> None:
    """The run's header: a warning when the largest class holds most of the training split."""
    from dnnlab.baselines import Baselines

    warning = Baselines(_class_counts(ds), names=tuple(ds.classes)).imbalance_warning(cfg.diagnosis.imbalance_share)
    if warning is not None:
        err_console.print(f"warning: {warning}", markup=False)


def _class_counts(ds) -> tuple[int, ...]:
    import numpy as np

    return tuple(np.bincount(ds.train.y, minlength=ds.num_classes).tolist())


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _live_writers(quiet: bool) -> list:
    """The console's live progress, unless --quiet."""
    if quiet:
        return []
    from dnnlab.console import RichWriter

    return [RichWriter(console)]


def _verdicts(text: Optional[str]) -> Optional[str]:
    """--fail-on's check: comma-separated verdicts, each one of diagnose.VERDICTS."""
    from dnnlab.diagnose import VERDICTS

    unknown = sorted({v.strip() for v in (text or "").split(",") if v.strip()} - set(VERDICTS))
    if unknown:
        raise typer.BadParameter(f"unknown verdict {', '.join(unknown)}; choose from {', '.join(VERDICTS)}")
    return text


MlflowOpt = Annotated[
    Optional[str],
    typer.Option(
        "--mlflow", metavar="URI",
        help="When done, log to this MLflow tracking store (sqlite:///mlflow.db, http://host:5000); overrides logging.mlflow",
    ),
]


def _mlflow_ready(uri: Optional[str]) -> Optional[str]:
    """The tracking URI to log to, once MLflow is known to be installed and to accept it (exit 2
    if not), before anything trains."""
    if uri:
        from dnnlab.tracking import TrackingError, check_uri

        try:
            check_uri(uri)
        except TrackingError as exc:
            raise _fail(_escape(str(exc)), exc.code) from None
    return uri


def _raw_mlflow(raw: Any) -> Optional[str]:
    """logging.mlflow of a config as read from YAML (a sweep's or fix's base)."""
    section = raw.get("logging") if isinstance(raw, dict) else None
    return section.get("mlflow") if isinstance(section, dict) else None


def _log_mlflow(uri: Optional[str], folder: Path, again: str) -> None:
    """Log a finished run, seeds, sweep or fix folder to MLflow; what could not be logged is a
    warning (`again`: the command that logs it later), never an error."""
    if uri:
        from dnnlab.tracking import log_to_mlflow

        for problem in log_to_mlflow(uri, folder, again):
            err_console.print(f"warning: {problem}", markup=False)


@app.command()
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
    if not distributed:
        return _run(config, set_, out, quiet, fail_on, seeds, resume, mlflow, False, coordinator, num_processes, process_id)
    from dnnlab.distributed import leave

    try:
        _run(config, set_, out, quiet, fail_on, seeds, resume, mlflow, True, coordinator, num_processes, process_id)
    except typer.Exit as exc:  # a process that stopped before the end of training ends now (see `leave`)
        leave(exc.exit_code)
        raise
    except BaseException:
        import traceback

        traceback.print_exc()
        leave(EXIT_FAILED)
        raise


def _run(
    config: Optional[Path], set_: Optional[list[str]], out: Path, quiet: bool, fail_on: Optional[str], seeds: Optional[int],
    resume: Optional[Path], mlflow: Optional[str], distributed: bool, coordinator: Optional[str],
    num_processes: Optional[int], process_id: Optional[int],
) -> None:
    """`dnnlab run`'s work; exits through typer.Exit."""
    fail_verdicts = {v.strip() for v in (fail_on or "").split(",") if v.strip()}
    given = [flag for flag, value in (("--coordinator", coordinator), ("--num-processes", num_processes), ("--process-id", process_id)) if value is not None]
    if given and not distributed:
        raise _fail(f"{', '.join(given)} configure a distributed run: add --distributed")
    if distributed and resume is not None:
        raise _fail("--resume with --distributed: resume the run in one process (dnnlab run --resume RUN_DIR), "
                    "or start a new distributed run")
    if resume is not None:
        _resume(resume, config, set_ or [], quiet, fail_verdicts, mlflow)
    if config is None:
        raise _fail("give a CONFIG file to train, or --resume RUN_DIR")
    follower = distributed and _join(coordinator, num_processes, process_id) != 0
    if follower:  # only process 0 prints and writes; the others train and print only errors
        quiet, mlflow = True, None
    cfg = _load(config, [*(set_ or []), *([f"train.seeds={seeds}"] if seeds is not None else [])], warn=not follower)
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

    writers = _live_writers(quiet)

    def announce(run_dir: Path) -> None:
        if not quiet:
            console.print(f"[bold]{_escape(cfg.name)}[/]: {_escape(ds.name)} from {_escape(ds.source)} -> {_escape(str(run_dir))}")

    try:
        outcome = experiment.run(cfg, ds, out, experiment.Shown(writers, not quiet, str(config), announce))
    except experiment.ExperimentError as exc:
        raise _fail(_escape(str(exc)), exc.code) from None
    finally:
        for w in writers:
            w.close()
    try:
        if isinstance(outcome, experiment.SeedsOutcome):
            _print_seeds(outcome, fail_verdicts)
        _print_run(outcome, quiet, config, fail_verdicts)
    finally:  # after the plots: they are artifacts
        _log_mlflow(uri, outcome.run_dir, shell_command("dnnlab", "run", "--resume", outcome.run_dir, "--mlflow", uri))


def _resume(run_dir: Path, config: Optional[Path], overrides: list[str], quiet: bool, fail_verdicts: set[str], mlflow: Optional[str] = None) -> None:
    """`dnnlab run --resume RUN_DIR`: continue it in place (a finished run is only logged to
    MLflow, with --mlflow); exits."""
    from dnnlab import experiment
    from dnnlab.config import ConfigError, load_config

    if mlflow is None:
        try:
            mlflow = load_config(run_dir / "config.yaml").logging.mlflow
        except (ConfigError, OSError):
            pass  # resuming says what is wrong with the folder
    uri = _mlflow_ready(mlflow)

    writers = _live_writers(quiet)

    def announce(folder: Path) -> None:
        if not quiet:
            console.print(f"resuming {folder}", markup=False)

    from dnnlab.runs import SEEDS_MANIFEST

    shown = experiment.Shown(writers, not quiet, str(run_dir / "config.yaml"), announce)
    seeds = (run_dir / SEEDS_MANIFEST).exists()
    try:
        if seeds:
            outcome = experiment.resume_seeds(run_dir, overrides, shown)
        else:
            outcome = experiment.resume(run_dir, overrides, shown, config)
    except experiment.ExperimentError as exc:
        raise _fail(_escape(str(exc)), exc.code) from None
    finally:
        for w in writers:
            w.close()
    again = shell_command("dnnlab", "run", "--resume", run_dir, "--mlflow", uri)
    if outcome is None:
        console.print(f"{run_dir}: the run had finished; nothing to resume (extend it with --set train.epochs=N)", markup=False)
        _log_mlflow(uri, run_dir, again)
        raise typer.Exit(EXIT_OK)
    try:
        if seeds:
            _print_seeds(outcome, fail_verdicts)
        _print_run(outcome, quiet, run_dir / "config.yaml", fail_verdicts)
    finally:
        _log_mlflow(uri, run_dir, again)


def _print_run(outcome, quiet: bool, config: Path, fail_verdicts: set[str]) -> None:
    """The diagnosis panel and the summary line of one run; exits with its code."""
    summary, diagnosis, run_dir = outcome.summary, outcome.diagnosis, outcome.run_dir
    if not quiet:
        from dnnlab.console import diagnosis_panel

        console.print(diagnosis_panel(diagnosis.to_dict(), str(config)), soft_wrap=False)
    final = summary.get("final") or {}
    line = (
        f"{summary['status']}: {summary['epochs_run']} epochs, "
        f"train acc {_acc(final.get('train_accuracy'))}, val acc {_acc(final.get('val_accuracy'))}, "
        f"test acc {_acc(final.get('test_accuracy'))}, {summary['wall_seconds']:.1f} s, "
        f"verdict {diagnosis.verdict}{' (' + ', '.join(diagnosis.causes) + ')' if diagnosis.causes else ''} -> {run_dir}"
    )
    if _imbalanced(summary, outcome):
        kept = (summary.get("best") if summary.get("restored_best") else final) or {}
        line += f"\n  imbalanced classes: balanced accuracy val {_acc(kept.get('val_balanced_accuracy'))}, test {_acc(kept.get('test_balanced_accuracy'))}"
    if summary.get("restored_best"):
        best = summary.get("best") or {}
        line += (
            f"\n  kept the best epoch {summary['best_epoch']} (by {summary['monitor']}): "
            f"val acc {_acc(best.get('val_accuracy'))}, test acc {_acc(best.get('test_accuracy'))}"
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
    code = STATUS_EXIT.get(summary["status"], EXIT_FAILED)
    if code == EXIT_OK and diagnosis.verdict in fail_verdicts:
        err_console.print(f"error: verdict {diagnosis.verdict} is in --fail-on", markup=False)
        code = EXIT_VERDICT
    raise typer.Exit(code)


def _imbalanced(summary: dict, outcome) -> bool:
    """Whether the run's training split is imbalanced (summary.json's data.imbalanced)."""
    return bool((summary.get("data") or {}).get("imbalanced"))


def _print_seeds(result, fail_verdicts: set[str]) -> None:
    """`dnnlab run` with train.seeds > 1: one line per seed, then the mean and std; exits."""
    from dnnlab.runs import kept_metrics

    summary = result.summary
    for o in result.outcomes:
        for problem in o.problems:
            err_console.print(f"warning: {problem}", markup=False)
        kept = kept_metrics(o.summary)
        console.print(
            f"seed {o.summary.get('seed')}: {o.summary['status']}, {o.summary['epochs_run']} epochs, "
            f"train acc {_acc(kept.get('train_accuracy'))}, val acc {_acc(kept.get('val_accuracy'))}, "
            f"test acc {_acc(kept.get('test_accuracy'))}, verdict {o.diagnosis.verdict}",
            markup=False,
        )
    mean, std = summary["mean"], summary["std"]

    def pm(key: str) -> str:
        return "-" if key not in mean else f"{mean[key]:.4f} ± {std[key]:.4f}"

    console.print(
        f"{summary['status']}: {len(result.outcomes)} seeds ({summary['seed_mode']}), train acc {pm('train_accuracy')}, "
        f"val acc {pm('val_accuracy')}, test acc {pm('test_accuracy')}, {summary['wall_seconds']:.1f} s, "
        f"verdicts {', '.join(summary['verdicts'])} -> {result.run_dir}",
        markup=False,
    )
    code = STATUS_EXIT.get(summary["status"], EXIT_FAILED)
    hit = sorted(set(summary["verdicts"]) & fail_verdicts)
    if code == EXIT_OK and hit:
        err_console.print(f"error: verdict {', '.join(hit)} (of some seed) is in --fail-on", markup=False)
        code = EXIT_VERDICT
    raise typer.Exit(code)


def _diagnose_folder(run_dir: Path, write: bool):
    """The Diagnosis of one run folder; with `write`, also summary.json, report.md and plots."""
    from dnnlab.config import ConfigError
    from dnnlab.diagnose import diagnose as run_rules
    from dnnlab.runs import load_run

    try:
        history, cfg, summary = load_run(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise _fail(_escape(str(exc))) from None
    if not write:
        return run_rules(history, cfg, summary)
    if not summary.get("status"):
        # a killed run: its summary says so, never a status-less one
        summary = {"name": cfg.name, "status": "unfinished", "epochs_run": max(len(history) - 1, 0), **summary}
    from dnnlab.report import finalize

    try:
        return finalize(run_dir, cfg, history, summary)[0]
    except OSError as exc:
        raise _fail(_escape(f"{run_dir}: cannot write the report ({exc})"), EXIT_FAILED) from None


@app.command("diagnose")
def diagnose_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (runs/<name>-...)", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the diagnosis as JSON")] = False,
    write: Annotated[bool, typer.Option("--write", help="Also (re)write summary.json's diagnosis, report.md and the plots")] = False,
) -> None:
    """Re-read a run folder and print its verdict, evidence and remedies (no JAX import)."""
    from dnnlab import runs

    try:
        found = runs.read_manifest(run_dir)
    except ValueError as exc:
        raise _fail(_escape(str(exc))) from None
    # a multi-seed run (train.seeds) or a sweep: each member's folder
    members = runs.member_dirs(run_dir, found[1]) if found else [run_dir]
    results = {member.name: _diagnose_folder(member, write).to_dict() for member in members}
    if as_json:
        sys.stdout.write(json.dumps(results if found else results[run_dir.name], indent=2) + "\n")
        return
    from dnnlab.console import diagnosis_panel

    for member in members:
        console.print(diagnosis_panel(results[member.name], str(member / runs.CONFIG)), soft_wrap=False)


@app.command()
def check(config: ConfigArg, set_: SetOpt = None) -> None:
    """Smoke-test CONFIG in seconds: initial loss, finite steps, overfitting one batch, real vs zeroed inputs."""
    cfg = _load(config, set_)
    ds = _load_data(cfg)
    from dnnlab.smoke import run_checks

    checks = run_checks(cfg, ds)
    for c in checks:
        mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
        console.print(f"{mark} {_escape(c.name)}: {_escape(c.detail)}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise _fail(_escape(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}"), EXIT_FAILED)
    console.print(f"all {len(checks)} checks passed", markup=False)


STOPPED_WORDS = {
    "diverged": "the smoothed loss exceeded 4x its minimum",
    "non-finite": "the loss became non-finite",
    "max": "every step ran; the loss never exceeded 4x its minimum (raise --max to see where it blows up)",
    "interrupted": "interrupted",
}


@app.command("lr-find")
def lr_find_cmd(
    config: ConfigArg,
    set_: SetOpt = None,
    min_lr: Annotated[float, typer.Option("--min", help="The first step's learning rate")] = 1e-7,
    max_lr: Annotated[float, typer.Option("--max", help="The last step's learning rate")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Steps from --min to --max, one minibatch each")] = 100,
    rule: Annotated[str, typer.Option("--rule", help="How the rate is read off the curve: minimum (a tenth of the rate at the lowest loss) | valley (fastai's) | steepest")] = "minimum",
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the new lr-find folder")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print lr_find.json")] = False,
) -> None:
    """Find a learning rate: a range test on CONFIG's net, data and optimizer (the rate grows
    geometrically each step; the smoothed loss is read for a suggestion). Writes lr_find.png and lr_find.json."""
    import shlex

    from dnnlab import lr_find, runs

    cfg = _load(config, set_)
    problem = lr_find.check(min_lr, max_lr, steps, rule)
    if problem:
        raise _fail(_escape(problem))
    ds = _load_data(cfg)
    if not as_json:
        console.print(f"range test of {config}: {steps} steps, lr {min_lr:g} -> {max_lr:g} ({cfg.optimizer.name})", markup=False)
    try:
        result = lr_find.range_test(cfg, ds, min_lr=min_lr, max_lr=max_lr, steps=steps, rule=rule)
    except lr_find.LrFindError as exc:
        raise _fail(_escape(str(exc))) from None
    try:
        folder = runs.new_run_dir(out, f"{cfg.name}-lr-find")
        problems = lr_find.write(result, folder, str(config))
    except OSError as exc:
        raise _fail(_escape(f"cannot write the range test under {out}: {exc}"), EXIT_FAILED) from None
    for p in problems:
        err_console.print(f"warning: {p}", markup=False)
    code = EXIT_INTERRUPTED if result.stopped == "interrupted" else EXIT_OK
    lr = result.suggestion
    if as_json:
        sys.stdout.write((folder / "lr_find.json").read_text())
    else:
        for note in result.notes:
            err_console.print(f"note: {note}", markup=False)
        console.print(
            f"{len(result.lrs)} of {steps} steps ({result.epochs:.1f} epochs of {ds.name}'s {len(ds.train):,} training examples "
            f"at batch {result.batch_size}), lr {min_lr:g} -> {result.lrs[-1] if result.lrs else min_lr:.2g}, "
            f"{result.seconds:.1f} s; stopped: {STOPPED_WORDS[result.stopped]}", markup=False,
        )
        if lr is not None:
            others = ", ".join(f"{k} {lr_find.shown(v)}" for k, v in result.suggestions.items() if k != rule and v is not None)
            console.print(f"suggested lr {lr_find.shown(lr)} ({rule}: {lr_find.RULE_WORDS[rule]}); the config's is "
                          f"{cfg.optimizer.lr:g}" + (f"; the other rules: {others}" if others else ""), markup=False)
            console.print(lr_find.set_line(lr), markup=False)
            again = ["dnnlab", "run", str(config), *[a for s in set_ or [] for a in ("--set", s)], "--set", f"optimizer.lr={lr_find.shown(lr)}"]
            console.print(f"run it: {shlex.join(again)}", markup=False)
        console.print(f"wrote {folder / 'lr_find.png'} and lr_find.json", markup=False)
    if lr is None:
        err_console.print(
            f"error: {len(result.lrs)} steps before the test stopped: too few to read a rate from; lower --min, raise "
            "--steps, or look at lr_find.png", markup=False,
        )
        raise typer.Exit(code if code != EXIT_OK else EXIT_FAILED)
    raise typer.Exit(code)


def _acc(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


class _SweepCommand(typer.core.TyperCommand):
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


@app.command(cls=_SweepCommand)
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
) -> None:
    """Run CONFIG over a grid of overrides (and seeds), then compare the members side by side."""
    from dnnlab import sweep as sweeps
    from dnnlab.config import ConfigError, apply_overrides, read_yaml

    try:
        if ray is not None:
            from dnnlab.workers import import_ray

            import_ray(ray)  # before the sweep folder is made: without Ray (or its cluster), nothing is written
        raw = apply_overrides(read_yaml(config), set_ or [])
        for warning in sweeps.member_warnings(raw):
            err_console.print(f"warning: {warning}", markup=False)
        uri = _mlflow_ready(mlflow or _raw_mlflow(raw))  # before the sweep folder is made
        tuning = {"tune_items": tune or [], "tune_metric": tune_metric.value if tune_metric else None,
                  "tune_seeds": tune_seeds.value if tune_seeds else None}
        if resume is not None:
            job = sweeps.Sweep.resume(resume, sweeps.resume_plan(resume, raw, grid or [], seeds, **tuning))
        else:
            p = sweeps.plan(raw, grid or [], seeds, yes=yes, **tuning)
            job = sweeps.Sweep.create(out, p.base.get("name", "run"), str(config), p.base, p.grid, p.seeds, p.variants, tune=p.tune)
    except (ConfigError, sweeps.SweepError) as exc:
        raise _fail(_escape(str(exc))) from None
    except OSError as exc:
        raise _fail(_escape(f"cannot write the sweep folder under {out}: {exc}")) from None
    hint_words = ["dnnlab", "sweep", config, "--resume", job.path, *(w for s in set_ or [] for w in ("--set", s))]
    hint_words += (["--workers", workers] if workers else []) + (["--ray", ray] if ray else [])
    hint = shell_command(*hint_words)
    _run_members(job, hint, quiet=quiet, workers=workers, ray=ray)
    failed = [m for m in job.members if m["status"] == "failed"]
    _compare_and_print([str(job.path)], job.path, metric.value, as_json=False)
    _log_mlflow(uri, job.path, shell_command(*hint_words, "--mlflow", uri))  # a parent MLflow run, one child per member
    if failed:
        err_console.print(f"{len(failed)} member(s) failed; see {job.path / 'sweep.json'}", markup=False)
    raise typer.Exit(EXIT_FAILED if len(failed) == len(job.members) else EXIT_OK)


def _run_members(job, resume_hint: str, quiet: bool, workers: Optional[int] = None, ray: Optional[str] = None) -> None:
    """Run a sweep's pending members with a progress bar and one line per member (in this
    process, on `workers` processes, or as Ray tasks)."""
    from dnnlab import sweep as sweeps

    todo = job.pending() + job.waiting()  # a tuned sweep's waiting seeds run once their value is chosen
    if not quiet:
        console.print(f"sweep {job.path}: {len(job.members)} members, {len(todo)} to run", markup=False)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=quiet,
    )
    task = bar.add_task("members", total=len(todo))

    def on_start(member: dict) -> None:
        bar.update(task, description=f"member {member['index']:03d} {' '.join(member['overrides'])}")

    def on_end(member: dict) -> None:
        outcome = member.get("verdict") or member.get("error", "").splitlines()[0]
        if not quiet:
            bar.console.print(f"  {member['index']:03d} {' '.join(member['overrides'])}: {member['status']}, {outcome}", markup=False)
        bar.advance(task)

    try:
        with bar:
            sweeps.run(job, on_start=on_start, on_end=on_end, workers=workers, ray=ray,
                       on_warning=lambda text: err_console.print(f"warning: {text}", markup=False))
    except KeyboardInterrupt:
        raise _fail(_escape(f"interrupted; the pending members did not start. Finish it with: {resume_hint}"), EXIT_INTERRUPTED) from None
    except sweeps.SweepError as exc:
        raise _fail(_escape(str(exc))) from None


def _compare_and_print(targets: list[str], out: Optional[Path], metric: str, as_json: bool) -> None:
    from rich.table import Table

    from dnnlab import compare as comparing
    from dnnlab.runs import new_run_dir

    try:
        comp, sweeps_found = comparing.compare(targets, metric)
    except comparing.CompareError as exc:
        raise _fail(_escape(str(exc))) from None
    try:
        if out is None:
            out = sweeps_found[0] if len(sweeps_found) == 1 and len(targets) == 1 else new_run_dir(Path("runs"), "compare")
        problems = comparing.write(comp, out)
    except comparing.CompareError as exc:
        raise _fail(_escape(str(exc))) from None
    except OSError as exc:
        raise _fail(_escape(f"cannot write the comparison to {out}: {exc}")) from None
    if as_json:
        sys.stdout.write(json.dumps(comp.to_dict(), indent=2, default=str) + "\n")
        return
    header, rows = comparing.table_rows(comp)
    table = Table(*header, title=f"{len(comp.records)} runs, {len(comp.groups)} configurations")
    for row in rows:
        table.add_row(*row)
    console.print(table, soft_wrap=False, markup=False)  # the labels and values come from the runs' configs
    if comp.best:
        console.print(f"best on {metric}: {comp.best.label}", markup=False)
    for c in comp.comparisons:
        console.print(f"  • {c['text']}", markup=False, soft_wrap=False)
    for rec in comp.records:
        for p in rec.problems:
            err_console.print(f"note: {rec.label}: {p}", markup=False)
    for tune in comp.tuning:
        for line in comparing.tuning_lines(tune):
            if line.startswith("- "):
                console.print(f"  tuned {tune['key']} on {tune['metric']}: {line[2:].replace('**', '')}", markup=False, soft_wrap=False)
    for orphan in comp.orphans:
        err_console.print(f"note: {orphan.name}: not in its sweep's manifest (a member started over?): not compared", markup=False)
    for p in problems:
        err_console.print(f"warning: {p}", markup=False)
    console.print(f"wrote {out / 'compare.md'}", markup=False)


@app.command("compare")
def compare_cmd(
    targets: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for compare.md and the plots (default: the sweep folder, or a new runs/compare-...)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON")] = False,
    metric: Annotated[Metric, typer.Option("--metric", help="Metric that ranks the runs")] = Metric.val_accuracy,
) -> None:
    """Put runs side by side: the keys that differ, metrics (mean ± std over seeds), verdicts, and
    which runs failed to train rather than overfit."""
    _compare_and_print(targets, out, metric.value, as_json)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run folder", show_default=False)],
    mc_dropout: Annotated[int, typer.Option("--mc-dropout", min=1, help="Average the softmax of K sampled dropout masks")] = 32,
    checkpoint: Annotated[Checkpoint, typer.Option(help="kept (the model the run kept) | best | last")] = Checkpoint.kept,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Test accuracy of MC dropout (K masks averaged) next to weight scaling: dropout as an ensemble."""
    from dnnlab import runs
    from dnnlab.config import ConfigError

    try:
        _, cfg, summary = runs.load_run(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise _fail(_escape(str(exc))) from None
    if cfg.model.dropout == 0 and cfg.model.input_dropout == 0:
        raise _fail(_escape(f"{run_dir}: this model has no dropout (model.dropout = model.input_dropout = 0): every mask is the identity"))
    from dnnlab.experiment import located

    try:
        inputs = runs.read_inputs(run_dir)
    except ValueError as exc:
        raise _fail(_escape(str(exc))) from None
    ds = _load_data(located(cfg, inputs))  # the data where the run found them, from any folder
    from dnnlab.evaluate import class_names, mc_dropout as run_mc

    try:
        names = class_names(summary, ds)
    except ValueError as exc:
        raise _fail(_escape(f"{run_dir}: {exc}")) from None
    try:
        path = runs.kept_checkpoint(run_dir, summary, checkpoint.value)
        arrays = runs.load_checkpoint(path)
        bad = runs.nonfinite_array(arrays)
        if bad is not None:
            raise ValueError(f"its array {bad} holds a NaN or an infinity: a model with such weights predicts nothing")
        result = run_mc(cfg, ds, arrays, mc_dropout, seed=cfg.seed, names=names)
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise _fail(_escape(f"{run_dir}: cannot load the checkpoint ({type(exc).__name__}: {exc})")) from None
    result = {"run": str(run_dir), "checkpoint": path.name, **result}
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    from rich.table import Table

    table = Table("model", "test accuracy", "test loss", title=f"{_escape(run_dir.name)} ({path.name}): dropout as an ensemble")
    ws = result["weight_scaling"]
    table.add_row("weight scaling (evaluation mode)", f"{ws['accuracy']:.4f}", f"{ws['loss']:.4f}")
    for row in result["mc"]:
        table.add_row(f"MC dropout, K = {row['k']}", f"{row['accuracy']:.4f}", f"{row['loss']:.4f}")
    console.print(table, soft_wrap=False)
    if names:  # the data's own class names (summary.json data.classes)
        by_class = Table("class", "name", "test examples", "test accuracy", title="weight scaling, per class")
        for row in result["per_class"]:
            acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
            by_class.add_row(str(row["class"]), row["name"], str(row["count"]), acc)
        console.print(by_class, soft_wrap=False, markup=False)  # the names come from the data


@app.command()
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
) -> None:
    """Apply the diagnosis's top remedies to RUN_DIR's config, train each, measure them against the
    run, and keep what worked: exit 0 when a remedy fixed the problem, 1 when none did."""
    from dnnlab import fix as fixing
    from dnnlab.sweep import SweepError

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
        _report_fix(job, as_json)
    finally:  # after compare.md: the remedies as children of one parent MLflow run
        _log_mlflow(uri, job.sweep.path, shell_command("dnnlab", "fix", job.sweep.path, "--mlflow", uri))


def _report_fix(job, as_json: bool) -> None:
    """The fix's table (or JSON) and its exit code."""
    from rich.table import Table

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
    acc = "bal acc" if job.results and job.results[0].measure == "balanced_accuracy" else "acc"
    table = Table("remedy", "verdict", f"train {acc}", f"val {acc}", "val loss", "fixed", title=f"{_escape(job.run_dir.name)} was {job.verdict}: the remedies, measured")
    table.add_row("(the run itself)", job.verdict, _acc(job.results[0].train[0]) if job.results else "-",
                  _acc(job.results[0].val[0]) if job.results else "-", _acc(job.results[0].val_loss[0]) if job.results else "-", "")
    for r in job.results:
        table.add_row(
            " ".join(r.remedy["sets"]), ", ".join(v or s for v, s in zip(r.verdicts, r.status)) or "-",
            _delta(*r.train), _delta(*r.val), _acc(r.val_loss[1]), ("yes: " if r.fixed else "no: ") + r.words,
        )
    console.print(table, soft_wrap=False, markup=False)
    if winner is None:
        err_console.print(f"no remedy fixed {job.verdict}; the table says what each did ({job.sweep.path})", markup=False)
        raise typer.Exit(EXIT_FAILED)
    console.print(f"fixed by {winner.to_dict()['command']}: wrote {job.fixed_config}", markup=False)
    console.print(f"run it: {shell_command('dnnlab', 'run', job.fixed_config)}", markup=False)
    raise typer.Exit(EXIT_OK)


def _delta(control: Optional[float], value: Optional[float], tol: float) -> str:
    """`0.9123 (+0.1234)`, the change marked when it is within the noise."""
    if value is None:
        return "-"
    if control is None:
        return _acc(value)
    d = value - control
    return f"{value:.4f} ({d:+.4f}{'' if abs(d) > tol else ', noise'})"


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check CONFIG without training (no JAX import); print the resolved config."""
    from dnnlab.config import dump_yaml

    cfg = _load(config, set_)
    console.print(dump_yaml(cfg), markup=False, end="")
    console.print(f"ok: {config} is a valid config", markup=False)


@app.command()
def schema() -> None:
    """Print the config's JSON Schema (for editors' YAML validation)."""
    from dnnlab.config import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@data_app.command("list")
def data_list() -> None:
    """Show each dataset and where it is found."""
    from rich.table import Table

    from dnnlab.data import listing

    table = Table("dataset", "found at", "to get it")
    for row in listing():
        table.add_row(row["name"], row["found"], row["get"])
    console.print(table, markup=False)


@data_app.command("inspect")
def data_inspect(config: ConfigArg, set_: SetOpt = None) -> None:
    """Load CONFIG's data without training (no JAX): examples, feature shape, classes and their counts, splits."""
    import numpy as np
    from rich.table import Table

    from dnnlab import data as datasets
    from dnnlab.config import data_seed

    cfg = _load(config, set_)
    try:
        ds = datasets.load(cfg.data, data_seed(cfg))
    except datasets.DataError as exc:
        raise _fail(_escape(str(exc))) from None
    for warning in datasets.split_warnings(cfg.data, ds):
        err_console.print(f"warning: {warning}", markup=False)
    splits = [("train", ds.train), ("val", ds.val), ("test", ds.test)]
    splits = [(name, s) for name, s in splits if s is not None]
    total = sum(len(s) for _, s in splits)
    console.print(f"{cfg.data.dataset}: {ds.source}", markup=False)
    sizes = ", ".join(f"{name} {len(s):,}" for name, s in splits)
    how = f"validation: data.validation_split {cfg.data.validation_split:g} with seed {data_seed(cfg)}"
    if cfg.data.train_size is not None:
        how += f"; train subsampled to data.train_size {cfg.data.train_size:,}"
    console.print(f"examples: {total:,} ({sizes}; {how})", markup=False)
    if ds.image_shape:
        h, w, c = ds.image_shape
        features = f"images {h}x{w}x{c} (H x W x C): a CNN sees them so, an MLP as {ds.input_dim:,} values"
    else:
        features = f"{ds.input_dim:,} features per example"
    console.print(f"features: {features}; data.normalize {cfg.data.normalize}", markup=False)
    table = Table("class", "name", *(name for name, _ in splits), "total", title=f"{ds.num_classes} classes")
    counts = [np.bincount(s.y, minlength=ds.num_classes) for _, s in splits]
    for k in range(ds.num_classes):
        row = [int(c[k]) for c in counts]
        name = ds.classes[k] if ds.classes else "-"
        table.add_row(str(k), name, *(f"{n:,}" for n in row), f"{sum(row):,}")
    console.print(table, markup=False)  # the class names come from the data
    from dnnlab.baselines import Baselines

    base = Baselines(_class_counts(ds), names=tuple(ds.classes))
    console.print(
        f"chance: always predicting {base.class_name(base.majority_class)!r} is {base.majority:.3f} accurate; predicting "
        f"the training split's class shares costs a cross-entropy of {base.prior_loss:.3f}", markup=False,
    )
    warning = base.imbalance_warning(cfg.diagnosis.imbalance_share)
    if warning is not None:
        console.print(f"warning: {warning}", markup=False)


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="mnist | fashion-mnist | cifar10")],
    dest: Annotated[Optional[Path], typer.Option(help="Folder to put the files in (default: the dnnlab cache)")] = None,
) -> None:
    """Fetch a dataset's official files into the cache, checking their sha256."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from dnnlab import data as datasets

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(filename: str, done: int, total: Optional[int]) -> None:
            if filename not in tasks:
                tasks[filename] = bar.add_task(filename, total=total)
            bar.update(tasks[filename], completed=done)

        try:
            folder = datasets.download(name, dest, progress=on_progress)
        except datasets.DataError as exc:
            bar.stop()
            raise _fail(_escape(str(exc)), EXIT_FAILED if "download failed" in str(exc) else EXIT_BAD_INPUT) from None
    console.print(f"{name}: ready in {folder}", markup=False)


def _stop_point(when: str) -> None:
    """A stop signal received so far ends the command here (exit 130, or 143 for SIGTERM): before
    a run starts, nothing has been written (dnnlab.interrupt)."""
    from dnnlab import interrupt

    try:
        interrupt.stop_point()
    except KeyboardInterrupt:
        raise _fail(f"interrupted {when}; nothing was written", EXIT_INTERRUPTED) from None


def _teardown_needed() -> bool:
    """Whether anything still running needs the interpreter's orderly shutdown: a thread that is
    not a daemon, a child process, a Ray or MLflow client, the processes of a distributed run."""
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return True
    if "ray" in sys.modules or "mlflow" in sys.modules or os.environ.get("DNNLAB_DEBUG"):
        return True
    if "multiprocessing" in sys.modules and sys.modules["multiprocessing"].active_children():
        return True
    distributed = sys.modules.get("dnnlab.distributed")
    return distributed is not None and distributed._PROCESSES.count > 1


def _exit(code: Any) -> None:
    """End the process with `code`. By now every file the command wrote is closed and synced,
    so the interpreter's teardown (freeing JAX, matplotlib and tensorboardX: about half a second
    of a quickstart run, bench/latency.py) is skipped with os._exit when nothing needs it."""
    if (code is None or isinstance(code, int)) and not _teardown_needed():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)


def main() -> None:
    """Console entry point: no traceback reaches the user unless DNNLAB_DEBUG is set.

    SIGINT and SIGTERM stop a command the same way, at its next stop point: the state is
    written, the summary says interrupted (dnnlab.interrupt; `dnnlab.__main__` installs the
    handler before this module is imported)."""
    from dnnlab import interrupt

    interrupt.install()
    # helper threads (the run's file writers, the linear reference, a sweep's plots) share the
    # GIL with the training loop: at the default 5 ms switch interval the loop waits up to 5 ms
    # for it after each compiled call (a sweep of 8 quickstarts: 14.2 s at 5 ms, 12.6 s at 1 ms)
    sys.setswitchinterval(0.001)

    def terminated(code: Any) -> Any:
        """The exit code of a command that a signal stopped (or that finished its work first)."""
        if not isinstance(code, (int, type(None))) or not interrupt.received():
            return code
        if not code:
            err_console.print("interrupted; the command had done its work: everything is written", markup=False)
        return interrupt.exit_code(code or EXIT_OK)

    try:
        try:
            app()
        finally:
            if "dnnlab.report" in sys.modules:
                sys.modules["dnnlab.report"].finish_preloading()
    except SystemExit as exc:
        _exit(terminated(exc.code))
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        _exit(terminated(EXIT_INTERRUPTED))
    except Exception as exc:  # a bug: say so plainly, keep the traceback for DNNLAB_DEBUG=1
        if os.environ.get("DNNLAB_DEBUG"):
            raise
        err_console.print(
            f"error: unexpected {type(exc).__name__}: {exc}\n(set DNNLAB_DEBUG=1 for the traceback, "
            "and please report it)",
            markup=False,
        )
        sys.exit(EXIT_FAILED)
