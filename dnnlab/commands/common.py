"""What the commands share: the app, their options, loading a config and its data with errors
as exit codes, the live writers, MLflow's checks, and the consoles.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from dnnlab.console import SafeConsole
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    RANKING_METRICS,
    shell_command,
)

# the metrics that rank runs (--metric, --tune-metric), one member each, as runs.RANKING_METRICS
# orders them (the order --help lists)
Metric = Enum("Metric", [(m, m) for m in RANKING_METRICS], type=str, module=__name__)


class Checkpoint(str, Enum):
    kept = "kept"
    best = "best"
    last = "last"


# an override as Hydra writes it (KEY=VALUE, no option before it): `--set KEY=VALUE` here
_OVERRIDE = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*=")


class OverridesCommand(typer.core.TyperCommand):
    """A command that takes `--set`: a stray `KEY=VALUE` argument (Hydra's way of overriding)
    is a usage error (exit 2) that says which option was meant."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        allowed = ctx.allow_extra_args
        ctx.allow_extra_args = True  # so that the extra arguments come back to be named
        try:
            extra = super().parse_args(ctx, args)
        finally:
            ctx.allow_extra_args = allowed
        if extra and not allowed and not ctx.resilient_parsing:
            ctx.fail(extra_arguments_message(extra, grid=any(p.name == "grid" for p in self.params)))
        return extra


def extra_arguments_message(extra: list[str], grid: bool = False) -> str:
    """Click's message for arguments a command does not take, with the `--set` (or, for a
    comma-separated value of a command with --grid, `--grid`) each KEY=VALUE among them needs."""
    plural = "s" if len(extra) > 1 else ""
    message = f"Got unexpected extra argument{plural} ({' '.join(extra)})"
    overrides = [a for a in extra if _OVERRIDE.match(a)]
    if overrides:
        meant = " ".join(shell_command("--grid" if grid and "," in a else "--set", a) for a in overrides)
        message += f"; did you mean {meant}?"
    return message


app = typer.Typer(
    name="dnnlab",
    help="Train a YAML-configured network with JAX and tell failed training from overfitting.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: where they are found, and downloading them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# the commands of `app` that train, and so compile and fit linear references that the cache
# folder keeps: each declares it where it is registered (`command`)
_TRAINING: set[str] = set()


def command(
    function: Callable[..., Any],
    name: Optional[str] = None,
    *,
    trains: bool,
    cls: Optional[type[typer.core.TyperCommand]] = None,
    group: Optional[typer.Typer] = None,
) -> None:
    """Register `function` as a command, in the order `--help` lists them.

    Args:
        function: the command; its docstring is its help.
        name: the command's name (default: Typer's, the function's name with dashes).
        trains: whether it trains (and so compiles and fits linear references): before it runs,
            a cache folder that cannot be written is said (`_before_command`).
        cls: its click command class (`OverridesCommand` for one that takes `--set`).
        group: the sub-app it belongs to (default: `app`); a sub-app's commands do not train.
    """
    if group is not None and trains:
        raise ValueError(f"{name or function.__name__}: only a command of the app itself can train")
    (group or app).command(name, cls=cls)(function)
    if trains:
        _TRAINING.add(name or function.__name__.lower().replace("_", "-"))


def trains(name: Optional[str]) -> bool:
    """Whether the command `name` of the app declared that it trains."""
    return name in _TRAINING


def _version() -> str:
    """The installed distribution's version (the package's own when it runs from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dnnlab")
    except PackageNotFoundError:
        from dnnlab.version import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        console.print(f"dnnlab {_version()}", markup=False)
        raise typer.Exit()


@app.callback()
def _before_command(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print dnnlab's version and exit"),
    ] = False,
) -> None:
    """Before a command that trains: a cache folder that cannot be written is said once (the
    runs go on without it), and so is a DNNLAB_LOG_EVERY that is not a number of seconds."""
    if trains(ctx.invoked_subcommand):
        from dnnlab.console import plain_every
        from dnnlab.runs import cache_exposure, cache_problem

        for problem in (cache_problem() or cache_exposure(), plain_every()[1]):
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

    if ds.regression:  # no classes to be imbalanced
        return
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
    """The console's live progress, unless --quiet: the bars in a terminal, a line per epoch (or
    every few seconds) in a pipe."""
    if quiet:
        return []
    from dnnlab.console import live_writer

    return [live_writer(console)]


def _seeds_progress(quiet: bool):
    """(each seed's live writers for `experiment.Shown.seed_writers`, the group to close), or
    (None, None) with --quiet: every seed's bar or lines, the first seed's with the header."""
    if quiet:
        return None, None
    from dnnlab.console import GroupProgress

    group = GroupProgress(console, keep=True)
    return (lambda index, seed: [group.writer(f"seed {seed}", header=index == 0)]), group


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
    """Log a finished run, seeds, sweep or fix folder to MLflow, and say so in one line (on
    stderr, beside the warnings: stdout keeps the run's own lines); what could not be logged is
    a warning (`again`: the command that logs it later), never an error."""
    if uri:
        from dnnlab.tracking import log_to_mlflow

        logged = log_to_mlflow(uri, folder, again)
        for problem in logged.problems:
            err_console.print(f"warning: {problem}", markup=False)
        line = logged.line(uri)
        if line is not None:
            err_console.print(line, markup=False)


WideOpt = Annotated[
    bool, typer.Option("--wide", help="Show the table with every column and every digit, uncut, however wide (a terminal wraps it)"),
]


def _print_table(rendered) -> None:
    """A table of dnnlab.tables with its lines: at the console's width, or under --wide at its own."""
    with console.at_width(rendered.width):
        for item in rendered.renderables:
            console.print(item, soft_wrap=False)


def _acc(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _stop_point(when: str) -> None:
    """A stop signal received so far ends the command here (exit 130, or 143 for SIGTERM): before
    a run starts, nothing has been written (dnnlab.interrupt)."""
    from dnnlab import interrupt

    try:
        interrupt.stop_point()
    except KeyboardInterrupt:
        raise _fail(f"interrupted {when}; nothing was written", EXIT_INTERRUPTED) from None
