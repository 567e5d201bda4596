"""What the readers of your own files share: the given paths, missing values, labels taken as
the values they are and encoded as classes, and the held-out test set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from dnnlab.config import DEFAULT_TEST_SPLIT, DataConfig
from dnnlab.data.dataset import DataError, stratified_indices

FILE_SPLIT_SEED = 20  # fixed too: the test split of csv, npz and folder data without a test set
# cells that count as missing (compared stripped and lowercased); NaN in a float array too
MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none", "?")


# ---------------------------------------------------------------- the user's own files (csv, npz, folder)


def _given_path(value: Optional[str], key: str, kind: str, folder: bool = False) -> Path:
    """The existing file (or folder) that data.path / data.test_path names; DataError otherwise."""
    path = Path(value or "").expanduser()
    if not path.exists():
        raise DataError(f"{key}: {path} does not exist; point {key} at {kind}")
    if folder and not path.is_dir():
        what = "a file" if path.is_file() else "not a folder (a device, a pipe or a socket)"
        raise DataError(f"{key}: {path} is {what}; point {key} at {kind}")
    if not folder and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file (a device, a pipe or a socket)"
        raise DataError(f"{key}: {path} is {what}; point {key} at {kind}")
    return path


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_TOKENS


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# a label or class folder name that is a number as written: no leading zero, no plus sign
_PLAIN_INT = re.compile(r"-?(0|[1-9][0-9]*)")


def _label_keys(labels: np.ndarray, strip: bool = True) -> np.ndarray:
    """Labels as what they are: integers compared as integers (never through float64, where 2**53
    and 2**53 + 1 are one number), floats as floats, text as text (stripped, unless `strip` is
    false: a folder's name is its name)."""
    if labels.dtype.kind == "b":
        return labels.astype(np.int64)
    if labels.dtype.kind in "iuf":
        return labels
    strings = labels.astype(str)
    return np.char.strip(strings) if strip else strings


def _name_order(names: np.ndarray) -> np.ndarray:
    """The order of distinct text labels: by value when every one is a plain integer (`10` after
    `9`) or every one a finite number, else as text; two strings are two classes whatever their
    value (`1` and `01`, `inf` and `Infinity`)."""
    strings = [str(n) for n in names]
    if all(_PLAIN_INT.fullmatch(t) for t in strings):
        return np.asarray(sorted(range(len(strings)), key=lambda i: int(strings[i])), dtype=np.intp)
    values = []
    for t in strings:
        try:
            values.append(float(t))
        except ValueError:
            break
    if len(values) == len(strings) and all(np.isfinite(values)):
        return np.asarray(sorted(range(len(strings)), key=lambda i: (values[i], strings[i])), dtype=np.intp)
    return np.arange(len(strings))  # np.unique's: by code point


def _class_name(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _encode_labels(
    labels: np.ndarray, where: str, locate: Callable[[int], str], strip: bool = True
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """(labels as 0..C-1, the class names, the class values in class order): the distinct labels
    (`_label_keys`, ordered by `_name_order` when they are text), each with at least 2 examples,
    and at least 2 classes. `locate(i)` says where example i is."""
    values = _label_keys(labels, strip)
    classes, y, counts = np.unique(values, return_inverse=True, return_counts=True)
    y = y.reshape(-1)
    if classes.dtype.kind in "US":
        order = _name_order(classes)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        classes, y, counts = classes[order], rank[y], counts[order]
    names = tuple(_class_name(v) for v in classes)
    _refuse_numeric(values, counts, where)
    if len(classes) < 2:
        raise DataError(
            f"{where}: every example has the label {names[0]!r}: a classifier needs at least 2 classes; "
            "check the label (data.label for a csv)"
        )
    rare = np.flatnonzero(counts < 2)
    if rare.size:
        first = int(np.flatnonzero(y == rare[0])[0])
        many = len(classes) > len(values) // 2
        hint = (
            f" The labels take {len(classes)} distinct values among {len(values)} examples: is this the label "
            "(data.label for a csv)?" if many else ""
        )
        raise DataError(
            f"{where}: class {names[rare[0]]!r} has a single example ({locate(first)}); every class needs at least 2 "
            f"(one may be held out for testing); remove it or merge it into another class.{hint}"
            + (f" {rare.size} classes have a single example." if rare.size > 1 else "")
        )
    return y.astype(np.int32), names, classes


# a numeric label with more distinct values than this (and than this share of the examples),
# most of them held by fewer than REGRESSION_RARE examples, is a number to predict, not a class
REGRESSION_DISTINCT, REGRESSION_SHARE, REGRESSION_RARE = 20, 0.1, 3


def _numbers(values: np.ndarray) -> Optional[np.ndarray]:
    """The labels as float64 when every one is a number (of a numeric array, or text that parses
    as one), else None."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:
        return None


def _refuse_numeric(values: np.ndarray, counts: np.ndarray, where: str) -> None:
    """DataError when a classification label looks like a numeric target: every label a number,
    more than REGRESSION_DISTINCT distinct values and more than REGRESSION_SHARE of the examples,
    most of them with fewer than REGRESSION_RARE examples."""
    distinct, n = len(counts), len(values)
    if distinct <= REGRESSION_DISTINCT or distinct <= REGRESSION_SHARE * n:
        return
    if np.mean(counts < REGRESSION_RARE) <= 0.5 or _numbers(values) is None:
        return
    raise DataError(
        f"{where}: the label is a number with {distinct} distinct values among {n} examples, "
        f"{int(np.sum(counts < REGRESSION_RARE))} of them held by fewer than {REGRESSION_RARE} examples: that is a "
        "numeric target, not classes. Set data.task: regression to predict it (mean squared error, R^2); or check "
        "the label (data.label for a csv, data.y_key for an npz)"
    )


def _targets(labels: np.ndarray, where: str, locate: Callable[[int], str]) -> np.ndarray:
    """Regression targets: every label as a finite float64 number; DataError names the first that
    is not one."""
    values = _label_keys(labels)
    if values.dtype.kind in "biuf":
        y = values.astype(np.float64)
    else:
        y = np.empty(len(values), np.float64)
        for i, cell in enumerate(values):
            try:
                y[i] = float(cell)
            except ValueError:
                raise DataError(
                    f"{where}: the target {str(cell)!r} ({locate(i)}) is not a number; data.task: regression "
                    "predicts a numeric label: check the label (data.label for a csv), or set data.task: "
                    "classification"
                ) from None
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: the target at {locate(i)} is {y[i]}; every target must be a finite number")
    if len(y) and np.abs(y).max() > np.finfo(np.float32).max:
        raise DataError(f"{where}: a target is beyond float32's range; scale the target")
    return y


def random_indices(n: int, fraction_or_count: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random sample (a fraction (< 1) or a count (>= 1) of n), sorted: the split of
    regression data, which have no classes to stratify."""
    total = int(round(fraction_or_count * n)) if fraction_or_count < 1 else int(fraction_or_count)
    return np.sort(rng.permutation(n)[: min(max(total, 0), n)])


def _test_key(value: Any, text: bool) -> Any:
    """A test label as a key of the training classes: their names when they are text (`text`),
    else their numbers (text that is a plain integer or a number counts as one)."""
    if isinstance(value, np.generic):
        value = value.item()
    if text:
        return _class_name(value)
    if isinstance(value, str):
        if _PLAIN_INT.fullmatch(value):
            return int(value)
        try:
            return float(value)
        except ValueError:
            return None
    return value  # an int or a float: Python compares them exactly (1 == 1.0, 2**53 + 1 != 2**53)


def _encode_test_labels(
    labels: np.ndarray, classes: np.ndarray, names: tuple[str, ...], where: str, locate: Callable[[int], str],
    strip: bool = True,
) -> np.ndarray:
    """Test labels as the training classes' indices; DataError names the first label that is not one."""
    text = classes.dtype.kind in "US"
    index = {_test_key(c, text): i for i, c in enumerate(classes)}
    distinct, inverse = np.unique(_label_keys(labels, strip), return_inverse=True)
    found = np.asarray([index.get(_test_key(v, text), -1) for v in distinct], dtype=np.int64)
    y = found[inverse.reshape(-1)]
    bad = y < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = distinct[inverse.reshape(-1)[i]]
        raise DataError(
            f"{where}: the test label {_class_name(value)!r} ({locate(i)}) is not a class of the training data "
            f"(classes: {', '.join(names)}); a model cannot predict a class it never saw"
        )
    return y.astype(np.int32)


def _hold_out(y: np.ndarray, cfg: DataConfig, where: str) -> np.ndarray:
    """The fixed stratified test indices of data.test_split (the same for every seed)."""
    fraction = cfg.test_split if cfg.test_split is not None else DEFAULT_TEST_SPLIT
    rng = np.random.default_rng(FILE_SPLIT_SEED)
    test_idx = random_indices(len(y), fraction, rng) if cfg.task == "regression" else stratified_indices(y, fraction, rng)
    if len(test_idx) == 0 or len(test_idx) == len(y):
        raise DataError(
            f"{where}: data.test_split {fraction} of {len(y)} examples leaves "
            f"{'no test' if len(test_idx) == 0 else 'no training'} example; "
            "change data.test_split, or give a test set with data.test_path"
        )
    return test_idx


def _split_off(x: np.ndarray, y: np.ndarray, test_idx: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    keep = np.ones(len(y), bool)
    keep[test_idx] = False
    return (x[keep], y[keep]), (x[test_idx], y[test_idx])


def _test_note(cfg: DataConfig) -> str:
    fraction = cfg.test_split if cfg.test_split is not None else DEFAULT_TEST_SPLIT
    return f"test: a fixed {'random' if cfg.task == 'regression' else 'stratified'} {fraction * 100:g}% of it"


# ------------------------------------------ npz


def _npz_archive(path: Path) -> Any:
    """np.load of an .npz archive; DataError for a single array (an .npy file under another name)."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array (an .npy file), not an npz archive; save the arrays with np.savez(x=..., y=...)")
    return loaded
