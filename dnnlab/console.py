"""The console writers: in a terminal a Rich progress bar over epochs and steps with live metrics,
in a pipe (a CI log) a plain line per epoch or every few seconds; then a table."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional

from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from dnnlab.runs import Writer, origin_words, set_options, shell_command

# what a terminal would act on instead of showing: C0 and C1 control characters but for tab and
# newline (ESC starts sequences that move the cursor, clear the screen or set the window title),
# DEL, and the bidirectional overrides that reorder what is shown
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` (a class name, a column name, a path: text from data files) with every control
    character shown as its escape (`\\x1b`), so that what reaches the terminal is shown, never
    obeyed. Files (summary.json) keep the text exact."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


# the width of what is printed into a pipe or a file (a CI log has no width): wide enough for
# the tables, narrow enough to read (`SafeConsole.size`)
PIPED_WIDTH = 100


class SafeConsole(Console):
    """A Rich console that shows control characters as escapes in every string it renders: the
    CLI's printed lines, table cells and titles (`visible`). Rich markup in text from data is
    escaped where it is printed (rich.markup.escape).

    Its width, unless given, is read when it prints: COLUMNS, else the terminal's, else
    PIPED_WIDTH when the output is not a terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._given_width = kwargs.get("width")

    @property
    def size(self) -> ConsoleDimensions:
        dims = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._given_width is not None:
            return dims
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else dims.width if self.is_terminal else PIPED_WIDTH
        return ConsoleDimensions(width, dims.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def render_str(self, text: str, **kwargs: Any) -> Any:
        return super().render_str(visible(text), **kwargs)

    @contextmanager
    def at_width(self, width: Optional[int]) -> Iterator[None]:
        """Print at `width` columns within the block (None: as always), wider than the terminal
        too: a table shown uncut (`--wide`) that the terminal wraps or a file keeps whole."""
        saved = self._given_width, self._width
        if width is not None:
            self._given_width = self._width = width
        try:
            yield
        finally:
            self._given_width, self._width = saved


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fit_key(record: dict[str, Any]) -> tuple[str, str]:
    """(the metric a fit is shown by, its column word): accuracy, or R^2 for a regression record."""
    return ("r2", "R^2") if any(str(k).endswith("_r2") for k in record) else ("accuracy", "acc")


def metrics_line(m: dict[str, Any]) -> str:
    fit = fit_key(m)[0]
    parts = [f"train {_fmt(m.get('train_loss'))} / {_fmt(m.get(f'train_{fit}'), 3)}"]
    if m.get("val_loss") is not None:
        parts.append(f"val {_fmt(m.get('val_loss'))} / {_fmt(m.get(f'val_{fit}'), 3)}")
    return "  ".join(parts)


# piped (a CI log), a run prints a line per epoch, but at most one every this many seconds
# (the first and the last epoch always): a thousand fast epochs make a few hundred lines, not a
# thousand; DNNLAB_LOG_EVERY sets another number of seconds (0: every epoch)
PLAIN_EVERY_SECONDS = 2.0
LOG_EVERY_ENV = "DNNLAB_LOG_EVERY"


def plain_every() -> tuple[float, Optional[str]]:
    """(the seconds between plain lines, what is wrong with DNNLAB_LOG_EVERY or None)."""
    text = os.environ.get(LOG_EVERY_ENV, "").strip()
    if not text:
        return PLAIN_EVERY_SECONDS, None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        return PLAIN_EVERY_SECONDS, (
            f"{LOG_EVERY_ENV}={text!r} is not a number of seconds >= 0; "
            f"a piped run prints a line every {PLAIN_EVERY_SECONDS:g} s (0: every epoch)"
        )
    return seconds, None


def epoch_line(epoch: int, epochs: int, metrics: dict[str, Any]) -> str:
    """One epoch as a plain line: `epoch 3/10  train 0.4120 / 0.881  val 0.4550 / 0.862  2.1s`."""
    seconds = metrics.get("seconds")
    took = "" if seconds is None else f"  {seconds:.1f}s" if seconds >= 1 else f"  {seconds:.2f}s"
    return f"epoch {epoch}/{epochs}  {metrics_line(metrics)}{took}"


def header_line(info: dict[str, Any]) -> str:
    """What a run trains, before its first epoch (Rich markup)."""
    return (
        f"[bold]{info['params']:,}[/] parameters on [bold]{info['device']}[/]; "
        f"{info['train_size']:,} training examples, {info['steps_per_epoch']} steps of {info['batch_size']} per epoch"
    )


def epoch_bar(console: Console) -> Progress:
    """The live bars of the console: a description, the bar, done of total, the time, the metrics
    (a task's `metrics` field)."""
    return Progress(
        TextColumn("{task.description:<7}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        transient=False,
    )


class Pace:
    """When a plain line is due: at most one every `every` seconds, the same answer for every
    writer that asks about the same epoch (the vmapped seeds of a group print together)."""

    def __init__(self, every: Optional[float] = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`every`: seconds between lines (default `plain_every`)."""
        self.every, self.clock = plain_every()[0] if every is None else every, clock
        self.at: Optional[float] = None
        self.asked: Optional[tuple[int, bool]] = None

    def due(self, epoch: int, always: bool = False) -> bool:
        if self.asked is not None and self.asked[0] == epoch:
            return self.asked[1] or always
        now = self.clock()
        due = always or self.at is None or now - self.at >= self.every
        if due:
            self.at = now
        self.asked = (epoch, due)
        return due


class PlainWriter(Writer):
    """Shows training as plain lines, for a console that is not a terminal (a pipe, a CI log):
    one per epoch, or fewer (`Pace`), the first and the last always; then the summary table.

    Args:
        prefix: what starts each line (`seed 1`, `member 003`), when the run is one of a group.
        header: print the parameters line first; table: print the summary table at the end.
        pace: shared by the writers of a group; a fresh one by default.
    """

    def __init__(self, console: Console, *, prefix: str = "", header: bool = True, table: bool = True, pace: Optional[Pace] = None) -> None:
        self.console, self.prefix, self.header, self.table = console, prefix, header, table
        self.pace = pace or Pace()
        self.epochs = 0
        self.shown = False
        self.pending: Optional[str] = None

    def start(self, info: dict[str, Any]) -> None:
        self.epochs, self.shown, self.pending = info["epochs"], False, None
        if self.header:
            self.console.print(header_line(info))

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch == 0:  # the model at initialization: the bar shows it, a log starts at the first epoch
            return
        line = (f"{self.prefix}  " if self.prefix else "") + epoch_line(epoch, self.epochs, metrics)
        if self.pace.due(epoch, always=not self.shown or epoch >= self.epochs):
            self.console.print(line, markup=False)
            self.shown, self.pending = True, None
        else:
            self.pending = line  # the last epoch shown, if training stops before epochs

    def close(self) -> None:
        if self.pending is not None:
            self.console.print(self.pending, markup=False)
            self.pending = None

    def finish(self, summary: dict[str, Any]) -> None:
        self.close()
        if self.table:
            self.console.print(summary_table(summary))
            if (summary.get("data") or {}).get("imbalanced"):
                self.console.print(class_table(summary))


class RichWriter(Writer):
    """Shows training live on a Rich console; stop it with `close()` whatever happens.

    Alone, it owns its bars (epochs, then steps within the epoch). Given a `bar` that is already
    live (a sweep's member bar, the seeds of a group), it adds its rows to it, each description
    starting with `label`, and removes them when it finishes (the epochs row stays with `keep`).
    `header`: print the parameters line first; `table`: print the summary table at the end.
    """

    def __init__(
        self, console: Console, *, label: str = "", bar: Optional[Progress] = None, header: bool = True,
        table: bool = True, keep: bool = False,
    ) -> None:
        self.console, self.label, self.header, self.table, self.keep = console, label, header, table, keep
        self.shared = bar
        self.bar: Optional[Progress] = None
        self.epochs_task = self.steps_task = None
        self.steps = 0

    def start(self, info: dict[str, Any]) -> None:
        if self.header:
            self.console.print(header_line(info))
        self.steps = info["steps_per_epoch"]
        if self.shared is None:
            self.bar = epoch_bar(self.console)
            self.bar.start()
        else:
            self.bar = self.shared
        self.epochs_task = self.bar.add_task(f"{self.label}epochs", total=info["epochs"], metrics="")
        self.steps_task = None  # added with the first steps reported (vmapped seeds report only the first's)

    def progress(self, epoch: int, step: int) -> None:
        if self.bar is None:
            return
        if self.steps_task is None:
            self.steps_task = self.bar.add_task(f"{self.label}steps", total=self.steps, metrics="")
        self.bar.update(self.steps_task, completed=step)

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.bar is None:
            return
        label = "at init: " if epoch == 0 else ""
        self.bar.update(self.epochs_task, completed=epoch, metrics=label + metrics_line(metrics))
        if epoch > 0 and self.steps_task is not None:
            self.bar.update(self.steps_task, completed=self.steps)

    def close(self) -> None:
        if self.bar is None:
            return
        if self.shared is None:
            self.bar.stop()
        else:
            for task in (self.steps_task, None if self.keep else self.epochs_task):
                if task is not None:
                    self.bar.remove_task(task)
        self.bar = None

    def finish(self, summary: dict[str, Any]) -> None:
        self.close()
        if self.table:
            self.console.print(summary_table(summary))
            if (summary.get("data") or {}).get("imbalanced"):
                self.console.print(class_table(summary))


def live_writer(console: Console, **kwargs: Any) -> Writer:
    """A run's live progress on `console`: the Rich bars in a terminal, plain lines otherwise
    (a pipe, a CI log). `kwargs`: header, table, and a group's `prefix` (plain lines) or
    `label`, `bar` and `keep` (the bars)."""
    if console.is_terminal:
        return RichWriter(console, **{k: v for k, v in kwargs.items() if k in ("label", "bar", "header", "table", "keep")})
    return PlainWriter(console, **{k: v for k, v in kwargs.items() if k in ("prefix", "header", "table", "pace")})


class GroupProgress:
    """The live progress of a group of runs (the seeds of one config, a sweep's members): in a
    terminal one live display whose rows each run's writer adds under the group's own rows
    (`bar`); otherwise plain lines, each starting with the run's name, paced together.

    `keep`: a finished run's epochs row stays (the seeds); otherwise the next run's replaces it."""

    def __init__(self, console: Console, *, keep: bool = False) -> None:
        self.console, self.keep = console, keep
        self.pace = Pace()
        self._bar: Optional[Progress] = None

    @property
    def bar(self) -> Progress:
        """The live display (started on first use)."""
        if self._bar is None:
            self._bar = epoch_bar(self.console)
            self._bar.start()
        return self._bar

    def writer(self, name: str, *, header: bool = False) -> Writer:
        """The live writer of one run of the group, called `name` (`seed 1`, `member 003`)."""
        if not self.console.is_terminal:
            return PlainWriter(self.console, prefix=name, header=header, table=False, pace=self.pace)
        return RichWriter(self.console, label=f"{name} " if self.keep else "  ", bar=self.bar, header=header, table=False, keep=self.keep)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def summary_table(summary: dict[str, Any]) -> Table:
    best_epoch = summary.get("best_epoch")
    table = Table(title=Text(f"{summary.get('name')}: {summary.get('status')} after {summary.get('epochs_run')} epochs"))
    fit, word = fit_key(summary.get("final") or {})
    table.add_column("split")
    table.add_column("final loss", justify="right")
    table.add_column(f"final {word}", justify="right")
    best_label = f"best (epoch {best_epoch})" if best_epoch else "best"
    table.add_column(f"{best_label} loss", justify="right")
    table.add_column(f"{best_label} {word}", justify="right")
    imbalanced = bool((summary.get("data") or {}).get("imbalanced"))
    if imbalanced:  # accuracy flatters a net that favours the largest class
        table.add_column("final bal acc", justify="right")
        table.add_column(f"{best_label} bal acc", justify="right")
    final, best = summary.get("final") or {}, summary.get("best") or {}
    for split in ("train", "val", "test"):
        table.add_row(
            split,
            _fmt(final.get(f"{split}_loss")),
            _fmt(final.get(f"{split}_{fit}")),
            _fmt(best.get(f"{split}_loss")),
            _fmt(best.get(f"{split}_{fit}")),
            *((_fmt(final.get(f"{split}_balanced_accuracy")), _fmt(best.get(f"{split}_balanced_accuracy"))) if imbalanced else ()),
        )
    if (summary.get("loss") or {}).get("weighted"):
        table.caption = "losses are class-weighted means (train.class_weight)"
    elif fit == "r2":
        table.caption = "loss: the mean squared error on standardized targets; R^2: 0 predicts the mean, 1 is perfect"
    return table


def seeds_table(summary: dict[str, Any]) -> Table:
    """A multi-seed folder's table (its summary.json): each seed's kept model, then the mean ± std
    over the seeds that finished."""
    members = summary.get("members") or []
    fit, word = fit_key(summary.get("mean") or next((m.get("kept") or {} for m in members), {}))
    table = Table(title=Text(f"{summary.get('name')}: {summary.get('status')}, {len(members)} seeds ({summary.get('seed_mode')})"))
    table.add_column("seed", justify="right")
    table.add_column("epochs", justify="right")
    for split in ("train", "val", "test"):
        table.add_column(f"{split} {word}", justify="right")
    table.add_column("verdict")
    for m in members:
        kept = m.get("kept") or {}
        verdict = m.get("verdict") or "-"
        table.add_row(
            str(m.get("seed")), str(m.get("epochs_run", "-")), *(_fmt(kept.get(f"{split}_{fit}"), 3) for split in ("train", "val", "test")),
            verdict if m.get("status") in ("completed", None) else f"{m.get('status')}: {verdict}",
        )
    mean, std = summary.get("mean") or {}, summary.get("std") or {}
    cells = [f"{mean[k]:.3f}±{std.get(k) or 0:.3f}" if mean.get(k) is not None else "-" for k in (f"{s}_{fit}" for s in ("train", "val", "test"))]
    table.add_row("mean", "", *cells, ", ".join(summary.get("verdicts") or []), style="bold", end_section=True)
    if len(summary.get("aggregated_seeds") or []) < len(members):
        table.caption = f"the mean and std are over the seeds that finished: {', '.join(map(str, summary.get('aggregated_seeds') or [])) or 'none'}"
    return table


def class_table(summary: dict[str, Any]) -> Table:
    """The kept model's recall of each class on every split (summary.json's per_class)."""
    per_class = summary.get("per_class") or {}
    recall = per_class.get("recall") or {}
    data = summary.get("data") or {}
    names = data.get("classes") or []
    counts = data.get("class_counts") or {}
    splits = [s for s in ("train", "val", "test") if recall.get(s)]
    table = Table(title=f"recall of each class (the kept model, epoch {per_class.get('epoch')})")
    table.add_column("class")
    for split in splits:
        table.add_column(f"{split} examples", justify="right")
        table.add_column(f"{split} recall", justify="right")
    for c in range(len(recall[splits[0]]) if splits else 0):
        cells = []
        for split in splits:
            n = (counts.get("train_eval" if split == "train" and "train_eval" in counts else split) or [])
            cells += [str(n[c]) if c < len(n) else "-", _fmt(recall[split][c], 3)]
        table.add_row(str(names[c]) if c < len(names) else str(c), *cells)
    return table


VERDICT_STYLE = {
    "good-fit": "green",
    "overfitting": "yellow",
    "undertrained": "cyan",
    "failed-training": "red",
    "diverged": "red",
}


def remedy_options(remedy: dict[str, Any]) -> str:
    """A remedy (as in summary.json) as command-line options: `--set a --set b` (shell-quoted)."""
    return set_options(remedy.get("sets") or [remedy["set"]])


def diagnosis_panel(diagnosis: dict[str, Any], config_name: Any = "CONFIG", run_dir: Any = None):
    """The verdict, its evidence, warnings and remedies as a Rich panel (hanging indents);
    `config_name`: what its commands start from (a config file, or `runs.origin`'s words);
    `run_dir`: the run's folder, whose `--resume` is the first thing to try when the run
    stopped before its epoch budget (the diagnosis's `resume`)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    verdict = diagnosis["verdict"]
    style = VERDICT_STYLE.get(verdict, "white")
    head = Text.from_markup(
        f"[bold {style}]{verdict}[/]" + (f"  ({escape(', '.join(diagnosis['causes']))})" if diagnosis.get("causes") else "")
        + ("  [yellow]provisional: the run did not finish[/]" if diagnosis.get("provisional") else "")
    )
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for e in diagnosis.get("evidence", []):
        grid.add_row("•", Text(visible(e)))
    if diagnosis.get("warnings"):
        grid.add_row("", Text("warnings", style="bold yellow"))
        for w in diagnosis["warnings"]:
            grid.add_row(Text("!", style="yellow"), Text(visible(w)))
    remedies = diagnosis.get("remedies") or []
    if remedies:
        grid.add_row("", Text("remedies, in order", style="bold"))
        for i, r in enumerate(remedies, 1):
            grid.add_row(f"{i}.", Text.assemble((visible(remedy_options(r)), "bold"), "  ", visible(r["why"])))
    return Panel(Group(head, grid), title="diagnosis", border_style=style, expand=False)


def diagnosis_commands(diagnosis: dict[str, Any], config_name: Any = "CONFIG", run_dir: Any = None) -> list[str]:
    """The commands that follow a diagnosis panel: `try:` the first remedy, and `rate:` the range
    test when the cause is a learning rate; `config_name` and `run_dir` as in `diagnosis_panel`:
    a run that stopped before its epoch budget is resumed first, its `try:` the `--resume`."""
    remedies = diagnosis.get("remedies") or []
    if diagnosis.get("resume") and run_dir is not None:
        then = " (then the remedies)" if remedies else ""
        return [visible(f"try: {shell_command('dnnlab', 'run', '--resume', run_dir)}  "
                        f"the run stopped before its epochs ran out: finish them, then judge{then}")]
    if not remedies:
        return []
    lines = [f"try: {shell_command('dnnlab', 'run', *origin_words(config_name))} {remedy_options(remedies[0])}"]
    from dnnlab.diagnose import LR_CAUSES

    if set(diagnosis.get("causes") or []) & set(LR_CAUSES):
        # the remedies' rates come from a table; a range test measures one (`dnnlab fix --lr-find` runs it)
        lines.append(f"rate: {shell_command('dnnlab', 'lr-find', *origin_words(config_name))} measures a learning rate instead of guessing one")
    return [visible(line) for line in lines]


def print_diagnosis(console: Console, diagnosis: dict[str, Any], config_name: Any = "CONFIG", run_dir: Any = None) -> None:
    """The diagnosis panel, then its commands below it as whole lines: inside the panel a long
    command would be broken over its rows and pasted with the borders; outside it the terminal
    wraps it and a copy gives back the one line."""
    console.print(diagnosis_panel(diagnosis, config_name), soft_wrap=False)
    for line in diagnosis_commands(diagnosis, config_name, run_dir):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
