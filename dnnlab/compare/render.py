"""The comparison as text: its table (`columns`: each cell abbreviated for the terminal and uncut
for compare.md and `--wide`), compare.md (`markdown`, with the tuning and what was not compared),
and `write` (compare.md, compare.json and the figures of `plots` into a folder)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

from dnnlab import runs, tables
from dnnlab.compare.comparison import Comparison
from dnnlab.compare.groups import Group, show
from dnnlab.compare.plots import write_plots
from dnnlab.compare.records import CompareError, is_run_folder
from dnnlab.runs import CLASS_METRICS

_num = runs.is_number


def _cell(mean: Optional[float], std: float, seeds: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 else f"{mean:.4f}"


def metric_words(metric: str) -> str:
    """A metric as a table's header says it: `val acc`, `val bal acc`, `train R^2`, `val MSE`."""
    split, _, measure = metric.partition("_")
    word = {"accuracy": "acc", "balanced_accuracy": "bal acc", "r2": "R^2", "mse": "MSE", "mae": "MAE"}.get(measure, measure)
    return f"{split} {word}"


HEADERS = ("seeds", "epochs run", "wall s", "verdict")  # the table's own columns, besides the metrics


def key_headers(comp: Comparison, taken: tuple[str, ...] = HEADERS) -> list[str]:
    """Each compared key's header: its last part (`depth`), or its last two parts when the last
    alone names more than one key of the runs' configs or another header (`optimizer.name` next
    to the run's `name`, `train.epochs` next to `pretrain.epochs`), else the whole key."""
    known = {k for r in comp.records for k in r.config} | set(comp.keys)

    def tail(key: str, parts: int) -> str:
        return ".".join(key.split(".")[-parts:])

    out = []
    for key in comp.keys:
        for parts in range(1, key.count(".") + 2):
            short = tail(key, parts)
            clash = sum(1 for k in known if k == short or k.endswith("." + short)) > 1 or short in taken
            if not clash or parts == key.count(".") + 1:
                break
        out.append(short)
    return out


def named(comp: Comparison, g: Group) -> str:
    """A configuration by its keys' headers (`key_headers`): `depth=6, optimizer.name=adam`."""
    if not comp.keys:
        return g.label
    return ", ".join(f"{h}={show(g.values.get(k))}" for k, h in zip(comp.keys, key_headers(comp)))


def columns(comp: Comparison) -> tuple[list[tables.Column], list[int]]:
    """The comparison's table, each cell abbreviated (the terminal) and uncut (compare.md,
    `--wide`), and the rows that are no configuration (the linear reference)."""
    seeds = any(len(g.runs) > 1 for g in comp.groups)
    balanced = comp.metric in CLASS_METRICS or comp.imbalanced
    fit = comp.fit
    cols = [tables.Column(h, [show(g.values.get(k)) for g in comp.groups], keep=True, fold=True, fold_as=f"{k}={{}}")
            for k, h in zip(comp.keys, key_headers(comp))]
    if seeds:
        cols.append(tables.Column("seeds", [str(len(g.runs)) for g in comp.groups], fold=True, fold_as="{} seeds", priority=2, right=True))
    ranked = {split: 6 if split == "val" else 5 if split == "train" else 3 for split in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        stats = [(g.stat(f"{split}_{fit}"), len(g.runs)) for g in comp.groups]
        cols.append(tables.Column(metric_words(f"{split}_{fit}"), [tables.mean_std(*s, n) for s, n in stats],
                                  [_cell(*s, n) for s, n in stats], priority=ranked[split], right=True))
    if balanced:
        stats = [(g.stat("val_balanced_accuracy"), len(g.runs)) for g in comp.groups]
        cols.append(tables.Column("val bal acc", [tables.mean_std(*s, n) for s, n in stats], [_cell(*s, n) for s, n in stats],
                                  priority=7 if comp.metric in CLASS_METRICS else 4, right=True))
    short, full = [], []
    for g in comp.groups:
        bests = [r.best(comp.metric) for r in g.runs]
        vals = [b[0] for b in bests if b[0] is not None]
        mean = statistics.fmean(vals) if vals else None
        short.append(f"{tables.number(mean)} ({','.join(str(b[1]) for b in bests)})" if vals else "-")
        full.append(f"{mean:.4f} ({', '.join(str(b[1]) for b in bests)})" if vals else "-")
    cols.append(tables.Column(f"best {metric_words(comp.metric)} (epoch)", short, full, priority=1))
    epochs = [[r.summary.get("epochs_run", runs.epochs_run(r.history)) for r in g.runs] for g in comp.groups]
    cols.append(tables.Column("epochs run", [str(e[0]) if len(set(e)) == 1 else ",".join(map(str, e)) for e in epochs],
                              [", ".join(map(str, e)) for e in epochs], fold=True, fold_as="{} epochs run", priority=2, right=True))
    walls = [[r.summary.get("wall_seconds") for r in g.runs if _num(r.summary.get("wall_seconds"))] for g in comp.groups]
    cols.append(tables.Column("wall s", [tables.number(statistics.fmean(w)) if w else "-" for w in walls],
                              [f"{statistics.fmean(w):.1f}" if w else "-" for w in walls], priority=0, right=True))
    verdicts = [[r.verdict or r.status for r in g.runs] for g in comp.groups]
    cols.append(tables.Column("verdict", [", ".join(f"{v} x{vs.count(v)}" if vs.count(v) > 1 else v for v in dict.fromkeys(vs)) for vs in verdicts],
                              keep=True, wrap=True))
    ref = comp.reference
    if ref is None:
        return cols, []
    _reference_row(cols, ref, len(comp.keys), fit)
    return cols, [len(comp.groups)]


def _reference_row(cols: list[tables.Column], ref: dict[str, Any], keys: int, fit: str) -> None:
    """The linear reference as one more row: named in the first key's column, its fit where the
    runs show theirs."""
    cells = {"seeds": "", "epochs run": str(ref.get("epochs", "-")), "verdict": "reference"}
    cells.update({metric_words(f"train_{fit}"): ref.get(f"train_{fit}"), metric_words(f"val_{fit}"): ref.get(f"val_{fit}"),
                  "val bal acc": ref.get("val_balanced_accuracy")})
    for i, c in enumerate(cols):
        value = ("linear reference" if i == 0 else "") if i < keys else cells.get(c.header, "-")
        short, uncut = (value, value) if isinstance(value, str) else (tables.number(value), _cell(value, 0.0, 1))
        c.cells.append(short)
        if c.full is not None:
            c.full.append(uncut)


def table_rows(comp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and uncut rows (compare.md)."""
    cols, _ = columns(comp)
    return [c.header for c in cols], [list(row) for row in zip(*(c.uncut() for c in cols))]


def markdown(comp: Comparison, plots: list[tuple[str, str]]) -> str:
    header, rows = table_rows(comp)
    best = comp.best
    lines = ["# Comparison", "", f"{tables.count(len(comp.records), 'run')} in {tables.count(len(comp.groups), 'configuration')}; "
             f"they differ in: {', '.join(comp.keys) or 'nothing but the seed'}. Metrics are the kept model's "
             f"(the restored best epoch, else the last), averaged over the seeds that finished (diverged, "
             f"interrupted and killed runs are listed, never averaged in); ± is the standard deviation over seeds.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if best:
        lines += ["", f"Best on {comp.metric}: **{named(comp, best)}**."]
    if comp.comparisons:
        lines += ["", "## Comparative verdict", ""] + [f"- {c['text']}" for c in comp.comparisons]
    for t in comp.tuning:
        lines += ["", "## Tuning", "", *tuning_lines(t)]
    if comp.orphans:
        lines += ["", "## Not compared", "", "Run folders that the manifest does not list (a member started over, or a "
                  "copy): never averaged in.", ""] + [f"- {p.name}" for p in comp.orphans]
    problems = sorted({f"{r.label}: {p}" for r in comp.records for p in r.problems})
    if problems:
        lines += ["", "## Incomplete runs", ""] + [f"- {p}" for p in problems]
    for name, caption in plots:
        lines += ["", f"{caption}.", "", f"![{caption}]({name})"]
    return "\n".join(lines) + "\n"


def tuning_lines(tune: dict[str, Any]) -> list[str]:
    """A tuned sweep's tuning as Markdown: per grid point, every value's score, the chosen one in bold."""
    key, metric, values = tune["key"], tune["metric"], tune.get("values", [])
    best = "lowest" if metric.endswith("loss") else "highest"
    how = (f"with every seed, and kept the value whose kept models had the {best} mean {metric} (a value at which a seed "
           "did not finish is never kept)" if tune.get("seeds") == "all" else
           f"on its first seed, and kept the value whose kept model had the {best} {metric}; its other seeds ran at "
           "that value alone")
    lines = [f"Each configuration trained at every {key} in {', '.join(show(v) for v in values)} {how}. The table "
             "above compares the configurations at their chosen values.", ""]
    for point in tune.get("points", []):
        where = ", ".join(f"{k}={show(v)}" for k, v in point.get("params", {}).items()) or "the config"
        scores = point.get("scores")
        if not scores:
            lines.append(f"- {where}: not chosen yet")
            continue
        shown = []
        for s in scores:
            value = s.get(metric)
            text = f"{show(s['value'])}: {value:.4f}" if isinstance(value, (int, float)) else f"{show(s['value'])}: {s.get('status')}"
            shown.append(f"**{text}**" if point.get("chosen") is not None and s["value"] == point["chosen"] else text)
        chosen = f"chose {show(point['chosen'])}" if point.get("chosen") is not None else "no value's trials all finished: nothing chosen"
        edge = (point.get("chosen") is not None and len(values) > 2 and all(_num(v) for v in values)
                and point["chosen"] in (min(values), max(values)))
        lines.append(f"- {where}: {chosen} ({'; '.join(shown)})" + (": at the edge of the values, the best may lie beyond them" if edge else ""))
    return lines


def write(comp: Comparison, out: Path) -> list[str]:
    """compare.md, compare.json and the plots into `out`; returns problems (plots not drawn).
    CompareError when `out` is a run folder: its own curves.png would be replaced."""
    if is_run_folder(out):
        raise CompareError(
            f"--out {out} is a run folder: the comparison's curves.png would replace the run's own; give a folder of its own"
        )
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    try:
        plots = write_plots(comp, out)
    except Exception as exc:  # a plot must never cost the comparison
        plots, problems = [], [f"plots not drawn: {type(exc).__name__}: {exc}"]
    runs.atomic_write_text(out / "compare.md", markdown(comp, plots))
    runs.atomic_write_text(out / "compare.json", json.dumps(comp.to_dict(), indent=2, default=str) + "\n")
    return problems
