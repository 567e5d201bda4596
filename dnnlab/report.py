"""The run's report: the diagnosis into summary.json, report.md and PNG plots in the run folder.

Imports no JAX; matplotlib only when plots are drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dnnlab import baselines, runs
from dnnlab.config import Config
from dnnlab.diagnose import Diagnosis, diagnose

SPLITS = ("train", "val", "test")


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def _epoch_axis(ax: Any, label: str = "epoch") -> None:
    """An x axis of epochs: whole numbers only (no tick at 1.25), a grid."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _fit_limits(values: list[float], chance: Optional[float], r2: bool) -> tuple[float, float]:
    """The fit axis: up to a perfect fit (1) and down to chance (the majority share; R^2 0, the
    mean), so that a run at chance reads as a flat line on the chance line, not as noise blown up
    to fill the axis. R^2 below -1 (a fit far worse than the mean, at the first epochs) is cut."""
    floor = 0.0 if r2 else (chance if chance is not None else min(values, default=0.0))
    low = min([floor, *values])
    if r2:
        low = max(low, -1.0)
    pad = 0.02 * (1.0 - low) if low < 1.0 else 0.02
    return max(low - pad, -1.05 if r2 else 0.0), 1.0 + pad


def plot_curves(
    history: list[dict[str, Any]], best_epoch: Optional[int], path: Path,
    chance: Optional[float] = None, chance_loss: Optional[float] = None,
) -> None:
    """Loss and accuracy per epoch for train / validation / test, the best epoch marked; the fit
    axis spans chance (`chance`, marked with a line; R^2 0) to a perfect fit, and the loss axis
    marks the loss of predicting the class prior (`chance_loss`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = "r2" if any(k.endswith("_r2") for r in history for k in r) else "accuracy"  # data.task: regression
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", fit)):
        values: list[float] = []
        for split, style in zip(SPLITS, ("-", "--", ":")):
            points = [(r["epoch"], r.get(f"{split}_{metric}")) for r in history]
            points = [(e, v) for e, v in points if runs.is_number(v)]
            if points:
                ax.plot(*zip(*points), style, marker=".", label=split)
                values += [v for _, v in points]
        if best_epoch:
            ax.axvline(best_epoch, color="grey", lw=0.8, ls="-.", label=f"best epoch {best_epoch}")
        if metric == "loss" and chance_loss is not None:
            ax.axhline(chance_loss, color="firebrick", lw=0.8, ls=":", label=f"the prior's loss {chance_loss:.3g}")
        if metric == fit:
            r2 = fit == "r2"
            line = 0.0 if r2 else chance
            if line is not None:
                ax.axhline(line, color="firebrick", lw=0.8, ls=":", label="the mean (R^2 0)" if r2 else f"chance {line:.3g}")
            ax.set_ylim(*_fit_limits(values, chance, r2))
        _epoch_axis(ax)
        ax.set_ylabel("R^2" if metric == "r2" else metric)
        ax.legend()
    # a title at a fixed height (y=1): placed automatically, matplotlib measures every tick label
    # of the axes to avoid them, a quarter of the plot's drawing time
    axes[0].set_title("loss (evaluation mode)", y=1.0)
    axes[1].set_title("R^2 (0: the mean, 1: perfect)" if fit == "r2" else "accuracy", y=1.0)
    # fixed margins: tight_layout draws the whole figure once more before savefig draws it
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.12, top=0.92, wspace=0.18)
    runs.write_figure(path, fig)
    plt.close(fig)


def plot_layers(
    history: list[dict[str, Any]], key: str, title: str, path: Path, ylabel: str, log: bool = False, share: bool = False
) -> bool:
    """One line per layer of a per-layer instrument over the epochs; False if it was not recorded.
    A `share` (a fraction of units, an evenness) is drawn on 0-1 whatever its values: 0.04 of
    saturated outputs is a flat line near 0, not a curve across the axis."""
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
    if share:
        ax.set_ylim(-0.02, 1.02)
    _epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title, y=1.0)  # a fixed height: see plot_curves
    ax.legend(fontsize="small", ncol=2 if layers > 12 else 1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.subplots_adjust(left=0.09, right=0.70 if layers > 12 else 0.82, bottom=0.12, top=0.91)
    runs.write_figure(path, fig)
    plt.close(fig)
    return True


def plot_pretrain(record: Optional[dict[str, Any]], path: Path) -> bool:
    """The reconstruction error of each layer's RBM per pretraining epoch (summary.json's
    `pretrain`); False when the run was not pretrained."""
    layers = (record or {}).get("layers") or []
    if not layers:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4))
    cmap = plt.get_cmap("viridis")
    for i, layer in enumerate(layers):
        errors = [(e, v) for e, v in enumerate(layer.get("reconstruction_error") or [], 1) if v is not None and v > 0]
        if errors:
            ax.plot(*zip(*errors), color=cmap(i / max(len(layers) - 1, 1)), marker=".",
                    label=f"layer {layer.get('layer')} ({layer.get('seconds', 0):.1f} s)")
    ax.set_yscale("log")
    _epoch_axis(ax, "pretraining epoch")
    ax.set_ylabel("reconstruction error")
    ax.set_title(f"RBM reconstruction error (mean squared, per visible unit; log); {record.get('seconds', 0):.1f} s in all", y=1.0)
    ax.legend(fontsize="small", ncol=2 if len(layers) > 12 else 1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.subplots_adjust(left=0.09, right=0.70 if len(layers) > 12 else 0.80, bottom=0.12, top=0.91)
    runs.write_figure(path, fig)
    plt.close(fig)
    return True


def write_plots(run_dir: Path, history: list[dict[str, Any]], summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Draw the plots that the records allow; returns (file name, caption) pairs."""
    out = []
    regression = any(k.endswith("_r2") for r in history for k in r)
    base = None if regression else baselines.of_summary(summary)
    plot_curves(history, summary.get("best_epoch"), run_dir / "curves.png",
                base.chance if base else None, base.prior_loss if base else None)
    fit = "R^2" if regression else "accuracy"
    out.append(("curves.png", f"Loss and {fit} per epoch (train, validation, test); the best epoch and chance marked"))
    if plot_layers(history, "grad_rms", "RMS of the loss gradient of each layer's weights (log)", run_dir / "gradients.png",
                   "gradient RMS", log=True):
        out.append(("gradients.png", "Per-layer gradient RMS: vanishing gradients show as the early layers far below the output"))
    for key, title, ylabel in (
        ("dead_fraction", "fraction of dead units (<= 0 on every probe example)", "fraction of units"),
        ("saturated_fraction", "fraction of saturated outputs (within 0.02 of the bounds)", "fraction of outputs"),
        ("maxout_evenness", "maxout: how evenly the pieces win (1 = even)", "evenness"),
    ):
        name = key.replace("_fraction", "").replace("_evenness", "") + ".png"
        if plot_layers(history, key, title, run_dir / name, ylabel, share=True):
            out.append((name, title[0].upper() + title[1:] + ", per layer"))
    pre = summary.get("pretrain")
    if plot_pretrain(pre, run_dir / "pretrain.png"):
        out.append(("pretrain.png", f"Greedy layer-wise RBM pretraining before training (CD-{pre.get('cd_steps')}, "
                    f"{pre.get('epochs')} epochs per layer, {pre.get('seconds', 0):.1f} s): each layer's reconstruction "
                    "error per epoch"))
    return out


def markdown(
    cfg: Config, summary: dict[str, Any], diagnosis: Diagnosis, plots: list[tuple[str, str]], config_name: Any,
    run_dir_name: str = "RUN_DIR",
) -> str:
    """report.md: verdict, evidence, remedies, warnings, the reference, metrics, plots."""
    lines = [f"# {cfg.name}: {diagnosis.verdict}", ""]
    lines.append(
        f"Status **{summary.get('status')}** after {summary.get('epochs_run')} epochs; "
        f"{summary.get('params', 0):,} parameters on {summary.get('device')}; "
        f"{summary.get('wall_seconds', 0):.1f} s."
    )
    lines += _verdict(diagnosis, config_name, run_dir_name)
    regression = (summary.get("data") or {}).get("task") == "regression"
    lines += _reference(summary.get("reference"), regression)
    final, best = summary.get("final") or {}, summary.get("best") or {}
    if regression:
        lines += _regression_metrics(summary, final, best)
        return "\n".join(lines + _plots(plots)) + "\n"
    lines += _classification_metrics(summary, final, best)
    lines += _classes(cfg, summary)
    return "\n".join(lines + _plots(plots)) + "\n"


def _verdict(diagnosis: Diagnosis, config_name: Any, run_dir_name: str) -> list[str]:
    """The verdict section: causes, evidence, warnings, the resume command, the remedies in order."""
    lines = ["", f"## Verdict: {diagnosis.verdict}"]
    if diagnosis.causes:
        lines.append(f"Causes: {', '.join(diagnosis.causes)}.")
    lines += ["", "Evidence:"] + [f"- {e}" for e in diagnosis.evidence]
    if diagnosis.warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in diagnosis.warnings]
    if diagnosis.resume:
        lines += [
            "", "The run stopped before its epochs ran out: finish them first, then judge:", "",
            "```bash", runs.shell_command("dnnlab", "run", "--resume", run_dir_name), "```",
        ]
    if diagnosis.remedies:
        lines += ["", "Remedies, in order:"] + [f"- `{r.command}`: {r.why}" for r in diagnosis.remedies]
        first = diagnosis.remedies[0].command
        lines += ["", "Try the first one:", "", "```bash", f"{runs.shell_command('dnnlab', 'run', *runs.origin_words(config_name))} {first}", "```"]
        lines += ["", f"Or train and measure the top remedies: `{runs.shell_command('dnnlab', 'fix', run_dir_name)}`."]
    return lines


def _reference(ref: Any, regression: bool) -> list[str]:
    """The reference section: what least squares (regression) or a linear model reaches on the same examples."""
    if isinstance(ref, dict) and regression:
        return [
            "", "## Reference",
            "",
            f"Least squares (closed form, ridge {ref.get('ridge', 0):g}) on the same training examples reaches training "
            f"R^2 {_fmt(ref.get('train_r2'))} and validation R^2 {_fmt(ref.get('val_r2'))}: a deeper net that fits its "
            "training set worse has failed to train.",
        ]
    if isinstance(ref, dict):
        return [
            "", "## Reference",
            "",
            f"A linear model (softmax regression, {ref.get('epochs')} epochs of Adam at 1e-2) on the same training "
            f"examples reaches training accuracy {_fmt(ref.get('train_accuracy'))} and validation accuracy "
            f"{_fmt(ref.get('val_accuracy'))}{' (cached)' if ref.get('cached') else ''}: a deeper net that fits its "
            "training set worse has failed to train.",
        ]
    return []


def _classification_metrics(summary: dict[str, Any], final: dict[str, Any], best: dict[str, Any]) -> list[str]:
    """The metrics table of a classification run: each split's final and best loss and accuracy."""
    lines = ["", "## Metrics", "", f"| split | final loss | final accuracy | best loss (epoch {summary.get('best_epoch')}) | best accuracy |", "|---|---|---|---|---|"]
    for split in SPLITS:
        lines.append(
            f"| {split} | {_fmt(final.get(f'{split}_loss'))} | {_fmt(final.get(f'{split}_accuracy'))} | "
            f"{_fmt(best.get(f'{split}_loss'))} | {_fmt(best.get(f'{split}_accuracy'))} |"
        )
    return lines


def _plots(plots: list[tuple[str, str]]) -> list[str]:
    """The plots section: each plot with its caption; nothing without plots."""
    lines: list[str] = []
    if plots:
        lines += ["", "## Plots"]
        for name, caption in plots:
            lines += ["", f"{caption}.", "", f"![{caption}]({name})"]
    return lines


def _regression_metrics(summary: dict[str, Any], final: dict[str, Any], best: dict[str, Any]) -> list[str]:
    """The `## Metrics` section of a regression run: the standardized loss, and MSE, MAE and R^2
    in the target's own units, final and best."""
    target = (summary.get("data") or {}).get("target") or {}
    lines = [
        "", "## Metrics", "",
        f"Targets were standardized with the training split's mean {_fmt(target.get('mean'))} and standard deviation "
        f"{_fmt(target.get('std'))}: the loss is the mean squared error in those units (1 for predicting the mean); "
        "MSE and MAE are in the target's own units; R^2 is 0 for predicting the mean and 1 for a perfect fit.",
        "",
        f"| split | final loss | final MSE | final MAE | final R^2 | best R^2 (epoch {summary.get('best_epoch')}) |",
        "|---|---|---|---|---|---|",
    ]
    for split in SPLITS:
        lines.append(
            f"| {split} | {_fmt(final.get(f'{split}_loss'))} | {_fmt(final.get(f'{split}_mse'))} | "
            f"{_fmt(final.get(f'{split}_mae'))} | {_fmt(final.get(f'{split}_r2'))} | {_fmt(best.get(f'{split}_r2'))} |"
        )
    return lines


def _classes(cfg: Config, summary: dict[str, Any]) -> list[str]:
    """The `## Classes` section: chance from the data, whether the losses are class-weighted, and
    the kept model's balanced accuracy and recall of each class."""
    base = baselines.of_summary(summary)
    per_class = summary.get("per_class") if isinstance(summary.get("per_class"), dict) else {}
    recall = per_class.get("recall") or {}
    splits = [s for s in SPLITS if isinstance(recall.get(s), list)]
    if not splits:
        return []
    weights = (summary.get("loss") or {}).get("class_weights")
    lines = ["", "## Classes", "",
             f"The largest class, {base.class_name(base.majority_class)!r}, holds {100 * base.majority:.1f}% of the training "
             f"split: a net that always predicts it is {base.majority:.3f} accurate, and predicting the classes' shares costs "
             f"a cross-entropy of {base.prior_loss:.3f}. The diagnosis measures the fit from there (skill 0) to a perfect "
             "fit (skill 1)."
             + (" The data are imbalanced: judge the model by its balanced accuracy and each class's recall." if base.imbalanced(cfg.diagnosis.imbalance_share) else ""),
             "",
             ("The losses are class-weighted means (`train.class_weight`: " + ", ".join(f"{base.class_name(c)} {w:.3g}" for c, w in enumerate(weights)) + ")."
              if weights else "The losses are unweighted means."),
             "", f"Recall of each class, the kept model (epoch {per_class.get('epoch')}):", "",
             "| class | " + " | ".join(f"{s} recall" for s in splits) + " |", "|---|" + "---|" * len(splits)]
    kept = runs.kept_metrics(summary)
    for c in range(len(recall[splits[0]])):
        lines.append(f"| {base.class_name(c)} | " + " | ".join(_fmt(recall[s][c] if c < len(recall[s]) else None) for s in splits) + " |")
    lines.append("| **balanced accuracy** | " + " | ".join(_fmt(kept.get(f"{s}_balanced_accuracy")) for s in splits) + " |")
    return lines


def finalize(
    run_dir: Path, cfg: Config, history: list[dict[str, Any]], summary: dict[str, Any], config_name: Any = "config.yaml",
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
    config_name: Any = "config.yaml",
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
