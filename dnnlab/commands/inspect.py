"""Reading runs back: `dnnlab diagnose`, `compare` and `evaluate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dnnlab.commands.common import (
    Checkpoint,
    Metric,
    WideOpt,
    _escape,
    _fail,
    _load_data,
    _print_table,
    console,
    err_console,
)
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_FAILED,
)


def _diagnose_folder(run_dir: Path, write: bool):
    """The Diagnosis of one run folder; with `write`, also summary.json, report.md and plots."""
    from dnnlab.config import ConfigError
    from dnnlab.diagnose import diagnose as run_rules
    from dnnlab.runs import epochs_run, load_run

    try:
        history, cfg, summary = load_run(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise _fail(_escape(str(exc))) from None
    if not write:
        return run_rules(history, cfg, summary)
    if not summary.get("status"):
        # a killed run: its summary says so, never a status-less one
        summary = {"name": cfg.name, "status": "unfinished", "epochs_run": epochs_run(history), **summary}
    from dnnlab.report import finalize

    try:
        return finalize(run_dir, cfg, history, summary)[0]
    except OSError as exc:
        raise _fail(_escape(f"{run_dir}: cannot write the report ({exc})"), EXIT_FAILED) from None


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
    from dnnlab.console import print_diagnosis

    for member in members:
        print_diagnosis(console, results[member.name], str(member / runs.CONFIG), member)


def _compare_and_print(targets: list[str], out: Optional[Path], metric: str, as_json: bool, wide: bool = False) -> None:
    """Compare the targets and print the table; write compare.md and the plots into `out`, or,
    when it is None, into the one sweep folder that is the only target (else write nothing)."""
    from dnnlab import compare as comparing
    from dnnlab import tables

    try:
        comp, sweeps_found = comparing.compare(targets, metric)
    except comparing.CompareError as exc:
        raise _fail(_escape(str(exc))) from None
    if out is None and len(sweeps_found) == 1 and len(targets) == 1:
        out = sweeps_found[0]
    problems = []
    try:
        if out is not None:
            problems = comparing.write(comp, out)
    except comparing.CompareError as exc:
        raise _fail(_escape(str(exc))) from None
    except OSError as exc:
        raise _fail(_escape(f"cannot write the comparison to {out}: {exc}")) from None
    if as_json:
        sys.stdout.write(json.dumps(comp.to_dict(), indent=2, default=str) + "\n")
        return
    cols, reference = comparing.columns(comp)
    sources = [str(out / "compare.md"), "--json"] if out is not None else ["--json", "--out DIR (compare.md)"]
    title = f"{tables.count(len(comp.records), 'run')}, {tables.count(len(comp.groups), 'configuration')}"
    _print_table(tables.render(cols, console.width, title=title, wide=wide, sources=sources, loose_rows=reference))
    if comp.best:
        console.print(f"best on {comp.metric}: {comparing.named(comp, comp.best)}", markup=False)
    for c in comp.comparisons:
        console.print(f"  • {c['text']}", markup=False)
    for rec in comp.records:
        for p in rec.problems:
            err_console.print(f"note: {rec.label}: {p}", markup=False)
    for tune in comp.tuning:
        for line in comparing.tuning_lines(tune):
            if line.startswith("- "):
                console.print(f"  tuned {tune['key']} on {tune['metric']}: {line[2:].replace('**', '')}", markup=False)
    for orphan in comp.orphans:
        err_console.print(f"note: {orphan.name}: not in its sweep's manifest (a member started over?): not compared", markup=False)
    for p in problems:
        err_console.print(f"warning: {p}", markup=False)
    if out is not None:
        console.print(f"wrote {out / 'compare.md'}", markup=False)


def compare_cmd(
    targets: Annotated[list[str], typer.Argument(help="Run folders, sweep folders or globs", show_default=False)],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Write compare.md, compare.json and the plots into this folder (default: into the sweep folder when the one target is a sweep, else nothing is written)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON")] = False,
    metric: Annotated[Metric, typer.Option("--metric", help="Metric that ranks the runs")] = Metric.val_accuracy,
    wide: WideOpt = False,
) -> None:
    """Put runs side by side: the keys that differ, metrics (mean ± std over seeds), verdicts, and
    which runs failed to train rather than overfit. Writes files only into the one sweep folder
    given, or into --out."""
    _compare_and_print(targets, out, metric.value, as_json, wide)


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
    from dnnlab.evaluate import class_names
    from dnnlab.evaluate import mc_dropout as run_mc

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
    _print_mc_dropout(run_dir, path, result, names)


def _print_mc_dropout(run_dir: Path, path: Path, result: dict[str, Any], names: Any) -> None:
    """`dnnlab evaluate`'s tables: weight scaling next to MC dropout, and the accuracy per class when the data name them."""
    from rich.table import Table

    ws = result["weight_scaling"]
    if "r2" in ws:  # data.task: regression: the averaged prediction's errors, in the target's units
        table = Table("model", "test MSE", "test MAE", "test R^2", title=f"{_escape(run_dir.name)} ({path.name}): dropout as an ensemble")
        for label, row in [("weight scaling (evaluation mode)", ws)] + [(f"MC dropout, K = {r['k']}", r) for r in result["mc"]]:
            table.add_row(label, f"{row['mse']:.4g}", f"{row['mae']:.4g}", f"{row['r2']:.4f}")
        console.print(table, soft_wrap=False)
        return
    table = Table("model", "test accuracy", "test loss", title=f"{_escape(run_dir.name)} ({path.name}): dropout as an ensemble")
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
