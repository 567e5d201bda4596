"""The comparison's figures: every configuration's training and validation curves (curves.png),
and the final fit against a numeric key (vs_<key>.png) when the runs differ in at most two keys.
Matplotlib is imported only here, and only when a figure is drawn."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Optional

from dnnlab import runs
from dnnlab.compare.comparison import Comparison
from dnnlab.compare.groups import Group, show
from dnnlab.compare.records import RunRecord

_num = runs.is_number
FIT_WORD = {"accuracy": "accuracy", "r2": "R^2"}


def _mean_curve(records: list[RunRecord], key: str) -> list[tuple[int, float]]:
    by_epoch: dict[int, list[float]] = {}
    for r in records:
        for rec in r.history:
            if _num(rec.get(key)):
                by_epoch.setdefault(rec["epoch"], []).append(rec[key])
    n = len(records)
    return [(e, statistics.fmean(v)) for e, v in sorted(by_epoch.items()) if len(v) == n]


def write_plots(comp: Comparison, out: Path) -> list[tuple[str, str]]:
    """Draw the figures into `out`; returns (file name, caption) of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10" if len(comp.groups) <= 10 else "tab20")
    made = [_curves(plt, colours, comp, out)]
    tuned = {t["key"] for t in comp.tuning}  # a chosen value is no axis: it follows its configuration
    numeric = [k for k in comp.keys if all(_num(g.values.get(k)) for g in comp.groups) and k not in tuned]
    if numeric and len([k for k in comp.keys if k not in tuned]) <= 2:
        key = numeric[0]
        series_key = next((k for k in comp.keys if k != key and k not in tuned), None)
        made.append(_against(plt, colours, comp, out, key, series_key))
    return made


def _curves(plt: Any, colours: Any, comp: Comparison, out: Path) -> tuple[str, str]:
    """curves.png: loss and fit by epoch, each configuration's mean over its seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    fit = comp.fit
    for i, g in enumerate(comp.groups):
        c = colours(i % colours.N)
        for ax, metric in zip(axes, ("loss", fit)):
            for split, style in (("train", "-"), ("val", "--")):
                pts = _mean_curve(g.runs, f"{split}_{metric}")
                if pts:
                    ax.plot(*zip(*pts), style, color=c, label=g.label if split == "train" else None)
    for ax, metric in zip(axes, ("loss", fit)):
        ax.set_xlabel("epoch")
        ax.set_title(f"{metric}: train solid, validation dashed")
        ax.grid(alpha=0.3)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    runs.write_figure(out / "curves.png", fig)
    plt.close(fig)
    return "curves.png", "Training (solid) and validation (dashed) curves, one colour per configuration (mean over seeds)"


def _against(plt: Any, colours: Any, comp: Comparison, out: Path, key: str, series_key: Optional[str]) -> tuple[str, str]:
    """vs_<key>.png: the kept models' final fit against numeric `key`, one series per value of
    `series_key` (the other differing key, if any), with the seeds' spread as error bars."""
    fit = comp.fit
    series: dict[str, list[Group]] = {}
    for g in comp.groups:
        series.setdefault(show(g.values.get(series_key)) if series_key else "", []).append(g)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, members) in enumerate(series.items()):
        members.sort(key=lambda g: g.values[key])
        xs = [g.values[key] for g in members]
        c = colours(i % colours.N)
        for split, style in (("train", "-o"), ("val", "--s")):
            stats = [g.stat(f"{split}_{fit}") for g in members]
            ys = [m if m is not None else float("nan") for m, _ in stats]
            ax.errorbar(xs, ys, yerr=[s for _, s in stats], fmt=style, color=c, capsize=3,
                        label=f"{series_key.split('.')[-1] + '=' + name + ', ' if series_key else ''}{'train' if split == 'train' else 'validation'}")
    ax.set_xlabel(key)
    ax.set_ylabel(f"{FIT_WORD[fit]} (final, kept model)")
    ax.set_title(f"{FIT_WORD[fit]} against {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    name = f"vs_{key.replace('.', '_')}.png"
    runs.write_figure(out / name, fig)
    plt.close(fig)
    return name, f"Final training and validation {FIT_WORD[fit]} against {key}"
