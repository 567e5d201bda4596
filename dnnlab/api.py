"""The Python API (docs/api.md): train, open, predict, compare, sweep and fix from a notebook or a
script, through the functions the command line calls.

Every name here is importable from `dnnlab` itself (`dnnlab.train`, `dnnlab.open_run`, ...);
`import dnnlab` stays light: this module, and JAX with it, is imported on first use. Errors are
the exceptions the command line maps to exit codes: ConfigError, DataError, ExperimentError,
RunError, SweepError, CompareError, ExportError.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from dnnlab import runs as run_files
from dnnlab.config import Config, ConfigError

PathLike = Union[str, Path]


def load_config(path: PathLike, overrides: Optional[Sequence[str]] = None) -> Config:
    """A validated Config from a YAML file, with `--set`-style overrides ("model.depth=4").

    Raises:
        ConfigError: naming the key, the value and the fix.
    """
    from dnnlab import config

    return config.load_config(Path(path), list(overrides or []))


def _config(config_or_path: Union[Config, PathLike, Mapping[str, Any]], overrides: Optional[Sequence[str]]) -> Config:
    from dnnlab import config

    if isinstance(config_or_path, Config):
        if not overrides:
            return config_or_path
        return config.validate(config.apply_overrides(config_or_path.model_dump(mode="json"), list(overrides)))
    if isinstance(config_or_path, Mapping):
        return config.validate(config.apply_overrides(dict(config_or_path), list(overrides or [])))
    return load_config(config_or_path, overrides)


def train(
    config_or_path: Union[Config, PathLike, Mapping[str, Any]], overrides: Optional[Sequence[str]] = None,
    out: PathLike = "runs", *, progress: bool = True,
) -> "Run":
    """Train a config (a path, a Config or a mapping) as `dnnlab run` does: a run folder under
    `out`, diagnosed and reported.

    Args:
        overrides: `--set`-style overrides, e.g. ["train.epochs=5"].
        progress: show the live progress (Rich: in a terminal or a notebook).
    Returns:
        The Run (for train.seeds > 1, the multi-seed folder).
    Raises:
        ConfigError, ExperimentError (its `code` is the exit code the CLI would give).
    """
    from dnnlab import experiment

    cfg = _config(config_or_path, overrides)
    ds = experiment.load_data(cfg)
    writers = []
    if progress:
        from dnnlab.commands.common import console
        from dnnlab.console import RichWriter

        writers = [RichWriter(console)]
    try:
        outcome = experiment.run(cfg, ds, Path(out), experiment.Shown(writers, progress, str(config_or_path)))
    finally:
        for w in writers:
            w.close()
    for done in getattr(outcome, "outcomes", [outcome]):  # the plots, drawn after the verdict as `run` draws them
        done.complete()
    return Run(outcome.run_dir)


def open_run(path: PathLike) -> "Run":
    """A run folder (or a multi-seed folder) already trained.

    Raises:
        RunError: when `path` is not a run folder.
    """
    from dnnlab.predict import RunError

    path = Path(path)
    problem = run_files.run_folder_problem(path)
    if problem is not None:
        raise RunError(problem)
    return Run(path)


class Run:
    """A run folder: its summary, history, diagnosis and verdict, and its model to predict with.

    `predict(x)` and `predict_proba(x)` take raw features, as the run read them: an array in the
    training column order (N, D), or a pandas DataFrame holding the feature columns by name; for
    images, the raw pixels (N, H, W, C) or flattened."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._trained: Any = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, verdict={self.verdict!r})"

    @property
    def config(self) -> Config:
        return run_files.read_config(self.path)

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json ({} for a run killed before it wrote one)."""
        return run_files.read_summary(self.path) or {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """The epoch records of metrics.jsonl (epoch 0 is before training)."""
        return run_files.read_metrics(self.path)

    @property
    def diagnosis(self) -> dict[str, Any]:
        """The diagnosis: verdict, causes, evidence, remedies (as `dnnlab diagnose --json` prints it)."""
        found = self.summary.get("diagnosis")
        if found:
            return found
        from dnnlab.diagnose import diagnose

        history, cfg, summary = run_files.load_run(self.path)
        return diagnose(history, cfg, summary).to_dict()

    @property
    def verdict(self) -> Optional[str]:
        return (self.summary.get("diagnosis") or {}).get("verdict")

    @property
    def classes(self) -> list[str]:
        return self._model().classes

    def _model(self, checkpoint: str = "kept") -> Any:
        if self._trained is None or checkpoint != "kept":
            from dnnlab.predict import open_trained

            trained = open_trained(self.path, checkpoint)
            if checkpoint != "kept":
                return trained
            self._trained = trained
        return self._trained

    def predict_proba(self, x: Any) -> np.ndarray:
        """The class probabilities (N, C) of raw inputs `x` (columns in the order of `classes`).

        Raises:
            DataError: inputs of the wrong width, missing DataFrame columns, non-numbers.
            RunError: a folder that cannot predict (no model, no preprocessing.json).
        """
        from dnnlab.data.preprocessing import table_inputs

        trained = self._model()
        return trained.proba_raw(table_inputs(trained.record, x))

    def predict(self, x: Any) -> np.ndarray:
        """The predicted class name of each example of `x` (see `predict_proba`)."""
        return np.asarray(self.classes, dtype=object)[self.predict_proba(x).argmax(axis=1)]

    def predict_file(self, *paths: PathLike, checkpoint: str = "kept") -> Any:
        """`dnnlab predict RUN_DIR INPUT`: a CSV, an .npz, an image folder or files. Returns the
        `predict.Prediction` (probs, predicted, rows(), scores())."""
        from dnnlab.predict import predict_inputs

        return predict_inputs(self._model(checkpoint), [Path(p) for p in paths])

    def export(self, out: Optional[PathLike] = None, format: str = "onnx") -> Path:
        """`dnnlab export`: the model with its preprocessing folded in, as ONNX. Returns the file."""
        from dnnlab.export import ExportError, export_onnx

        if format != "onnx":
            raise ExportError(f"format {format!r}: the exporter writes onnx")
        return export_onnx(self._model(), Path(out) if out else self.path / "model.onnx")

    def _repr_html_(self) -> str:
        """The verdict panel (as `dnnlab diagnose` prints it) and the learning curves, in Jupyter."""
        from rich.console import Console

        from dnnlab.console import print_diagnosis

        console = Console(record=True, width=100, file=_Null())
        try:
            print_diagnosis(console, self.diagnosis, str(self.path / run_files.CONFIG), self.path)
            panel = console.export_html(inline_styles=True, code_format="<pre style=\"font-family:monospace\">{code}</pre>")
        except (ConfigError, ValueError, OSError, KeyError) as exc:
            panel = f"<pre>{html.escape(f'{self.path}: no diagnosis ({exc})')}</pre>"
        curves = self.path / "curves.png"
        image = ""
        if curves.exists():
            image = f'<img src="data:image/png;base64,{base64.b64encode(curves.read_bytes()).decode()}" width="640"/>'
        return f"<div><b>{html.escape(str(self.path))}</b>{panel}{image}</div>"


class _Null:
    """A file that discards what is written (the recorded console prints nowhere)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def compare(runs: Sequence[Union[PathLike, Run]], metric: str = "val_accuracy") -> Any:
    """Put runs side by side as `dnnlab compare` does (nothing written). Returns the Comparison
    (`to_dict()`: the keys that differ, the metrics, the verdicts, the judged differences).

    Raises:
        CompareError: nothing to compare, an unknown metric.
    """
    from dnnlab import compare as comparing

    targets = [str(r.path if isinstance(r, Run) else r) for r in runs]
    return comparing.compare(targets, metric)[0]


def _grid_items(grid: Union[Mapping[str, Sequence[Any]], Sequence[str], None]) -> list[str]:
    """{"optimizer.lr": [0.1, 0.01]} as the CLI's --grid items ("optimizer.lr=0.1,0.01")."""
    import json

    if grid is None:
        return []
    if isinstance(grid, Mapping):
        return [f"{k}={','.join(v if isinstance(v, str) else json.dumps(v) for v in values)}" for k, values in grid.items()]
    return list(grid)


def sweep(
    config: Union[PathLike, Mapping[str, Any]], grid: Union[Mapping[str, Sequence[Any]], Sequence[str], None] = None,
    overrides: Optional[Sequence[str]] = None, seeds: Optional[int] = None, out: PathLike = "runs",
) -> list[Run]:
    """Train a config over a grid as `dnnlab sweep` does: {"optimizer.lr": [0.1, 0.01]} (or the
    CLI's ["optimizer.lr=0.1,0.01"]), each point `seeds` times. Returns the members' runs (their
    folder, `runs[0].path.parent`, holds sweep.json and compare.md).

    Raises:
        ConfigError, SweepError.
    """
    from dnnlab import compare as comparing
    from dnnlab import sweep as sweeps
    from dnnlab.config import apply_overrides, read_yaml

    raw = dict(config) if isinstance(config, Mapping) else read_yaml(Path(config))
    raw = apply_overrides(raw, list(overrides or []))
    p = sweeps.plan(raw, _grid_items(grid), seeds, yes=True)
    job = sweeps.Sweep.create(Path(out), p.base.get("name", "run"), str(config), p.base, p.grid, p.seeds, p.variants, tune=p.tune)
    sweeps.run(job)
    comp, _ = comparing.compare([str(job.path)])
    comparing.write(comp, job.path)
    return [Run(job.path / m["dir"]) for m in job.members if (job.path / m["dir"] / run_files.CONFIG).exists()]


def fix(run: Union[PathLike, Run], out: PathLike = "runs", top: int = 3, seeds: Optional[int] = None) -> dict[str, Any]:
    """Train the diagnosis's top remedies against the run, as `dnnlab fix` does. Returns
    {"verdict", "fixed" (bool or None when nothing was broken), "winner" (a remedy's result),
    "fixed_config" (fixed.yaml, or None), "results"}.

    Raises:
        FixError, SweepError.
    """
    from dnnlab import compare as comparing
    from dnnlab import sweep as sweeps
    from dnnlab.sweep import fix as fixing

    job = fixing.plan(Path(run.path if isinstance(run, Run) else run), Path(out), top=top, seeds=seeds)
    if job.sweep is None:
        return {"verdict": job.verdict, "fixed": None, "winner": None, "fixed_config": None, "results": []}
    sweeps.run(job.sweep)
    fixing.judge(job)
    comp, _ = comparing.compare([str(job.sweep.path)])
    comparing.write(comp, job.sweep.path)
    winner = job.winner
    return {
        "verdict": job.verdict, "fixed": winner is not None, "winner": winner.to_dict() if winner else None,
        "fixed_config": job.fixed_config, "results": [r.to_dict() for r in job.results],
    }
