"""The Dataset and its splits: stratified held-out sets, per-channel scaling and
standardization with the training split's statistics, and the checks on the values it holds.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from dnnlab.config import DataConfig

FLOAT32_MAX = float(np.finfo(np.float32).max)  # inputs are float32: a larger value becomes inf


class DataError(Exception):
    """A dataset that cannot be found or read; `str()` is the message for the user."""


@dataclass(frozen=True)
class Dropped:
    """Rows (or examples) of a file that data.missing: drop left out for a missing value."""

    where: str  # the file (and array) they were read from
    dropped: int
    total: int  # how many the file held
    unit: str = "rows"

    def words(self) -> str:
        return f"data.missing: drop dropped {self.dropped:,} of {self.total:,} {self.unit} with missing values ({self.where})"

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "dropped": self.dropped, "total": self.total, "unit": self.unit}


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, D) float32: [0, 1], or standardized (data.normalize)
    y: np.ndarray  # (N,) int32; under regression (N,) float32 standardized targets
    # set on the training split a loader returns (file data only): the class names (label i is
    # classes[i]), and whether x holds raw numbers that `load` still scales to [0, 1]
    classes: tuple[str, ...] = ()
    raw: bool = False
    # set on the training split a reader of your own files returns: what it read and how (the
    # columns, arrays or images), which preprocessing.json keeps for prediction
    reader: Optional[dict[str, Any]] = field(default=None, compare=False)
    # set on the training split a reader of your own files returns: what data.missing: drop left
    # out of each file it read (the test file's too)
    dropped: tuple[Dropped, ...] = field(default=(), compare=False)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Optional[Split]
    test: Split
    num_classes: int
    source: str  # where the files were read from
    image_shape: tuple[int, ...] = ()  # (H, W, C) of the images the rows of x flatten
    classes: tuple[str, ...] = ()  # the class names of file data (label i is classes[i]); () for built-ins
    # data.task: regression: y holds the targets standardized with the training split's mean and
    # standard deviation (float32); every reported number is turned back into the target's units
    task: str = "classification"
    target_mean: float = 0.0
    target_std: float = 1.0
    # how raw inputs become the model's inputs, with the training split's statistics
    # (data.preprocessing.describe: what preprocessing.json holds)
    preprocessing: dict[str, Any] = field(default_factory=dict, compare=False)
    dropped: tuple[Dropped, ...] = ()  # what data.missing: drop left out of the files, file by file

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def input_dim(self) -> int:
        return int(self.train.x.shape[1])

    @functools.cached_property
    def digest(self) -> str:
        """A SHA-256 of every split's arrays (shapes, dtypes and bytes), computed once per loaded
        dataset: what the linear reference's cache key holds of the data."""
        h = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            if split is not None:
                for a in (split.x, split.y):
                    h.update(str((a.shape, str(a.dtype))).encode())
                    h.update(memoryview(a).cast("B") if a.flags.c_contiguous else a.tobytes())
            h.update(b"|")
        return h.hexdigest()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(H, W, C) for images, else (D,): what a model is built for."""
        return self.image_shape or (self.input_dim,)


def _image_shape(images: np.ndarray) -> tuple[int, ...]:
    """(H, W, C) of an image array (N, H, W) or (N, H, W, C)."""
    return tuple(images.shape[1:3]) + ((images.shape[3],) if images.ndim == 4 else (1,))


Loaded = tuple[Split, Split, str, tuple[int, ...]]  # (train, test, source, image shape (H, W, C) or ())


# ---------------------------------------------------------------- splits


def stratified_indices(y: np.ndarray, fraction_or_count: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a stratified sample: a fraction (< 1) or a count (>= 1) of `y`, sorted."""
    n = len(y)
    total = int(round(fraction_or_count * n)) if fraction_or_count < 1 else int(fraction_or_count)
    total = min(max(total, 0), n)
    classes, counts = np.unique(y, return_counts=True)
    # largest-remainder allocation so that the class shares are kept and the total is exact
    quota = counts * total / n
    take = np.floor(quota).astype(int)
    short = total - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, int)


def _check_scaled(cfg: DataConfig, train: Split, val: Optional[Split], test: Split, channels: int) -> None:
    """DataError when scaling made a value non-finite: a feature whose values span more than
    float32 holds (their difference, or their variance, overflows)."""
    for name, split in (("training", train), ("validation", val), ("test", test)):
        if split is not None and not np.isfinite(split.x).all():
            k = int(np.flatnonzero(~np.isfinite(split.x).reshape(len(split), -1, channels).all(axis=(0, 1)))[0])
            how = "standardizing (data.normalize: standard)" if cfg.normalize == "standard" else "scaling to [0, 1]"
            raise DataError(
                f"{cfg.dataset}: {how} turns {'feature' if channels == split.x.shape[1] else 'channel'} {k} of the {name} "
                f"examples into non-finite values: its values span more than float32 holds (±{FLOAT32_MAX:.4g}); "
                "scale it down before training"
            )


def channel_stats(kind: str, x_NxPxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) per channel of the training inputs: `standard` their mean and standard
    deviation (+1e-7), `minmax` their minimum and range (a constant channel's range is 1)."""
    if kind == "standard":
        return x_NxPxC.mean(axis=(0, 1)), x_NxPxC.std(axis=(0, 1)) + 1e-7
    low, span = x_NxPxC.min(axis=(0, 1)), x_NxPxC.max(axis=(0, 1)) - x_NxPxC.min(axis=(0, 1))
    return low, np.where(span > 0, span, 1.0)


def apply_scaling(x_NxD: np.ndarray, shift: np.ndarray, scale: np.ndarray, channels: int) -> np.ndarray:
    """(x - shift) / scale per channel, as float32 (N, D): training's and prediction's one formula."""
    z = (x_NxD.reshape(len(x_NxD), -1, channels) - shift) / scale
    return z.reshape(len(x_NxD), -1).astype(np.float32)


def scale_splits(
    kind: str, train: Split, val: Optional[Split], test: Split, channels: int
) -> tuple[Split, Optional[Split], Split, np.ndarray, np.ndarray]:
    """Every split scaled per channel with the training split's `channel_stats`; returns the
    splits and (shift, scale)."""
    shift, scale = channel_stats(kind, train.x.reshape(len(train), -1, channels))

    def apply(split: Optional[Split]) -> Optional[Split]:
        return None if split is None else Split(apply_scaling(split.x, shift, scale, channels), split.y)

    return apply(train), apply(val), apply(test), shift, scale  # type: ignore[return-value]


def standardize(train: Split, val: Optional[Split], test: Split, channels: int) -> tuple[Split, Optional[Split], Split]:
    """Per-channel zero mean and unit variance, with the training split's statistics."""
    return scale_splits("standard", train, val, test, channels)[:3]


def rescale(train: Split, val: Optional[Split], test: Split, channels: int) -> tuple[Split, Optional[Split], Split]:
    """Per-channel min-max scaling to [0, 1] with the training split's range (a constant channel
    becomes 0; validation and test values outside the training range fall outside [0, 1])."""
    return scale_splits("minmax", train, val, test, channels)[:3]


def standardize_targets(train: Split, val: Optional[Split], test: Split, where: str) -> tuple[tuple[Split, Optional[Split], Split], float, float]:
    """Regression targets as (y - mean) / std with the training split's mean and standard deviation
    (float64 statistics, float32 targets), and (mean, std). DataError for a constant target."""
    y = np.asarray(train.y, np.float64)
    mean, std = float(y.mean()), float(y.std())
    if not std > 0:
        raise DataError(f"{where}: every training target is {mean:g}: a constant cannot be learned; check the label")

    def apply(split: Optional[Split]) -> Optional[Split]:
        if split is None:
            return None
        z = ((np.asarray(split.y, np.float64) - mean) / std).astype(np.float32)
        return Split(split.x, z, split.classes, split.raw)

    return (apply(train), apply(val), apply(test)), mean, std  # type: ignore[return-value]


def unstandardize(z: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Standardized targets (or predictions) back in the target's own units."""
    return np.asarray(z, np.float64) * std + mean
