"""The Rich console writer: a progress bar over epochs and steps with live metrics, then a table."""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dnnlab.runs import Writer


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def metrics_line(m: dict[str, Any]) -> str:
    parts = [f"train {_fmt(m.get('train_loss'))} / {_fmt(m.get('train_accuracy'), 3)}"]
    if m.get("val_loss") is not None:
        parts.append(f"val {_fmt(m.get('val_loss'))} / {_fmt(m.get('val_accuracy'), 3)}")
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


def summary_table(summary: dict[str, Any]) -> Table:
    best_epoch = summary.get("best_epoch")
    table = Table(title=f"{summary.get('name')}: {summary.get('status')} after {summary.get('epochs_run')} epochs")
    table.add_column("split")
    table.add_column("final loss", justify="right")
    table.add_column("final acc", justify="right")
    best_label = f"best (epoch {best_epoch})" if best_epoch else "best"
    table.add_column(f"{best_label} loss", justify="right")
    table.add_column(f"{best_label} acc", justify="right")
    final, best = summary.get("final") or {}, summary.get("best") or {}
    for split in ("train", "val", "test"):
        table.add_row(
            split,
            _fmt(final.get(f"{split}_loss")),
            _fmt(final.get(f"{split}_accuracy")),
            _fmt(best.get(f"{split}_loss")),
            _fmt(best.get(f"{split}_accuracy")),
        )
    return table


VERDICT_STYLE = {
    "good-fit": "green",
    "overfitting": "yellow",
    "undertrained": "cyan",
    "failed-training": "red",
    "diverged": "red",
}


def remedy_options(remedy: dict[str, Any]) -> str:
    """A remedy (as in summary.json) as command-line options: `--set a --set b`."""
    return " ".join(f"--set {s}" for s in remedy.get("sets") or [remedy["set"]])


def diagnosis_panel(diagnosis: dict[str, Any], config_name: str = "CONFIG"):
    """The verdict, its evidence, warnings and remedies as a Rich panel (hanging indents)."""
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
        grid.add_row("•", Text(e))
    if diagnosis.get("warnings"):
        grid.add_row("", Text("warnings", style="bold yellow"))
        for w in diagnosis["warnings"]:
            grid.add_row(Text("!", style="yellow"), Text(w))
    remedies = diagnosis.get("remedies") or []
    if remedies:
        grid.add_row("", Text("remedies, in order", style="bold"))
        for i, r in enumerate(remedies, 1):
            grid.add_row(f"{i}.", Text.assemble((remedy_options(r), "bold"), "  ", r["why"]))
        grid.add_row("try:", Text(f"dnnlab run {config_name} {remedy_options(remedies[0])}"))
        if set(diagnosis.get("causes") or []) & {"lr-too-high", "lr-too-low", "plateau"}:
            # the remedies' rates come from a table; a range test measures one (`dnnlab fix --lr-find` runs it)
            grid.add_row("rate:", Text(f"dnnlab lr-find {config_name} measures a learning rate instead of guessing one"))
    return Panel(Group(head, grid), title="diagnosis", border_style=style, expand=False)
