"""The reference a run's training fit is judged against: a linear model on the same examples.

A deeper or richer net can represent a softmax regression (He et al. 2016's argument), so a net
that fits its training set worse than one has failed to train, whatever its loss curve says.
The reference is a softmax regression on the run's own training split and inputs (images
flattened, the same normalization and the same training-metrics subset), trained through the
same compiled training code with a fixed budget: Adam at 1e-2, the run's batch size, as many
epochs as the run up to 20.

Under `data.task: regression` the reference is least squares in closed form (`least_squares`,
NumPy, no compilation and no cache: it takes milliseconds).

Its result is cached under `~/.cache/dnnlab/reference/` (or `$DNNLAB_CACHE/reference/`), keyed
by a hash of the data arrays themselves and of everything else that decides it (the budget, the
training-metrics subset, the dnnlab, JAX and optax versions), so a sweep pays for it once and a
changed dataset, split, subsample or normalization can never be served a stale result.

A run that needs one computes it in a thread beside its own training (`background`): the two
compile and train at the same time, and the run waits for it only when it is diagnosed. On
small data (QUICK_UP_TO) its programs are compiled for speed (`train.fit(quick=True)`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from dnnlab import runs, version
from dnnlab.config import Config, validate
from dnnlab.data import Dataset

MODEL = "linear"  # softmax regression
# Adam at 1e-2: softmax regression is convex, and at 1e-3 it is still far from its optimum after
# 10 epochs on the digits (0.44 training accuracy at batch 128, 8 epochs; 0.94 at 1e-2)
BUDGET = {"optimizer": "adam", "lr": 1e-2, "epochs": 20, "seed": 0}  # epochs: at most 20, at most the run's
# up to this many numbers in the training split (examples x features) the reference's programs
# are compiled for speed (`train.fit(quick=True)`: -O0 halves the compile, and the fit is short);
# above it they are compiled for a fast fit (Fashion-MNIST's 54,000 x 784: an epoch at -O0 takes
# 2x as long)
QUICK_UP_TO = 2_000_000


def reference_config(cfg: Config) -> Config:
    """The run's config with the model replaced by a softmax regression and the fixed budget."""
    raw = cfg.model_dump(mode="json")
    raw.pop("sweep", None)
    raw.pop("logging", None)  # where the run is logged does not change its reference
    raw.pop("pretrain", None)  # nor how its net was pretrained (the reference has no hidden layer)
    raw["name"] = f"{cfg.name}-reference"
    raw["seed"] = BUDGET["seed"]
    raw["data"]["split_seed"] = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.seed
    raw["model"] = {"arch": "mlp", "depth": 0}
    raw["optimizer"] = {"name": BUDGET["optimizer"], "lr": BUDGET["lr"]}
    raw["regularization"] = {}
    raw["train"] = {
        "epochs": min(BUDGET["epochs"], cfg.train.epochs), "eval_batch_size": cfg.train.eval_batch_size,
        "train_eval_size": cfg.train.train_eval_size, "loop": "scan",
    }
    raw["diagnosis"] = {"instruments": False, "reference": "none"}
    return validate(raw, source="the reference model")


def _quick(ds: Dataset) -> bool:
    """Whether the reference's programs are compiled for speed (QUICK_UP_TO)."""
    return len(ds.train) * ds.input_dim <= QUICK_UP_TO


def cache_key(ref_cfg: Config, ds: Dataset) -> str:
    """A hash of the data arrays and of everything else that decides the reference: the data's
    fingerprint (`data.fingerprint`: the digest of the arrays; not where the files are, so one
    file reached by two paths is one entry)."""
    import jax
    import optax

    h = hashlib.sha256(ds.digest.encode())  # hashed once per loaded dataset (a sweep's members share it)
    where = {"name": True, "data": {"path", "test_path"}}
    h.update(json.dumps({
        "model": MODEL, "budget": BUDGET, "quick": _quick(ds), "config": ref_cfg.model_dump(mode="json", exclude=where),
        "num_classes": ds.num_classes, "image_shape": list(ds.image_shape),
        "versions": [version.__version__, jax.__version__, optax.__version__],
    }, sort_keys=True).encode())
    return h.hexdigest()[:32]


class _Cancelled(runs.Writer):
    """Stops the reference's training at its next epoch once `cancel` is set (the run it was
    for ended without needing it)."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt  # the training loop ends the reference as interrupted


def _cached(ref_cfg: Config, ds: Dataset, use_cache: bool) -> tuple[str, Any, Optional[dict[str, Any]]]:
    """(key, cache path, the cached reference or None)."""
    key = cache_key(ref_cfg, ds)
    path = runs.cache_root() / "reference" / f"{key}.json"
    if use_cache and path.exists():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(cached, dict) and cached.get("key") == key and _valid(cached.get("reference")):
                return key, path, {**cached["reference"], "cached": True}
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    return key, path, None


# every field of a cached reference and its JSON types: an entry of another shape is a miss
_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "train_accuracy": (int, float), "val_accuracy": (int, float, type(None)),
    "train_loss": (int, float), "train_balanced_accuracy": (int, float, type(None)),
    "val_balanced_accuracy": (int, float, type(None)), "epochs": (int,), "seconds": (int, float), "status": (str,),
}


def _valid(reference: Any) -> bool:
    """Whether a cached reference has every field, of its type (numbers finite, accuracies in [0, 1])."""
    import math

    if not isinstance(reference, dict) or set(reference) != set(_FIELDS) or reference["status"] != "completed":
        return False
    for key, types in _FIELDS.items():
        value = reference[key]
        if isinstance(value, bool) or not isinstance(value, types):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
    accuracies = [
        reference[k] for k in ("train_accuracy", "val_accuracy", "train_balanced_accuracy", "val_balanced_accuracy")
        if reference[k] is not None
    ]
    return all(0 <= a <= 1 for a in accuracies) and reference["epochs"] >= 0


def fit_reference(
    cfg: Config, ds: Dataset, *, use_cache: bool = True, cancel: Optional[threading.Event] = None
) -> Optional[dict[str, Any]]:
    """The reference of a run of `cfg` on `ds` (None when `diagnosis.reference` is none):
    {model, train_accuracy, val_accuracy, train_loss, train_balanced_accuracy,
    val_balanced_accuracy, epochs, seconds, cached, status}.
    `cancel`, once set, stops its training at the next epoch (status interrupted)."""
    if cfg.diagnosis.reference == "none":
        return None
    if ds.regression:
        return least_squares(ds)
    ref_cfg = reference_config(cfg)
    key, path, cached = _cached(ref_cfg, ds, use_cache)
    if cached is not None:
        return cached
    from dnnlab import train  # imports JAX

    t0 = time.perf_counter()
    try:
        result = train.fit(ref_cfg, ds, _Cancelled(cancel) if cancel is not None else runs.Writer(), progress=False, quick=_quick(ds))
    except KeyboardInterrupt:  # stopped before its first record
        return {"model": MODEL, "status": "interrupted", "cached": False}
    final = result.summary.get("final") or {}
    reference = {
        "model": MODEL,
        "train_accuracy": final.get("train_accuracy"),
        "val_accuracy": final.get("val_accuracy"),
        "train_loss": final.get("train_loss"),
        "train_balanced_accuracy": final.get("train_balanced_accuracy"),
        "val_balanced_accuracy": final.get("val_balanced_accuracy"),
        "epochs": result.summary["epochs_run"],
        "seconds": time.perf_counter() - t0,
        "status": result.summary["status"],
    }
    if use_cache and result.summary["status"] == "completed":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            runs.atomic_write_text(path, json.dumps({"key": key, "reference": reference}, indent=2) + "\n")
        except OSError:
            pass  # an unwritable cache costs time, never the run
    return {**reference, "cached": False}


# least squares' ridge term, relative to the mean squared input: small enough to leave a
# well-posed fit as it is, large enough to make a singular one (constant or collinear features,
# more features than examples) solvable
RIDGE = 1e-6


def least_squares(ds: Dataset, ridge: float = RIDGE) -> dict[str, Any]:
    """The linear reference of a regression run (data.task: regression): least squares with an
    intercept on the training split's inputs and standardized targets, in closed form with NumPy
    (no compilation), with a ridge term of `ridge` times the mean squared input on the weights
    (not the intercept). Its R^2 and MSE (in the target's units) on the training and validation
    splits, and its training loss (the standardized MSE a run's `train_loss` is)."""
    import numpy as np

    t0 = time.perf_counter()
    w, b = solve_least_squares(ds.train.x, ds.train.y, ridge)
    out: dict[str, Any] = {"model": "least-squares", "ridge": ridge}
    for name, split in (("train", ds.train), ("val", ds.val)):
        if split is None or len(split) == 0:
            out.update({f"{name}_r2": None, f"{name}_mse": None})
            continue
        x, y = np.asarray(split.x, np.float64), np.asarray(split.y, np.float64)
        mse = float(np.mean(np.square(x @ w + b - y)))
        var = float(np.var(y))
        out[f"{name}_r2"] = 1.0 - mse / var if var > 0 else None
        out[f"{name}_mse"] = mse * ds.target_std**2
        if name == "train":
            out["train_loss"] = mse
    out.update(epochs=0, seconds=time.perf_counter() - t0, status="completed", cached=False)
    return out


def solve_least_squares(x: Any, y: Any, ridge: float = RIDGE) -> tuple[Any, float]:
    """(weights, intercept) minimizing ||x w + b - y||^2 + ridge * mean(x^2) * n * ||w||^2, in
    float64: the normal equations of the centred data, solved by `numpy.linalg.lstsq`."""
    import numpy as np

    x, y = np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y, np.float64)
    mx, my = x.mean(axis=0), y.mean()
    xc, yc = x - mx, y - my
    lam = ridge * float(np.mean(np.square(x))) * len(x)
    w = np.linalg.lstsq(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc, rcond=None)[0]
    return w, float(my - mx @ w)


class Pending:
    """A reference being computed in a thread; `result` waits for it."""

    def __init__(self, cfg: Config, ds: Dataset) -> None:
        self.cancel = threading.Event()
        self.value: Optional[dict[str, Any]] = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._compute, args=(cfg, ds), name="dnnlab-reference", daemon=True)

    def _compute(self, cfg: Config, ds: Dataset) -> None:
        try:
            self.value = fit_reference(cfg, ds, cancel=self.cancel)
        except BaseException as exc:  # handed to the thread that waits for it
            self.error = exc

    def result(self, stop_point: Callable[[], None]) -> Optional[dict[str, Any]]:
        """The reference once computed; `stop_point` is called while waiting, so that Ctrl-C
        still takes effect (it raises KeyboardInterrupt, and the reference is stopped)."""
        while self.thread.is_alive():
            self.thread.join(0.05)
            stop_point()
        if self.error is not None:
            raise self.error
        return self.value

    def stop(self) -> None:
        """Stop the reference at its next epoch and wait for its thread: no XLA work is left
        running when the process exits."""
        self.cancel.set()
        self.thread.join()


@contextmanager
def background(cfg: Config, ds: Dataset, *, enabled: bool = True) -> Iterator[Optional[Pending]]:
    """The reference of `cfg` on `ds` computed in a thread while the block runs (None when it is
    off, already cached, or `enabled` is false); a reference still running when the block ends
    is stopped and left out."""
    if not enabled or cfg.diagnosis.reference == "none" or ds.regression or _cached(reference_config(cfg), ds, True)[2] is not None:
        yield None
        return
    from dnnlab import train  # imports JAX

    train.use_compile_cache()  # set up here, before two threads compile
    pending = Pending(cfg, ds)
    pending.thread.start()
    try:
        yield pending
    finally:
        pending.stop()
