"""What prediction needs of the data a run trained on (preprocessing.json), and raw inputs read
and turned into the model's inputs with the training split's own statistics.

The record (`describe`) says how the training inputs were made: the dataset kind, the task,
the class names, the feature columns by name and position and the label column (csv), the
arrays (npz), the image size and channels (folder, built-in images), the pixel divisor and
the per-channel scaling with its shift and scale from the training split (as float32 values,
exact in JSON). `to_model_inputs` applies it with the formula training used
(`dataset.apply_scaling`), so the same raw rows give the same inputs bit for bit.
No JAX.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from dnnlab.config import DataConfig
from dnnlab.data.dataset import DataError, apply_scaling

FORMAT = 1  # preprocessing.json's format version
TASKS = ("classification",)  # what `predict` predicts; a regression task adds its own outputs
# the published class names of the built-in datasets (label i is CLASS_NAMES[name][i]); digits
# and mnist name their classes by the digit
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def describe(
    cfg: DataConfig, reader: Optional[dict[str, Any]], classes: Sequence[str], num_classes: int,
    input_shape: tuple[int, ...], scaling: Optional[str], stats: Optional[Sequence[np.ndarray]],
) -> dict[str, Any]:
    """The preprocessing record of a loaded dataset (what `data.load` used): see the module docstring."""
    channels = input_shape[-1]
    if cfg.dataset == "digits":
        pixels = {"divisor": 16.0, "precision": "float64"}  # builtin._load_digits: float64 / 16, then float32
    elif cfg.dataset == "csv" or (cfg.dataset == "npz" and not (reader or {}).get("uint8")):
        pixels = None  # raw numbers, scaled (or not) below
    else:  # folder images, npz uint8 arrays, the published image datasets
        pixels = {"divisor": 255.0, "precision": "float32"}  # uint8 / 255 as float32
    record: dict[str, Any] = {
        "format": FORMAT,
        "task": cfg.task,
        "dataset": cfg.dataset,
        "classes": list(classes) if classes else list(CLASS_NAMES.get(cfg.dataset, [str(i) for i in range(num_classes)])),
        "input_shape": list(input_shape),
        "pixels": pixels,
        "normalize": cfg.normalize,
        "scaling": None if scaling is None or stats is None else {
            "kind": scaling,
            "channels": int(channels),
            # float32 values: a Python float holds each exactly, and JSON writes it so it reads back the same
            "shift": [float(v) for v in np.asarray(stats[0], np.float32).reshape(-1)],
            "scale": [float(v) for v in np.asarray(stats[1], np.float32).reshape(-1)],
        },
    }
    if reader:
        record[cfg.dataset] = {k: v for k, v in reader.items()}
    if len(input_shape) == 3:
        record["image"] = {"height": int(input_shape[0]), "width": int(input_shape[1]), "channels": int(channels),
                           "resize": bool((reader or {}).get("resize", False))}
    return record


def check_record(record: Any, where: str) -> dict[str, Any]:
    """`record` if it is a preprocessing record this version reads; else DataError naming `where`."""
    keys = ("format", "task", "dataset", "classes", "input_shape", "pixels", "scaling")
    if not isinstance(record, dict) or any(k not in record for k in keys):
        raise DataError(f"{where}: not a preprocessing record (it needs {', '.join(keys)}); restore it or train the run again")
    if record["format"] != FORMAT:
        raise DataError(f"{where}: format {record['format']!r}; this dnnlab reads format {FORMAT}: update dnnlab")
    if record["task"] not in TASKS:
        raise DataError(f"{where}: task {record['task']!r}; this dnnlab predicts {', '.join(TASKS)}")
    return record


def to_model_inputs(record: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Raw inputs (N, ...) as the model's float32 (N, D): the pixel divisor, then the training
    split's per-channel scaling, the operations `data.load` applied, in its order."""
    flat = np.asarray(x).reshape(len(x), -1)
    pixels = record["pixels"]
    if pixels is None:
        z = flat.astype(np.float32)
    elif pixels["precision"] == "float64":
        z = (flat.astype(np.float64) / pixels["divisor"]).astype(np.float32)
    else:
        z = flat.astype(np.float32) / np.float32(pixels["divisor"])
    scaling = record["scaling"]
    if scaling is not None:
        shift = np.asarray(scaling["shift"], np.float32)
        scale = np.asarray(scaling["scale"], np.float32)
        z = apply_scaling(z, shift, scale, int(scaling["channels"]))
    return z


def input_dim(record: dict[str, Any]) -> int:
    return int(np.prod(record["input_shape"]))


# ---------------------------------------------------------------- raw inputs


@dataclass(frozen=True)
class RawInputs:
    """Inputs read for prediction: raw x (N, ...), labels as class indices (or None), where each
    example comes from, and the columns of a table that were not used."""

    x: np.ndarray
    y: Optional[np.ndarray]
    where: list[str]
    ignored: list[str]


def _class_values(record: dict[str, Any]) -> np.ndarray:
    values = (record.get(record["dataset"]) or {}).get("class_values")
    return np.asarray(values if values is not None else list(range(len(record["classes"]))))


def _labels(record: dict[str, Any], labels: np.ndarray, where: str, locate, strip: bool = True) -> np.ndarray:
    from dnnlab.data.files import _encode_test_labels

    return _encode_test_labels(labels, _class_values(record), tuple(record["classes"]), where, locate, strip)


def read_inputs(record: dict[str, Any], paths: Sequence[Path]) -> RawInputs:
    """The raw inputs at `paths`: a CSV table, an .npz of arrays, an image folder or image
    files; DataError (the file, line and column, or the fix) for anything the run cannot take."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p} does not exist; give a CSV table, an .npz file, an image folder or image files")
    first = paths[0]
    if len(paths) == 1 and first.is_file() and first.suffix.lower() in (".csv", ".tsv", ".txt"):
        return read_table(record, first)
    if len(paths) == 1 and first.is_file() and first.suffix.lower() == ".npz":
        return read_arrays(record, first)
    if all(p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return read_images(record, paths)
    raise DataError(
        f"{first}: not an input dnnlab reads; give a .csv table, an .npz file, an image folder or .png/.jpg files"
    )


def read_table(record: dict[str, Any], path: Path) -> RawInputs:
    """A CSV table's feature columns (by header name when the run's table had a header, else by
    position), the label column when present; extra columns are ignored and named."""
    from dnnlab.data import csv as csvmod

    meta = record.get("csv")
    if meta is None:
        raise DataError(
            f"{path}: the run trained on {record['dataset']} data, not a CSV table; give "
            + ("an .npz file or images" if record["dataset"] != "npz" else "an .npz file")
        )
    lines, nonblank = _table_lines(path)
    delimiter = meta["delimiter"]
    if len(csvmod._csv_fields(lines[nonblank[0]], delimiter)) < 2:
        delimiter = csvmod._detect_delimiter([lines[i] for i in nonblank[:20]])
    first = [c.strip() for c in csvmod._csv_fields(lines[nonblank[0]], delimiter)]
    n_cols = len(first)
    names: Optional[list[str]]
    if meta["header"]:
        feature_cols, label_col, ignored = _header_columns(path, meta, first, nonblank[0] + 1)
        names, rows = first, nonblank[1:]
    else:
        feature_cols, label_col = _positional_columns(path, meta, n_cols, nonblank[0] + 1)
        names, rows, ignored = None, nonblank, []
    if not rows:
        raise DataError(f"{path}: holds a header row but no data rows")
    data_lines = [lines[i] for i in rows]
    line_of = np.asarray(rows) + 1
    csvmod._check_field_counts(path, data_lines, line_of, delimiter, n_cols, nonblank[0] + 1)
    table = csvmod._Table(path, np.zeros((0, 0)), np.zeros(0, str), line_of, names, -1, feature_cols, delimiter)
    x = csvmod._features(data_lines, table)
    _check_features_finite(path, x, table, line_of)
    where = [f"line {n}" for n in line_of]
    y = None if label_col is None else _table_labels(record, path, data_lines, delimiter, label_col, where)
    return RawInputs(x, y, where, ignored)


def _table_lines(path: Path) -> tuple[list[str], list[int]]:
    """The table's lines (any line ending) and the indices of the nonblank ones; not UTF-8 or empty is an error."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the table as UTF-8 CSV") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    if not nonblank:
        raise DataError(f"{path}: is empty; give rows of the run's feature columns")
    return lines, nonblank


def _header_columns(
    path: Path, meta: dict[str, Any], first: list[str], first_line: int
) -> tuple[list[int], Optional[int], list[str]]:
    """The feature and label columns found by name in the header row `first`, and the other names (ignored)."""
    features, label = meta["features"], meta["label"]
    wanted = [f["name"] for f in features]
    known = set(wanted) | {label["name"]}
    if not set(first) & known:
        raise DataError(
            f"{path}: line {first_line} names none of the run's columns; the first row must name them "
            f"(the feature columns: {', '.join(wanted)})"
        )
    missing = [name for name in wanted if name not in first]
    if missing:
        close = difflib.get_close_matches(missing[0], first, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"{path}: has no column {missing[0]!r}{hint}"
            + (f" and {len(missing) - 1} more ({', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else "")
            + f"; the run trained on the columns {', '.join(wanted)}: add the missing ones"
        )
    for name in set(wanted):
        if first.count(name) > 1:
            raise DataError(f"{path}: has {first.count(name)} columns named {name!r}; keep one")
    feature_cols = [first.index(name) for name in wanted]
    label_col = first.index(label["name"]) if label["name"] in first else None
    ignored = [c for j, c in enumerate(first) if j not in feature_cols and j != label_col]
    return feature_cols, label_col, ignored


def _positional_columns(path: Path, meta: dict[str, Any], n_cols: int, first_line: int) -> tuple[list[int], Optional[int]]:
    """The feature and label columns by position in a headerless table: all the run's columns, or just its features."""
    features, label = meta["features"], meta["label"]
    n_features, n_train = len(features), max([f["position"] for f in features] + [label["position"]]) + 1
    if n_cols == n_train:
        return [f["position"] for f in features], label["position"]
    if n_cols == n_features:
        return list(range(n_features)), None
    raise DataError(
        f"{path}: line {first_line} has {n_cols} fields; the run's table (no header row) had {n_train} "
        f"columns, {n_features} of them features: give its {n_train} columns, or just the {n_features} features "
        "in their order"
    )


def _check_features_finite(path: Path, x: np.ndarray, table: Any, line_of: np.ndarray) -> None:
    """Refuses a missing or infinite feature value, naming its column and line."""
    bad = ~np.isfinite(x)
    if bad.any():
        i, k = (int(v[0]) for v in np.nonzero(bad))
        what = "a missing value" if np.isnan(x[i, k]) else "an infinite value"
        raise DataError(
            f"{path}: {table.column(table.feature_cols[k])} holds {what} at line {line_of[i]}; a prediction needs every "
            "feature: fill it in or drop the row"
        )


def _table_labels(
    record: dict[str, Any], path: Path, data_lines: list[str], delimiter: str, label_col: int, where: list[str]
) -> Optional[np.ndarray]:
    """The label column's labels, or None when the column is empty throughout (an empty label column is no label)."""
    from dnnlab.data.files import _is_missing

    cells = np.loadtxt(data_lines, delimiter=delimiter, comments=None, quotechar='"', usecols=[label_col], dtype=str, ndmin=1)
    cells = np.char.strip(cells)
    if all(_is_missing(c) for c in cells):
        return None
    return _labels(record, cells, str(path), lambda i: where[i])


def read_arrays(record: dict[str, Any], path: Path) -> RawInputs:
    """An .npz's inputs (the run's data.x_key, or `x`) and labels (its data.y_key or `y`, optional)."""
    from dnnlab.data.npz import _npz_arrays

    meta = record.get("npz") or {}
    x_key, y_key = meta.get("x_key", "x"), meta.get("y_key", "y")
    arrays = _npz_arrays(path, [x_key, y_key, "x", "y"], [])
    x = arrays.get(x_key, arrays.get("x"))
    if x is None:
        raise DataError(f"{path}: has no array {x_key!r}; save the inputs under that name")
    y = arrays[y_key] if y_key in arrays else arrays.get("y")
    if x.dtype.kind not in "biuf" or x.ndim == 0 or len(x) == 0:
        raise DataError(f"{path} ({x_key}): inputs must be a numeric array of one example per row; got {x.dtype} {x.shape}")
    pixels = record["pixels"]
    if pixels is not None and pixels["divisor"] == 255.0 and x.dtype != np.uint8:
        raise DataError(
            f"{path} ({x_key}): the run trained on uint8 pixels (0..255); these are {x.dtype}: save them as uint8"
        )
    shape = tuple(record["input_shape"])
    per_example = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    if per_example != int(np.prod(shape)):
        raise DataError(
            f"{path} ({x_key}): {per_example} values per example (shape {x.shape[1:]}); the run trained on "
            f"{'x'.join(map(str, shape))} = {int(np.prod(shape))}"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise DataError(f"{path} ({x_key}): example {i} holds a NaN or an infinity; a prediction needs every value")
    where = [f"example {i}" for i in range(len(x))]
    labels = None
    if y is not None:
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        if y.shape != (len(x),):
            raise DataError(f"{path} ({y_key}): labels must be one per example; got shape {y.shape} for {len(x)} examples")
        labels = _labels(record, y, f"{path} ({y_key})", lambda i: where[i])
    return RawInputs(x, labels, where, [])


def _image_files(paths: Sequence[Path]) -> tuple[list[Path], Optional[list[str]]]:
    """The image files of `paths` in order, and their class folders' names when a single folder
    of class folders is given (else None)."""
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folders:
            files, classes = [], []
            for folder in folders:
                found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                files += found
                classes += [folder.name] * len(found)
            return files, classes
        return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), None
    files = []
    for p in paths:
        files += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
    return files, None


def read_images(record: dict[str, Any], paths: Sequence[Path]) -> RawInputs:
    """Images as uint8 (N, H, W, C), converted to the run's channels; resized when the run
    resized (data.image_size), else refused at another size with the fix. A folder of class
    folders gives labels."""
    image = record.get("image")
    if image is None or record["pixels"] is None or record["pixels"]["divisor"] != 255.0:
        raise DataError(f"{paths[0]}: the run trained on {record['dataset']} data, not images")
    files, classes = _image_files(paths)
    if not files:
        raise DataError(f"{paths[0]}: holds no .png, .jpg or .jpeg image")
    from PIL import Image  # Pillow: a dependency of matplotlib

    from dnnlab.data.folder import _image_error, _read_image_files

    h, w = image["height"], image["width"]
    if not image["resize"]:
        for f in files:
            try:
                with Image.open(f) as im:
                    size = im.size
            except (OSError, ValueError, SyntaxError) as exc:
                raise _image_error(f, exc) from None
            if size != (w, h):
                raise DataError(
                    f"{f}: {size[0]}x{size[1]} pixels (width x height), but the run trained on {w}x{h} images; resize it "
                    f"to {w}x{h} (or train with data.image_size: [{h}, {w}], which resizes every image)"
                )
    cfg = DataConfig(dataset="folder", channels=image["channels"], image_size=[h, w] if image["resize"] else None)
    x, _ = _read_image_files(files, cfg, (h, w))
    where = [str(f) for f in files]
    y = None
    if classes is not None:
        y = _labels(record, np.asarray(classes), str(paths[0]), lambda i: where[i], strip=False)
    return RawInputs(x, y, where, [])


def table_inputs(record: dict[str, Any], x: Any) -> np.ndarray:
    """The raw features of `x` in the training column order: an array (N, D) or (D,) in that
    order, or a pandas DataFrame holding the feature columns by name (others ignored)."""
    if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # a pandas DataFrame
        meta = record.get("csv")
        if meta is None or not meta.get("header"):
            raise DataError("a DataFrame's columns are matched by name: the run's table had no header; pass an array")
        wanted = [f["name"] for f in meta["features"]]
        missing = [c for c in wanted if c not in list(x.columns)]
        if missing:
            raise DataError(f"the DataFrame has no column {missing[0]!r}; the run trained on the columns {', '.join(wanted)}")
        try:
            return x[wanted].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"the DataFrame's feature columns must be numbers ({exc})") from None
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"inputs must be numbers; got dtype {arr.dtype}")
    dim = input_dim(record)
    if arr.ndim == 1 and arr.size == dim:
        arr = arr[None, :]
    if arr.ndim < 2 or int(np.prod(arr.shape[1:])) != dim:
        raise DataError(f"inputs of shape {arr.shape}; the run takes {dim} values per example (shape (N, {dim}))")
    return arr
