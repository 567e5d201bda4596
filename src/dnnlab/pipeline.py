"""One experiment end to end: run folder -> fit -> diagnosis and report. Used by `run` and `sweep`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from dnnlab import runs
from dnnlab.config import Config, dump_yaml
from dnnlab.data import Dataset
from dnnlab.diagnose import Diagnosis


def check_compatible(cfg: Config, ds: Dataset) -> None:
    """Raise DataError when the model cannot take the dataset's inputs (before any JAX work)."""
    from dnnlab.data import DataError

    if cfg.model.arch != "cnn":
        return
    if len(ds.input_shape) != 3:
        raise DataError(f"model.arch=cnn needs images; {ds.name} gives flat vectors of {ds.input_dim} features")
    h, w = ds.input_shape[:2]
    for i, _ in enumerate(cfg.model.channels, 1):
        if cfg.model.pool == "max":
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise DataError(
                f"model.channels: {len(cfg.model.channels)} conv blocks with 2x2 max pooling shrink the "
                f"{ds.input_shape[0]}x{ds.input_shape[1]} images of {ds.name} to nothing at block {i}; "
                f"use at most {i - 1} blocks or model.pool=none"
            )


@dataclass
class Outcome:
    run_dir: Path
    summary: dict[str, Any]
    diagnosis: Diagnosis
    problems: list[str]  # non-fatal: plots that could not be drawn


def execute(
    cfg: Config,
    ds: Dataset,
    out: Path,
    *,
    writers: Sequence[runs.Writer] = (),
    progress: bool = False,
    config_name: str = "config.yaml",
    announce: Optional[Callable[[Path], None]] = None,
) -> Outcome:
    """Train `cfg` on `ds` in a new run folder under `out`, then diagnose and report it.

    Ctrl-C during training ends the run with status `interrupted` (and returns); Ctrl-C
    elsewhere writes an interrupted summary if none exists and re-raises. OSError from creating
    the folder propagates.
    """
    check_compatible(cfg, ds)
    run_dir = runs.new_run_dir(out, cfg.name)
    run_writer = runs.RunDir(run_dir, dump_yaml(cfg))
    if announce is not None:
        announce(run_dir)
    try:
        from dnnlab import train  # imports JAX

        result = train.fit(cfg, ds, runs.MultiWriter(run_writer, *writers), progress=progress)
    except KeyboardInterrupt:
        if not (run_dir / "summary.json").exists():
            done = runs.read_metrics(run_dir)
            run_writer.finish({"name": cfg.name, "status": "interrupted", "epochs_run": max(len(done) - 1, 0)})
        raise
    from dnnlab.report import finalize

    diagnosis, problems = finalize(run_dir, cfg, result.history, result.summary, config_name=config_name)
    return Outcome(run_dir, result.summary, diagnosis, problems)
