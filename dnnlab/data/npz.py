"""The npz reader: arrays of inputs and labels (and a test pair) from a NumPy archive that
holds no pickled objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dnnlab.config import DataConfig
from dnnlab.data.dataset import FLOAT32_MAX, DataError, Dropped, Split, _image_shape
from dnnlab.data.files import (
    MISSING_TOKENS,
    _encode_labels,
    _encode_test_labels,
    _given_path,
    _hold_out,
    _npz_archive,
    _split_off,
    _targets,
    _test_note,
)

if TYPE_CHECKING:
    from dnnlab.data.dataset import Loaded


def _npz_arrays(path: Path, keys: list[str], required: list[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` that the npz file holds (each of `required` must be there)."""
    try:
        with _npz_archive(path) as f:
            held = list(f.files)
            missing = [k for k in required if k not in held]
            if missing:
                raise DataError(
                    f"{path}: has no array {missing[0]!r} (it holds: {', '.join(held) or 'nothing'}); "
                    "name the arrays with data.x_key and data.y_key (and data.x_test_key, data.y_test_key)"
                )
            return {k: np.asarray(f[k]) for k in keys if k in held}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path}: holds Python objects (pickled arrays); save plain numeric arrays") from None
        raise DataError(f"{path}: not a readable npz file ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError
        raise DataError(f"{path}: corrupt or truncated npz file ({type(exc).__name__}: {exc})") from None


def _npz_pair(
    x: np.ndarray, y: np.ndarray, where_x: str, where_y: str, cfg: DataConfig,
) -> tuple[np.ndarray, np.ndarray, Dropped]:
    """A checked (inputs, labels) pair, examples with a NaN input or label dropped under
    data.missing: drop, and how many were."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{where_x}: holds no examples")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        if cfg.task == "regression":
            raise DataError(
                f"{where_y}: regression targets must be a 1-D array, one number per example (or shape (N, 1)); got "
                f"shape {y.shape}: several targets per example are not supported; train one run per target"
            )
        raise DataError(
            f"{where_y}: labels must be a 1-D array, one per example; got shape {y.shape}"
            + (" (one-hot? store y.argmax(1))" if y.ndim == 2 else "")
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{where_x} holds {x.shape[0]} examples but {where_y} holds {y.shape[0]} labels")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where_x}: inputs must be numbers; got dtype {x.dtype}")
    if y.dtype.kind not in "biufUS":
        raise DataError(f"{where_y}: labels must be integers or strings; got dtype {y.dtype}")
    if y.dtype.kind == "S":
        y = y.astype(str)
    bad_x = np.isnan(x).reshape(len(x), -1).any(axis=1) if x.dtype.kind == "f" else np.zeros(len(x), bool)
    if y.dtype.kind == "f":
        bad_y = np.isnan(y)
    elif y.dtype.kind == "U":
        bad_y = np.isin(np.char.lower(np.char.strip(y)), MISSING_TOKENS)
    else:
        bad_y = np.zeros(len(y), bool)
    if x.dtype.kind == "f" and np.isinf(x).any():
        i = int(np.flatnonzero(np.isinf(x).reshape(len(x), -1).any(axis=1))[0])
        raise DataError(f"{where_x}: example {i} holds an infinite value; replace it with a finite number")
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        big = (np.abs(x) > FLOAT32_MAX).reshape(len(x), -1)  # finite here, infinite once cast to float32
        if big.any():
            i, j = (int(v[0]) for v in np.nonzero(big))
            raise DataError(
                f"{where_x}: example {i}, value {j} holds {x.reshape(len(x), -1)[i, j]:g}, beyond float32's range "
                f"(±{FLOAT32_MAX:.4g}), the type the inputs are trained in; scale the inputs"
            )
    bad = bad_x | bad_y
    if bad.any():
        if cfg.missing == "error":
            i = int(np.flatnonzero(bad)[0])
            n = int(np.isnan(x).sum() if x.dtype.kind == "f" else 0) + int(bad_y.sum())
            raise DataError(
                f"{where_x if bad_x[i] else where_y}: {n} missing value{'s' if n > 1 else ''} (NaN) in {int(bad.sum())} "
                f"of {len(bad)} examples, the first in example {i}; fill them in, or set data.missing: drop to drop "
                "those examples"
            )
        x, y = x[~bad], y[~bad]
        if len(y) == 0:
            raise DataError(f"{where_x}: every example has a missing value; data.missing: drop leaves no data")
    return x, y, Dropped(f"{where_x}, {where_y}", int(bad.sum()), len(bad), "examples")


def _npz_inputs(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """(N, D) float32 and whether it is raw: uint8 pixels are divided by 255, any other number is raw."""
    flat = x.reshape(x.shape[0], -1)
    if x.dtype == np.uint8:
        return flat.astype(np.float32) / 255.0, False
    return flat.astype(np.float32), True


def _load_npz(cfg: DataConfig) -> Loaded:
    """Arrays x and y (data.x_key, data.y_key) of an npz file, and x_test, y_test or data.test_path's."""
    path = _given_path(cfg.path, "data.path", "an .npz file of arrays x and y")
    keys = [cfg.x_key, cfg.y_key, cfg.x_test_key, cfg.y_test_key]
    arrays = _npz_arrays(path, keys, [cfg.x_key, cfg.y_key])
    named = lambda key: f"{path} ({key})"  # noqa: E731
    x, y, dropped = _npz_pair(arrays[cfg.x_key], arrays[cfg.y_key], named(cfg.x_key), named(cfg.y_key), cfg)
    drops = [dropped]
    held = _held_test_keys(path, cfg, arrays)
    if x.ndim == 1:
        x = x[:, None]
    regression = cfg.task == "regression"
    if regression:  # numeric targets (standardized and float32 in `data.load`)
        ytr, names, classes = _targets(y, named(cfg.y_key), lambda i: f"example {i}"), (), ()
    else:
        ytr, names, classes = _encode_labels(y, named(cfg.y_key), lambda i: f"example {i}")
    test_where = None
    if held:
        xt, yt, dropped = _npz_pair(arrays[cfg.x_test_key], arrays[cfg.y_test_key], named(cfg.x_test_key), named(cfg.y_test_key), cfg)
        drops.append(dropped)
        test_where, note = (named(cfg.x_test_key), named(cfg.y_test_key)), f"test: its {cfg.x_test_key}, {cfg.y_test_key}"
    elif cfg.test_path:
        test_path = _given_path(cfg.test_path, "data.test_path", "an .npz file of arrays x and y")
        test_arrays = _npz_arrays(test_path, [cfg.x_key, cfg.y_key], [cfg.x_key, cfg.y_key])
        test_where = (f"{test_path} ({cfg.x_key})", f"{test_path} ({cfg.y_key})")
        xt, yt, dropped = _npz_pair(test_arrays[cfg.x_key], test_arrays[cfg.y_key], *test_where, cfg)
        drops.append(dropped)
        note = f"test: {test_path}"
    if test_where is not None:
        if xt.ndim == 1:
            xt = xt[:, None]
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{test_where[0]}: test inputs of shape {xt.shape[1:]} per example; the training inputs are {x.shape[1:]}"
            )
        if regression:
            yte = _targets(yt, test_where[1], lambda i: f"example {i}")
        else:
            yte = _encode_test_labels(yt, classes, names, test_where[1], lambda i: f"example {i}")
        xtr, xte = x, xt
    else:
        (xtr, ytr), (xte, yte) = _split_off(x, ytr, _hold_out(ytr, cfg, named(cfg.y_key)))
        note = _test_note(cfg)
    shape = _image_shape(x) if x.ndim in (3, 4) else ()
    (ftr, raw), (fte, _) = _npz_inputs(xtr), _npz_inputs(xte)
    reader = {"x_key": cfg.x_key, "y_key": cfg.y_key, "example_shape": list(x.shape[1:]), "uint8": x.dtype == np.uint8,
              "class_values": [v.item() for v in classes]}
    train = Split(ftr, ytr, names, raw, reader, dropped=tuple(d for d in drops if d.dropped))
    return train, Split(fte, yte), f"{path} ({note})", shape


def _held_test_keys(path: Path, cfg: DataConfig, arrays: dict[str, np.ndarray]) -> list[str]:
    """The test arrays the file holds: both or neither, and then neither data.test_path nor data.test_split."""
    held = [k for k in (cfg.x_test_key, cfg.y_test_key) if k in arrays]
    if len(held) == 1:
        other = cfg.y_test_key if held[0] == cfg.x_test_key else cfg.x_test_key
        raise DataError(f"{path}: holds {held[0]!r} but no {other!r}; a test set needs both (or neither)")
    if held and cfg.test_path:
        raise DataError(
            f"data.test_path: {path} holds its own test set ({cfg.x_test_key}, {cfg.y_test_key}); remove "
            "data.test_path, or those arrays"
        )
    if held and cfg.test_split is not None:
        raise DataError(
            f"data.test_split: {path} holds its own test set ({cfg.x_test_key}, {cfg.y_test_key}); remove data.test_split"
        )
    return held
