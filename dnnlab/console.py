"""The Rich console writer: a progress bar over epochs and steps with live metrics, then a table."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

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

from dnnlab.runs import Writer, origin_words, shell_command

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


class RichWriter(Writer):
    """Shows training live on a Rich console; stop it with `close()` whatever happens."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Optional[Progress] = None
        self.epochs_task = self.steps_task = None

    def start(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"[bold]{info['params']:,}[/] parameters on [bold]{info['device']}[/]; "
            f"{info['train_size']:,} training examples, {info['steps_per_epoch']} steps of {info['batch_size']} per epoch"
        )
        self.bar = Progress(
            TextColumn("{task.description:<7}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=False,
        )
        self.epochs_task = self.bar.add_task("epochs", total=info["epochs"], metrics="")
        self.steps_task = self.bar.add_task("steps", total=info["steps_per_epoch"], metrics="")
        self.bar.start()

    def progress(self, epoch: int, step: int) -> None:
        if self.bar is not None:
            self.bar.update(self.steps_task, completed=step)

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.bar is None:
            return
        label = "at init: " if epoch == 0 else ""
        self.bar.update(self.epochs_task, completed=epoch, metrics=label + metrics_line(metrics))
        if epoch > 0:
            self.bar.update(self.steps_task, completed=self.bar.tasks[1].total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def finish(self, summary: dict[str, Any]) -> None:
        self.close()
        self.console.print(summary_table(summary))
        if (summary.get("data") or {}).get("imbalanced"):
            self.console.print(class_table(summary))


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
    return shell_command(*(word for s in remedy.get("sets") or [remedy["set"]] for word in ("--set", s)))


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
    resumed = bool(diagnosis.get("resume")) and run_dir is not None
    if resumed:
        grid.add_row("try:", Text.assemble(
            (visible(shell_command("dnnlab", "run", "--resume", run_dir)), "bold"),
            "  the run stopped before its epochs ran out: finish them, then judge" + (" (and then the remedies)" if remedies else ""),
        ))
    if remedies:
        grid.add_row("", Text("remedies, in order", style="bold"))
        for i, r in enumerate(remedies, 1):
            grid.add_row(f"{i}.", Text.assemble((visible(remedy_options(r)), "bold"), "  ", visible(r["why"])))
        if not resumed:
            grid.add_row("try:", Text(visible(f"{shell_command('dnnlab', 'run', *origin_words(config_name))} {remedy_options(remedies[0])}")))
        if set(diagnosis.get("causes") or []) & {"lr-too-high", "lr-too-low", "plateau"}:
            # the remedies' rates come from a table; a range test measures one (`dnnlab fix --lr-find` runs it)
            grid.add_row("rate:", Text(visible(f"{shell_command('dnnlab', 'lr-find', *origin_words(config_name))} measures a learning rate instead of guessing one")))
    return Panel(Group(head, grid), title="diagnosis", border_style=style, expand=False)
