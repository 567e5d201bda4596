"""Datasets: the Dataset type, the registry of readers (`LOADERS`) and `load`.

Inputs come out as float32, flattened to (N, D): pixels scaled to [0, 1] (uint8 / 255; any other
numbers min-max scaled per channel with the training split's range), and under
`data.normalize: standard` then shifted and scaled to zero mean and unit variance per channel
(no longer in [0, 1]; a table's every feature is its own channel); labels as int32, each below
the dataset's class count. The validation split is carved from the training set with the run's
seed; the test set is never used for decisions.

Lives here: `dataset` (Dataset, Split, splits, normalization, value checks), one module per
reader (`builtin`: the embedded digits and the published IDX/CIFAR files; `csv`, `npz`,
`folder`: your own files), `files` (what the readers of your own files share: paths, labels,
held-out test sets), `remote` (downloading the published files, sha256-checked).
May import: config, numpy (and interrupt, for a stop between files). No JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from dnnlab.config import FILE_DATASETS, NUM_CLASSES, DataConfig
from dnnlab.data.builtin import _load_digits, _load_files, find
from dnnlab.data.csv import _load_csv
from dnnlab.data.dataset import (
    DataError,
    Dataset,
    Split,
    _check_scaled,
    standardize_targets,
    scale_splits,
    stratified_indices,
)
from dnnlab.data.files import random_indices
from dnnlab.data.folder import _load_folder
from dnnlab.data.npz import _load_npz
from dnnlab.data.preprocessing import describe

if TYPE_CHECKING:
    from dnnlab.data.dataset import Loaded
from dnnlab.data.builtin import (
    DIGITS_FILE,
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    candidate_locations,
    fingerprint,
    read_cifar_batch,
    split_warnings,
)
from dnnlab.data.files import FILE_SPLIT_SEED
from dnnlab.data.remote import REMOTES, Remote, download

__all__ = [
    "DIGITS_FILE",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "DataError",
    "Dataset",
    "FILE_SPLIT_SEED",
    "REMOTES",
    "Remote",
    "_load_digits",
    "candidate_locations",
    "download",
    "find",
    "fingerprint",
    "read_cifar_batch",
    "split_warnings",
    "stratified_indices",
]



# `data.dataset` -> its loader; the names are config.Dataset's (tests/test_registries.py holds
# them equal). Every published file-based dataset also has a download in REMOTES; csv, npz and
# folder read the user's own files at data.path.
LOADERS: dict[str, Callable[[DataConfig], Loaded]] = {
    "digits": _load_digits,
    "mnist": _load_files,
    "fashion-mnist": _load_files,
    "cifar10": _load_files,
    "csv": _load_csv,
    "npz": _load_npz,
    "folder": _load_folder,
}


def load(cfg: DataConfig, seed: int) -> Dataset:
    """Load `cfg.dataset`, carve the seeded validation split and subsample the training set.

    Returns:
        A Dataset; `val` is None when validation_split is 0. Raises DataError.
    """
    loader = LOADERS.get(cfg.dataset)
    if loader is None:
        raise DataError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(LOADERS)}")
    train, test, source, shape = loader(cfg)
    classes, raw, reader, dropped = train.classes, train.raw, train.reader, train.dropped
    # the published class count (the loaders refuse labels outside it), or the classes found in the files
    num_classes = len(classes) if cfg.dataset in FILE_DATASETS else NUM_CLASSES[cfg.dataset]
    regression = cfg.task == "regression"
    if regression:
        num_classes = 1  # one output unit per target
    sample = (lambda y, f, r: random_indices(len(y), f, r)) if regression else stratified_indices
    rng = np.random.default_rng(seed)
    val = None
    if cfg.validation_split > 0:
        val_idx = sample(train.y, cfg.validation_split, rng)
        keep = np.ones(len(train), bool)
        keep[val_idx] = False
        if len(val_idx) == 0:
            raise DataError(
                f"data.validation_split {cfg.validation_split} of {len(train)} training examples holds no example; "
                "raise it (e.g. 0.1) or set it to 0 for no validation"
            )
        val = Split(train.x[val_idx], train.y[val_idx])
        train = Split(train.x[keep], train.y[keep])
    if cfg.train_size is not None and cfg.train_size < len(train):
        sub = sample(train.y, cfg.train_size, rng)
        train = Split(train.x[sub], train.y[sub])
    if len(train) == 0:
        raise DataError(f"{cfg.dataset}: the training split is empty; lower data.validation_split")
    channels = shape[-1] if shape else train.x.shape[1]  # a table's every feature is its own channel
    scaling = "standard" if cfg.normalize == "standard" else "minmax" if raw else None
    stats = None
    if scaling is not None:
        train, val, test, *stats = scale_splits(scaling, train, val, test, channels)
        _check_scaled(cfg, train, val, test, channels)
    preprocessing = describe(cfg, reader, classes, num_classes, shape or (train.x.shape[1],), scaling, stats)
    if regression:
        (train, val, test), mean, std = standardize_targets(train, val, test, cfg.dataset)
        preprocessing = {**preprocessing, "target": {"mean": mean, "std": std}}
        return Dataset(cfg.dataset, train, val, test, num_classes, source, shape, classes, "regression", mean, std,
                       preprocessing=preprocessing, dropped=dropped)
    return Dataset(cfg.dataset, train, val, test, num_classes, source, shape, classes, preprocessing=preprocessing,
                   dropped=dropped)


# ---------------------------------------------------------------- listing and download


def listing() -> list[dict[str, str]]:
    """One row per dataset: name, where it was found (or 'not found'), how to get it."""
    rows = [{"name": "digits", "found": "embedded (scikit-learn)", "get": "-"}]
    for name in (n for n, loader in LOADERS.items() if loader is _load_files):
        found = find(name)
        rows.append(
            {
                "name": name,
                "found": str(found) if found else "not found",
                "get": "-" if found else f"dnnlab data download {name}",
            }
        )
    what = {"csv": "a CSV table", "npz": "an .npz of arrays", "folder": "a folder of class folders"}
    rows += [{"name": n, "found": f"your own: {what[n]} at data.path", "get": "docs/data.md"} for n in FILE_DATASETS]
    return rows
