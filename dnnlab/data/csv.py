"""The csv reader: a table with a label column (detected separator and header), its feature
columns as float32, missing values refused or dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from dnnlab.config import DataConfig
from dnnlab.data.dataset import FLOAT32_MAX, DataError, Dropped, Split
from dnnlab.data.files import (
    MISSING_TOKENS,
    _encode_labels,
    _encode_test_labels,
    _given_path,
    _hold_out,
    _is_missing,
    _is_number,
    _split_off,
    _targets,
    _test_note,
)

if TYPE_CHECKING:
    from dnnlab.data.dataset import Loaded


CSV_DELIMITERS = (",", ";", "\t", "|")  # detected in this order of preference (data.delimiter sets one)


# ------------------------------------------ csv


@dataclass(frozen=True)
class _Table:
    """One CSV file read: the feature columns as float64, the label cells, and where each row is."""

    path: Path
    x: np.ndarray  # (N, D) float64
    labels: np.ndarray  # (N,) str, stripped
    line: np.ndarray  # (N,) the 1-based line of the file that each row comes from
    names: Optional[list[str]]  # the header, if the file has one
    label_col: int
    feature_cols: list[int]
    delimiter: str

    def column(self, j: int) -> str:
        return f"column {j} ({self.names[j]!r})" if self.names else f"column {j}"


def _csv_fields(line: str, delimiter: str) -> list[str]:
    if len(line) > csv.field_size_limit():  # a field may be as long as its line, of any length
        csv.field_size_limit(len(line) + 1)
    return next(csv.reader([line], delimiter=delimiter), [])


def _detect_delimiter(sample: list[str]) -> str:
    """The separator that splits the sample's lines into the same number (>= 2) of fields, the most
    fields winning (then the order of CSV_DELIMITERS); else the one that splits the first line most."""
    best, best_fields = CSV_DELIMITERS[0], 1
    for d in CSV_DELIMITERS:
        counts = {len(_csv_fields(line, d)) for line in sample}
        if len(counts) == 1 and (n := counts.pop()) > best_fields:
            best, best_fields = d, n
    if best_fields > 1:
        return best
    return max(CSV_DELIMITERS, key=lambda d: len(_csv_fields(sample[0], d)))


def _has_header(first: list[str], sample: list[list[str]]) -> bool:
    """A first row with a word above a column of numbers (or a number above a column of words)
    names the columns."""
    for j, cell in enumerate(first):
        below = [row[j] for row in sample if j < len(row) and not _is_missing(row[j])]
        if _is_missing(cell) or not below:
            continue
        numbers = [_is_number(v) for v in below]
        if (all(numbers) and not _is_number(cell)) or (not any(numbers) and _is_number(cell)):
            return True
    return False


def _column_index(ref: Any, names: Optional[list[str]], n: int, path: Path, key: str) -> int:
    """The 0-based index of column `ref` (a header name or an index, negative from the end)."""
    if isinstance(ref, str):
        if names is None:
            raise DataError(
                f"{key}: {ref!r} names a column, but {path} has no header row; give a 0-based index, "
                "or set data.header: true if its first row names the columns"
            )
        hits = [j for j, name in enumerate(names) if name == ref]
        if not hits:
            close = difflib.get_close_matches(ref, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"{key}: {path} has no column {ref!r}; {hint}its columns: {', '.join(names)}")
        if len(hits) > 1:
            raise DataError(f"{key}: {path} has {len(hits)} columns named {ref!r} (columns {hits}); name it by index")
        return hits[0]
    if not -n <= ref < n:
        raise DataError(f"{key}: column {ref} is out of range: {path} has {n} columns (0..{n - 1}, or -1 for the last)")
    return ref % n


def _read_csv(path: Path, cfg: DataConfig, like: Optional[_Table] = None) -> _Table:
    """Read a CSV table: columns chosen by data.label/data.features (or as in `like`, the training
    file), numbers parsed by NumPy's C reader, every problem a DataError naming the line and column."""
    lines, nonblank = _csv_lines(path)
    delimiter = cfg.delimiter or (like.delimiter if like else _detect_delimiter([lines[i] for i in nonblank[:20]]))
    if like is not None and not cfg.delimiter and len(_csv_fields(lines[nonblank[0]], delimiter)) < 2:
        # a test file with a separator of its own: found as the training file's was (data.delimiter
        # would set it for both files)
        delimiter = _detect_delimiter([lines[i] for i in nonblank[:20]])
    first = _csv_fields(lines[nonblank[0]], delimiter)
    sample = [_csv_fields(lines[i], delimiter) for i in nonblank[1:51]]
    header = _is_header(cfg, like, first, sample)
    n_cols = len(first)
    if n_cols < 2:
        raise DataError(
            f"{path}: line {nonblank[0] + 1} holds a single column (separator {delimiter!r}); a table needs "
            "feature columns and a label column: set data.delimiter if the file uses another separator"
        )
    names = [c.strip() for c in first] if header else None
    rows = nonblank[1:] if header else nonblank
    if not rows:
        raise DataError(f"{path}: holds a header row but no data rows")
    label_col, feature_cols = _columns(path, cfg, like, names, n_cols)
    data_lines = [lines[i] for i in rows]
    line_of = np.asarray(rows) + 1
    _check_field_counts(path, data_lines, line_of, delimiter, n_cols, nonblank[0] + 1)
    labels = np.loadtxt(data_lines, delimiter=delimiter, comments=None, quotechar='"', usecols=[label_col], dtype=str, ndmin=1)
    table = _Table(path, np.zeros((0, 0)), np.char.strip(labels), line_of, names, label_col, feature_cols, delimiter)
    return dataclasses.replace(table, x=_features(data_lines, table))


def _csv_lines(path: Path) -> tuple[list[str], list[int]]:
    """The file's lines (any line ending) and the indices of the nonblank ones; an unreadable,
    non-UTF-8, empty or one-line file is an error."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the table as UTF-8 CSV") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # the lines an editor shows
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    if not nonblank:
        raise DataError(f"{path}: is empty; a CSV table holds rows of feature values and a label")
    if len(nonblank) == 1:
        raise DataError(f"{path}: holds a single line; a table needs data rows (at least 2 examples of each class)")
    return lines, nonblank


def _is_header(cfg: DataConfig, like: Optional[_Table], first: list[str], sample: list[list[str]]) -> bool:
    """Whether the first row is a header: data.header, else the training file's header repeated,
    else it names a configured column or looks like one (`_has_header`)."""
    named = [r for r in (cfg.label, *(cfg.features or ())) if isinstance(r, str)]
    if cfg.header is not None:
        return cfg.header
    if like is not None and like.names is not None and [c.strip() for c in first] == like.names:
        return True
    return bool(named and set(named) & {c.strip() for c in first}) or _has_header(first, sample)


def _columns(
    path: Path, cfg: DataConfig, like: Optional[_Table], names: Optional[list[str]], n_cols: int
) -> tuple[int, list[int]]:
    """The label column and the feature columns: those of the training file `like` (by name
    where both files have a header), else by data.label and data.features."""
    if like is not None:
        if like.names is not None and names is not None:
            label_col = _column_index(like.names[like.label_col], names, n_cols, path, "data.label")
            feature_cols = [_column_index(like.names[j], names, n_cols, path, "data.features") for j in like.feature_cols]
        else:
            label_col, feature_cols = like.label_col, like.feature_cols
            if max(feature_cols + [label_col]) >= n_cols:
                raise DataError(
                    f"{path}: has {n_cols} columns, fewer than the training file {like.path}; the test file needs "
                    "the training file's columns"
                )
        return label_col, feature_cols
    label_col = _column_index(cfg.label if cfg.label is not None else -1, names, n_cols, path, "data.label")
    if cfg.features is None:
        return label_col, [j for j in range(n_cols) if j != label_col]
    feature_cols = [_column_index(r, names, n_cols, path, "data.features") for r in cfg.features]
    if label_col in feature_cols:
        raise DataError(f"data.features: holds the label column {label_col} of {path}; leave it out")
    if len(set(feature_cols)) != len(feature_cols):
        raise DataError(f"data.features: names a column of {path} twice: {cfg.features}")
    return label_col, feature_cols


def _check_field_counts(path: Path, data_lines: list[str], line_of: np.ndarray, delimiter: str, n_cols: int, first_line: int) -> None:
    """Every row must have the first row's number of fields (a value holding an unquoted separator
    shifts the columns after it)."""
    counts = np.fromiter((line.count(delimiter) for line in data_lines), int, len(data_lines))
    if (counts == n_cols - 1).all():
        return
    for i in np.flatnonzero(counts != n_cols - 1):  # a quoted separator is no separator: ask csv
        n = len(_csv_fields(data_lines[i], delimiter))
        if n != n_cols:
            raise DataError(
                f"{path}: line {line_of[i]} has {n} fields, line {first_line} has {n_cols} (separator {delimiter!r}); "
                "every row needs the same columns: quote values that hold the separator"
            )


def _empty_to_nan(data_lines: list[str], delimiter: str) -> list[str]:
    """The lines with every empty cell written as nan, which NumPy's reader parses (plain string
    replacement, fast: the usual form of a missing value)."""
    d = delimiter
    text = "\n" + "\n".join(data_lines) + "\n"
    text = text.replace(d + d, d + "nan" + d).replace(d + d, d + "nan" + d)  # twice: ",,," has two
    text = text.replace("\n" + d, "\nnan" + d).replace(d + "\n", d + "nan\n")
    return text[1:-1].split("\n")


def _tokens_to_nan(data_lines: list[str], delimiter: str) -> list[str]:
    """The lines with every missing-value word (NA, N/A, null, none, ?, any case, maybe quoted or
    padded), quoted empty cell and blank cell written as nan (a regular expression: slower)."""
    d = re.escape(delimiter)
    space = "[ ]" if delimiter == "\t" else "[ \t]"
    words = "|".join(re.escape(t) for t in MISSING_TOKENS if t)
    cell = re.compile(
        rf'(?<![^{d}\n])(?:{space}*"?{space}*(?:{words}){space}*"?{space}*|{space}*"{space}*"{space}*|{space}+)(?![^{d}\n])',
        re.I,
    )
    return cell.sub("nan", "\n".join(data_lines)).split("\n")


def _features(data_lines: list[str], table: _Table) -> np.ndarray:
    """The feature columns as float64, missing cells as NaN; a cell that is neither a number nor
    missing is a DataError naming its line, column and value."""
    read = partial(np.loadtxt, delimiter=table.delimiter, comments=None, quotechar='"', usecols=table.feature_cols,
                   dtype=np.float64, ndmin=2)
    filled = data_lines
    for fill in (None, _empty_to_nan, _tokens_to_nan):  # NumPy's C reader first, then missing cells as nan
        filled = fill(filled, table.delimiter) if fill else filled
        try:
            return read(filled)
        except ValueError as exc:
            problem = exc
    # NumPy names the cell: "could not convert string 'x' to float64 at row R (0-based), column C (1-based)";
    # believed only when that cell of that line holds that text, else found by a scan
    found = re.search(r"string '(.*)' to \w+ at row (\d+), column (\d+)", str(problem))
    where: Optional[tuple[int, int, str]] = None
    if found:
        i, j = int(found.group(2)), int(found.group(3)) - 1
        cells = _csv_fields(filled[i], table.delimiter) if i < len(filled) else []
        if j in table.feature_cols and j < len(cells) and cells[j].strip() == found.group(1).strip():
            where = (i, j, cells[j])
    if where is None:
        for i, line in enumerate(filled):
            cells = _csv_fields(line, table.delimiter)
            bad = [j for j in table.feature_cols if j < len(cells) and not _is_number(cells[j])]
            if bad:
                where = (i, bad[0], cells[bad[0]])
                break
    if where is None:
        raise DataError(f"{table.path}: cannot read the table's numbers ({problem})")
    i, j, value = where
    raise DataError(
        f"{table.path}: {table.column(j)} is not numeric: line {table.line[i]} holds {value.strip()!r}; a feature must "
        "be a number: encode it as numbers, leave the column out (data.features), or, if it is the label, set data.label"
    )


def _clean_table(table: _Table, cfg: DataConfig) -> _Table:
    """The table without missing values (an error, or dropped rows under data.missing: drop) and
    with no infinite value."""
    x_missing = np.isnan(table.x)
    label_missing = np.isin(np.char.lower(table.labels), MISSING_TOKENS)
    missing = np.column_stack([x_missing, label_missing])
    inf = np.isinf(table.x)
    if inf.any():
        i, k = (int(v[0]) for v in np.nonzero(inf))
        raise DataError(
            f"{table.path}: {table.column(table.feature_cols[k])} holds an infinite value at line {table.line[i]}; "
            "replace it with a finite number"
        )
    big = np.abs(table.x) > FLOAT32_MAX  # finite as read, infinite once cast to the inputs' float32
    if big.any():
        i, k = (int(v[0]) for v in np.nonzero(big))
        raise DataError(
            f"{table.path}: {table.column(table.feature_cols[k])} holds {table.x[i, k]:g} at line {table.line[i]}, beyond "
            f"float32's range (±{FLOAT32_MAX:.4g}), the type the inputs are trained in; scale the column or leave it out "
            "(data.features)"
        )
    bad_rows = missing.any(axis=1)
    if not bad_rows.any():
        return table
    if cfg.missing == "error":
        i = int(np.flatnonzero(bad_rows)[0])
        cols = table.feature_cols + [table.label_col]
        j = min(cols[k] for k in np.flatnonzero(missing[i]))
        n = int(missing.sum())
        raise DataError(
            f"{table.path}: {n} missing value{'s' if n > 1 else ''} (empty cells, NA, NaN or ?) in "
            f"{int(bad_rows.sum())} of {len(bad_rows)} rows, the first at line {table.line[i]}, {table.column(j)}; "
            "fill them in, or set data.missing: drop to drop those rows"
        )
    keep = ~bad_rows
    if not keep.any():
        raise DataError(f"{table.path}: every row has a missing value; data.missing: drop leaves no data")
    return _Table(table.path, table.x[keep], table.labels[keep], table.line[keep], table.names, table.label_col,
                  table.feature_cols, table.delimiter)


def _load_csv(cfg: DataConfig) -> Loaded:
    """A CSV table: the label column mapped to classes 0..C-1, the feature columns as raw numbers."""
    path = _given_path(cfg.path, "data.path", "the training CSV file")
    read = _read_csv(path, cfg)
    train = _clean_table(read, cfg)
    dropped = [Dropped(str(path), len(read.x) - len(train.x), len(read.x))]
    regression = cfg.task == "regression"
    if regression:  # numeric targets (float64 here; standardized and float32 in `data.load`)
        ytr, names, classes = _targets(train.labels, str(path), lambda i: f"line {train.line[i]}"), (), ()
    else:
        ytr, names, classes = _encode_labels(train.labels, str(path), lambda i: f"line {train.line[i]}")
    if cfg.test_path:
        test_path = _given_path(cfg.test_path, "data.test_path", "the test CSV file")
        read = _read_csv(test_path, cfg, like=train)
        test = _clean_table(read, cfg)
        dropped.append(Dropped(str(test_path), len(read.x) - len(test.x), len(read.x)))
        if regression:
            yte = _targets(test.labels, str(test_path), lambda i: f"line {test.line[i]}")
        else:
            yte = _encode_test_labels(test.labels, classes, names, str(test_path), lambda i: f"line {test.line[i]}")
        (xtr, ytr), (xte, yte) = (train.x, ytr), (test.x, yte)
        note = f"test: {test_path}"
    else:
        (xtr, ytr), (xte, yte) = _split_off(train.x, ytr, _hold_out(ytr, cfg, str(path)))
        note = _test_note(cfg)
    label = train.column(train.label_col).removeprefix("column ")
    source = f"{path} (label: column {label}, {len(train.feature_cols)} features; {note})"
    reader = {
        "features": [{"name": train.names[j] if train.names else None, "position": j} for j in train.feature_cols],
        "label": {"name": train.names[train.label_col] if train.names else None, "position": train.label_col},
        "delimiter": train.delimiter,
        "header": train.names is not None,
        "class_values": [v.item() for v in classes],
    }
    train_split = Split(xtr.astype(np.float32), ytr, names, raw=True, reader=reader, dropped=tuple(d for d in dropped if d.dropped))
    return (train_split, Split(xte.astype(np.float32), yte), source, ())
