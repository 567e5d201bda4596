"""The run's report: the diagnosis into summary.json, report.md and PNG plots in the run folder.

Imports no JAX; matplotlib only when plots are drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dnnlab.config import Config
from dnnlab.diagnose import Diagnosis, diagnose
from dnnlab import runs

SPLITS = ("train", "val", "test")


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def plot_curves(history: list[dict[str, Any]], best_epoch: Optional[int], path: Path) -> None:
    """Loss and accuracy per epoch for train / validation / test, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split, style in zip(SPLITS, ("-", "--", ":")):
            points = [(r["epoch"], r.get(f"{split}_{metric}")) for r in history]
            points = [(e, v) for e, v in points if v is not None]
            if points:
                ax.plot(*zip(*points), style, marker=".", label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", lw=0.8, ls="-.", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    # a title at a fixed height (y=1): placed automatically, matplotlib measures every tick label
    # of the axes to avoid them, a quarter of the plot's drawing time
    axes[0].set_title("loss (evaluation mode)", y=1.0)
    axes[1].set_title("accuracy", y=1.0)
    # fixed margins: tight_layout draws the whole figure once more before savefig draws it
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.12, top=0.92, wspace=0.18)
    runs.write_figure(path, fig)
    plt.close(fig)


def plot_layers(history: list[dict[str, Any]], key: str, title: str, path: Path, log: bool = False) -> bool:
    """One line per layer of a per-layer instrument over the epochs; False if it was not recorded."""
    rows = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), list)]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = len(rows[0][1])
    fig, ax = plt.subplots(figsize=(8.5, 4))
    cmap = plt.get_cmap("viridis")
    for i in range(layers):
        points = [(e, v[i]) for e, v in rows if i < len(v) and v[i] is not None and (v[i] > 0 or not log)]
        if points:
            label = f"layer {i + 1}" if key != "grad_rms" or i < layers - 1 else "output"
            ax.plot(*zip(*points), color=cmap(i / max(layers - 1, 1)), marker=".", label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title(title, y=1.0)  # a fixed height: see plot_curves
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if layers > 12 else 1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.subplots_adjust(left=0.09, right=0.70 if layers > 12 else 0.82, bottom=0.12, top=0.91)
    runs.write_figure(path, fig)
    plt.close(fig)
    return True


def write_plots(run_dir: Path, history: list[dict[str, Any]], summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Draw the plots that the records allow; returns (file name, caption) pairs."""
    out = []
    plot_curves(history, summary.get("best_epoch"), run_dir / "curves.png")
    out.append(("curves.png", "Loss and accuracy per epoch (train, validation, test); the best epoch marked"))
    if plot_layers(history, "grad_rms", "RMS of the loss gradient of each layer's weights (log)", run_dir / "gradients.png", log=True):
        out.append(("gradients.png", "Per-layer gradient RMS: vanishing gradients show as the early layers far below the output"))
    for key, title in (
        ("dead_fraction", "fraction of dead units (<= 0 on every probe example)"),
        ("saturated_fraction", "fraction of saturated outputs (within 0.02 of the bounds)"),
        ("maxout_evenness", "maxout: how evenly the pieces win (1 = even)"),
    ):
        name = key.replace("_fraction", "").replace("_evenness", "") + ".png"
        if plot_layers(history, key, title, run_dir / name):
            out.append((name, title[0].upper() + title[1:] + ", per layer"))
    return out


def markdown(
    cfg: Config, summary: dict[str, Any], diagnosis: Diagnosis, plots: list[tuple[str, str]], config_name: str,
    run_dir_name: str = "RUN_DIR",
) -> str:
    """report.md: verdict, evidence, remedies, warnings, the reference, metrics, plots."""
    lines = [f"# {cfg.name}: {diagnosis.verdict}", ""]
    lines.append(
        f"Status **{summary.get('status')}** after {summary.get('epochs_run')} epochs; "
        f"{summary.get('params', 0):,} parameters on {summary.get('device')}; "
        f"{summary.get('wall_seconds', 0):.1f} s."
    )
    lines += ["", f"## Verdict: {diagnosis.verdict}"]
    if diagnosis.causes:
        lines.append(f"Causes: {', '.join(diagnosis.causes)}.")
    lines += ["", "Evidence:"] + [f"- {e}" for e in diagnosis.evidence]
    if diagnosis.warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in diagnosis.warnings]
    if diagnosis.remedies:
        lines += ["", "Remedies, in order:"] + [f"- `{r.command}`: {r.why}" for r in diagnosis.remedies]
        first = diagnosis.remedies[0].command
        lines += ["", "Try the first one:", "", "```bash", f"{runs.shell_command('dnnlab', 'run', config_name)} {first}", "```"]
        lines += ["", f"Or train and measure the top remedies: `{runs.shell_command('dnnlab', 'fix', run_dir_name)}`."]
    ref = summary.get("reference")
    if isinstance(ref, dict):
        lines += [
            "", "## Reference",
            "",
            f"A linear model (softmax regression, {ref.get('epochs')} epochs of Adam at 1e-2) on the same training "
            f"examples reaches training accuracy {_fmt(ref.get('train_accuracy'))} and validation accuracy "
            f"{_fmt(ref.get('val_accuracy'))}{' (cached)' if ref.get('cached') else ''}: a deeper net that fits its "
            "training set worse has failed to train.",
        ]
    final, best = summary.get("final") or {}, summary.get("best") or {}
    lines += ["", "## Metrics", "", f"| split | final loss | final accuracy | best loss (epoch {summary.get('best_epoch')}) | best accuracy |", "|---|---|---|---|---|"]
    for split in SPLITS:
        lines.append(
            f"| {split} | {_fmt(final.get(f'{split}_loss'))} | {_fmt(final.get(f'{split}_accuracy'))} | "
            f"{_fmt(best.get(f'{split}_loss'))} | {_fmt(best.get(f'{split}_accuracy'))} |"
        )
    if plots:
        lines += ["", "## Plots"]
        for name, caption in plots:
            lines += ["", f"{caption}.", "", f"![{caption}]({name})"]
    return "\n".join(lines) + "\n"


def finalize(
    run_dir: Path, cfg: Config, history: list[dict[str, Any]], summary: dict[str, Any], config_name: str = "config.yaml",
    *, draw: bool = True,
) -> tuple[Diagnosis, list[str]]:
    """Diagnose the run and write summary.json (with `diagnosis`), report.md and the plots.

    With `draw=False` report.md is written without its plots; `draw_plots` adds them later
    (the CLI prints the verdict first: plotting is most of what follows training).
    Returns:
        (diagnosis, problems): problems are non-fatal (a plot that could not be drawn).
    """
    diagnosis = diagnose(history, cfg, summary)
    summary = {**summary, "diagnosis": diagnosis.to_dict()}
    runs.write_summary(run_dir, summary)
    if not draw:
        runs.atomic_write_text(run_dir / runs.REPORT, markdown(cfg, summary, diagnosis, [], config_name, str(run_dir)))
        return diagnosis, []
    return diagnosis, draw_plots(run_dir, cfg, history, summary, diagnosis, config_name)


def draw_plots(
    run_dir: Path, cfg: Config, history: list[dict[str, Any]], summary: dict[str, Any], diagnosis: Diagnosis,
    config_name: str = "config.yaml",
) -> list[str]:
    """Draw the plots and write report.md with them; returns the problems (plots not drawn)."""
    problems: list[str] = []
    try:
        plots = write_plots(run_dir, history, summary)
    except Exception as exc:  # a plot must never cost the run its report
        plots, problems = [], [f"plots not drawn: {type(exc).__name__}: {exc}"]
    runs.atomic_write_text(run_dir / runs.REPORT, markdown(cfg, summary, diagnosis, plots, config_name, str(run_dir)))
    return problems


def preload_matplotlib() -> None:
    """Import matplotlib (Agg) in a background thread: it overlaps with XLA's compilation and the
    training, which release the GIL, instead of following them."""
    import threading

    def load() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except Exception:  # the plots report their own failure later
            pass

    thread = threading.Thread(target=load, name="dnnlab-preload-matplotlib", daemon=True)
    thread.start()
    _preloading.append(thread)


_preloading: list[Any] = []


def finish_preloading(timeout: float = 10.0) -> None:
    """Wait for the background import: a process that exits while a thread is half-way through
    importing a C extension can crash in the interpreter's shutdown."""
    while _preloading:
        _preloading.pop().join(timeout)
