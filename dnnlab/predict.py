"""Applying a trained run to new inputs: `dnnlab predict`, the Python API's `Run.predict` and
the reference that `dnnlab export` is checked against.

A run folder keeps its model (best.npz, last.npz) and how raw inputs became its inputs
(preprocessing.json, `data.preprocessing`). Raw inputs (a CSV table, an npz, images, an
array) go through that record with the training split's statistics and then through the one
evaluation apply path (`evaluate.probabilities`), so a run's test examples get the
probabilities the evaluation computed, bit for bit. JAX is imported only when the net runs.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from dnnlab import runs
from dnnlab.config import FILE_DATASETS
from dnnlab.data.dataset import DataError
from dnnlab.data.preprocessing import (
    RawInputs,
    check_record,
    read_inputs,
    to_model_inputs,
)
from dnnlab.runs import EXIT_BAD_INPUT, shell_command


class RunError(Exception):
    """A run folder that cannot predict (no model, no preprocessing record, a folder of runs);
    `str()` is the message for the user, `code` the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Trained:
    """A run's kept model, ready to predict: its config, summary, preprocessing record and the
    checkpoint's arrays (the JAX model is built on first use)."""

    path: Path
    cfg: Any
    summary: dict[str, Any]
    record: dict[str, Any]
    checkpoint: Path
    arrays: dict[str, np.ndarray]
    _built: Any = field(default=None, repr=False)

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    def model(self) -> Any:
        """(model, params) of the checkpoint (imports JAX)."""
        if self._built is None:
            from dnnlab.evaluate import kept_model

            try:
                self._built = kept_model(self.cfg, tuple(self.record["input_shape"]), len(self.classes), self.arrays)
            except ValueError as exc:
                raise RunError(f"{self.checkpoint}: does not fit the run's model ({exc})") from None
        return self._built

    def proba(self, x_model_NxD: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of model inputs (already preprocessed): `evaluate.probabilities`."""
        from dnnlab.evaluate import probabilities

        model, params = self.model()
        return np.asarray(probabilities(model, params, np.asarray(x_model_NxD, np.float32)))

    def proba_raw(self, x_raw: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of raw inputs (the run's preprocessing applied first)."""
        return self.proba(to_model_inputs(self.record, x_raw))


def preprocessing_of(run_dir: Path, cfg: Any) -> dict[str, Any]:
    """The run's preprocessing record: preprocessing.json, or, for a folder made before runs kept
    it, the built-in dataset's (which follows from the config: its data are loaded again).
    RunError for an older folder of your own data, DataError for a damaged record."""
    path = Path(run_dir) / runs.PREPROCESSING
    try:
        record = runs.read_preprocessing(run_dir)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if record is not None:
        return check_record(record, str(path))
    if cfg.data.dataset in FILE_DATASETS:
        raise RunError(
            f"{run_dir}: has no {runs.PREPROCESSING}: it was made before runs kept their preprocessing, so the "
            f"feature columns, class names and the training split's {cfg.data.normalize} scaling statistics of its "
            f"{cfg.data.dataset} data are unknown and new raw inputs cannot be prepared as it was trained; train it again "
            f"(the new run keeps them): {shell_command('dnnlab', 'run', Path(run_dir) / runs.CONFIG)}"
        )
    from dnnlab import data
    from dnnlab.config import data_seed

    return data.load(cfg.data, data_seed(cfg)).preprocessing


def open_trained(run_dir: Path, checkpoint: str = "kept") -> Trained:
    """The kept (or best, or last) model of a run folder with its preprocessing; RunError when
    the folder cannot predict (no imports of JAX)."""
    from dnnlab.config import ConfigError

    run_dir = Path(run_dir)
    try:
        found = runs.read_manifest(run_dir)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if found is not None:
        members = runs.member_dirs(run_dir, found[1])
        first = members[0] if members else run_dir / "<member>"
        raise RunError(
            f"{run_dir}: a folder of {len(members)} runs ({found[0]}); predict with one of them, e.g. {first}"
        )
    try:
        _, cfg, summary = runs.load_run(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise RunError(str(exc)) from None
    record = preprocessing_of(run_dir, cfg)
    try:
        path = runs.kept_checkpoint(run_dir, summary, checkpoint)
        arrays = runs.load_checkpoint(path)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise RunError(
            f"{run_dir}: cannot load the {checkpoint} checkpoint ({exc}); a run that stopped before its first epoch "
            "has none: train it (dnnlab run --resume)"
        ) from None
    bad = runs.nonfinite_array(arrays)
    if bad is not None:
        raise RunError(f"{path}: its array {bad} holds a NaN or an infinity: a model with such weights predicts nothing")
    return Trained(run_dir, cfg, summary, record, path, arrays)


# ---------------------------------------------------------------- predicting and scoring


@dataclass(frozen=True)
class Prediction:
    """The probabilities (N, C) of the inputs, in their order, their labels if given, where each
    example comes from, and the classes' names."""

    probs: np.ndarray
    classes: list[str]
    where: list[str]
    y: Optional[np.ndarray] = None
    ignored: list[str] = field(default_factory=list)

    @property
    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.probs.argmax(axis=1)]

    def rows(self) -> list[dict[str, Any]]:
        """One row per example: where it comes from, the predicted class, each class's probability
        (and the true label when given)."""
        out = []
        for i, (where, pred) in enumerate(zip(self.where, self.predicted)):
            row: dict[str, Any] = {"input": where, "predicted": pred}
            if self.y is not None:
                row["label"] = self.classes[int(self.y[i])]
            row.update({f"p({c})": float(p) for c, p in zip(self.classes, self.probs[i])})
            out.append(row)
        return out

    def scores(self) -> Optional[dict[str, Any]]:
        """Accuracy, balanced accuracy (mean recall over the classes present) and the confusion
        matrix (rows: true class, columns: predicted) when the inputs have labels; else None."""
        if self.y is None:
            return None
        from dnnlab.baselines import balanced_accuracy, class_recall

        c = len(self.classes)
        pred = self.probs.argmax(axis=1)
        confusion = np.zeros((c, c), np.int64)
        np.add.at(confusion, (self.y.astype(np.int64), pred), 1)
        return {
            "examples": int(len(self.y)),
            "accuracy": float((pred == self.y).mean()),
            "balanced_accuracy": balanced_accuracy(class_recall(np.diag(confusion).tolist(), confusion.sum(1).tolist())),
            "confusion": confusion.tolist(),
        }


def predict_inputs(trained: Trained, paths: Sequence[Path]) -> Prediction:
    """Read the raw inputs at `paths` (`data.preprocessing.read_inputs`) and predict them."""
    raw: RawInputs = read_inputs(trained.record, paths)
    return Prediction(trained.proba_raw(raw.x), trained.classes, raw.where, raw.y, raw.ignored)


def predict_split(trained: Trained, split: str = "test") -> Prediction:
    """The run's own test split, loaded as the run loaded it (its data where the run found them)."""
    from dnnlab import data
    from dnnlab.config import data_seed
    from dnnlab.experiment.inputs import located

    if split != "test":
        raise DataError(f"--split {split!r}: only the test split is predicted (the others trained the model)")
    try:
        cfg = located(trained.cfg, runs.read_inputs(trained.path))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    ds = data.load(cfg.data, data_seed(cfg))
    if ds.classes and list(ds.classes) != trained.classes:
        raise DataError(
            f"the data at data.path now hold the classes {list(ds.classes)}, but the run was trained on {trained.classes}"
        )
    where = [f"test example {i}" for i in range(len(ds.test))]
    return Prediction(trained.proba(ds.test.x), trained.classes, where, ds.test.y)


def to_csv(prediction: Prediction) -> str:
    rows = prediction.rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["input", "predicted"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()


def to_json(prediction: Prediction, extra: Optional[dict[str, Any]] = None) -> str:
    record = {**(extra or {}), "classes": prediction.classes, "predictions": prediction.rows()}
    scores = prediction.scores()
    if scores is not None:
        record["scores"] = scores
    if prediction.ignored:
        record["ignored_columns"] = prediction.ignored
    return json.dumps(record, indent=2) + "\n"


def plot_confusion(path: Path, confusion: list[list[int]], classes: list[str]) -> None:
    """confusion.png: counts with the true class down and the predicted class across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(confusion)
    size = max(3.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    runs.write_figure(path, fig)
    plt.close(fig)
