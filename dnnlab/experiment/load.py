"""The data of an experiment, checked against its model, the machine's memory and its devices
before any folder is made; ExperimentError carries the exit code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnnlab.config import Config, data_seed
from dnnlab.data import DataError, Dataset
from dnnlab.runs import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from dnnlab.train import distributed

if TYPE_CHECKING:
    pass


class ExperimentError(Exception):
    """A known failure: `str()` is the message for the user, `code` the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def load_data(cfg: Config) -> Dataset:
    """The config's dataset, checked against its model; ExperimentError when it cannot be used."""
    from dnnlab import data
    from dnnlab.config import ConfigError

    try:
        ds = data.load(cfg.data, data_seed(cfg))
    except (DataError, ConfigError) as exc:
        raise ExperimentError(str(exc)) from None
    except KeyboardInterrupt:
        raise ExperimentError("interrupted while loading the data; nothing was written", EXIT_INTERRUPTED) from None
    check_data(cfg, ds)
    return ds


def check_data(cfg: Config, ds: Dataset) -> None:
    """Raise ExperimentError (exit 2) when the model cannot take `ds` or this machine's memory
    cannot hold the run: the checks of `load_data`, for data already loaded (a sweep's members
    share theirs)."""
    from dnnlab.config import ConfigError, check_size

    try:
        check_compatible(cfg, ds)
        check_size(cfg, ds.input_shape, ds.num_classes)  # refuse what this machine's memory cannot hold
    except (DataError, ConfigError) as exc:
        raise ExperimentError(str(exc)) from None


def check_compatible(cfg: Config, ds: Dataset) -> None:
    """Raise DataError when the model cannot take the dataset's inputs, or `train.class_weight`
    names a class the data do not have (before any JAX work)."""
    if isinstance(cfg.train.class_weight, dict):
        import numpy as np

        from dnnlab.baselines import class_weights

        try:
            class_weights(cfg.train.class_weight, np.bincount(ds.train.y, minlength=ds.num_classes).tolist(), ds.classes)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    if cfg.model.arch not in ("cnn", "resnet"):
        return
    if len(ds.input_shape) != 3:
        raise DataError(
            f"model.arch={cfg.model.arch} needs images; {ds.name} gives flat vectors of {ds.input_dim} features"
        )
    if cfg.model.arch == "resnet":
        return
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


def check_devices(cfg: Config) -> None:
    """Raise ExperimentError (exit 2) when `train.devices` does not fit this machine, the batch
    or the seed mode: before any folder is made."""
    try:
        count = distributed.resolve_devices(cfg)
    except distributed.DeviceError as exc:
        raise ExperimentError(str(exc), exc.code) from None
    if count > 1 and cfg.train.seeds > 1 and cfg.train.seed_mode == "vmap":
        raise ExperimentError(
            f"train.seed_mode: vmap trains its seeds on one device; this run has {count} (train.devices): set "
            "train.seed_mode to sequential or auto (the seeds then run one after another, each over every device), "
            "or train.devices to 1"
        )
