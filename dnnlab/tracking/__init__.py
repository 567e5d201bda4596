"""A run's records outside its folder: TensorBoard event files while it trains, MLflow after.

TensorBoard: `TensorBoard` is a `runs.Writer` that writes `RUN_DIR/tb/` with tensorboardX (no
TensorFlow): every epoch's scalars (named by `scalars`), weight histograms every
`logging.histograms_every` epochs from the parameter arrays the run already copies to the host
for its checkpoint, and, once the run is diagnosed, the config as hparams with the kept
model's metrics and the verdict, causes and remedies as text. A resumed run rewrites the
folder: what was written up to its saved epoch is carried into a new event file, the rest (a
killed run's later epochs, an earlier report) is dropped, so every epoch is there once.

MLflow: `log_to_mlflow` reads a finished run folder (or a multi-seed, sweep or fix folder: a
parent MLflow run with one child per member) and logs params, per-epoch metrics, tags and
artifacts. It never fails the run: a store that cannot be reached gives warnings that say what
was not logged. tensorboardX and mlflow are imported only here, and only when used.

Lives here: `names` (what both name alike: the scalars, the hparams, the diagnosis as text, the
folder names and TrackingError), `board` (the TensorBoard writer and reading event files back),
`mlflow_log` (logging finished folders to an MLflow store).
May import: config, runs; tensorboardX and mlflow lazily, inside the
functions that use them.
"""

from __future__ import annotations

from dnnlab.tracking.board import TensorBoard, _read_events, _tensorboardx, open_board
from dnnlab.tracking.mlflow_log import (
    RUN_DIR_TAG,
    Logged,
    check_uri,
    log_to_mlflow,
    require_mlflow,
)
from dnnlab.tracking.names import (
    ARTIFACTS,
    HISTOGRAM_BINS,
    MAIN_HPARAMS,
    MLFLOW_EXTRA,
    NAMES,
    NOT_HPARAMS,
    NOT_SCALARS,
    REPORT_TAGS,
    TB_DIR,
    TrackingError,
    diagnosis_markdown,
    flat_config,
    hparams_of,
    kept_scalars,
    scalars,
    varied_keys,
)

__all__ = [
    "ARTIFACTS",
    "HISTOGRAM_BINS",
    "MAIN_HPARAMS",
    "MLFLOW_EXTRA",
    "NAMES",
    "NOT_HPARAMS",
    "NOT_SCALARS",
    "REPORT_TAGS",
    "RUN_DIR_TAG",
    "TB_DIR",
    "Logged",
    "TensorBoard",
    "TrackingError",
    "_read_events",
    "_tensorboardx",
    "check_uri",
    "diagnosis_markdown",
    "flat_config",
    "hparams_of",
    "kept_scalars",
    "log_to_mlflow",
    "open_board",
    "require_mlflow",
    "scalars",
    "varied_keys",
]
