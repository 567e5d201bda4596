"""`dnnlab data list`, `inspect` and `download`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dnnlab.commands.common import (
    ConfigArg,
    SetOpt,
    _class_counts,
    _escape,
    _fail,
    _load,
    console,
    err_console,
)
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_BAD_INPUT,
    EXIT_FAILED,
)


def data_list() -> None:
    """Show each dataset and where it is found."""
    from rich.table import Table

    from dnnlab.data import listing

    table = Table("dataset", "found at", "to get it")
    for row in listing():
        table.add_row(row["name"], row["found"], row["get"])
    console.print(table, markup=False)


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
    if ds.regression:
        _inspect_targets(ds, splits)
        return
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


def _inspect_targets(ds: Any, splits: list[tuple[str, Any]]) -> None:
    """`data inspect` under data.task: regression: each split's target mean, standard deviation
    and range, in the target's own units."""
    from rich.table import Table

    from dnnlab.data.dataset import unstandardize

    table = Table("split", "examples", "mean", "std", "min", "max", title="the target (data.task: regression)")
    for name, split in splits:
        y = unstandardize(split.y, ds.target_mean, ds.target_std)
        table.add_row(name, f"{len(y):,}", *(f"{v:.4g}" for v in (y.mean(), y.std(), y.min(), y.max())))
    console.print(table, markup=False)
    console.print(
        f"the net trains on the target standardized with the training split's mean {ds.target_mean:.4g} and standard "
        f"deviation {ds.target_std:.4g}; predicting that mean scores R^2 0 (a loss of about 1)", markup=False,
    )


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
