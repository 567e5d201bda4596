"""Datasets: discovery, loading (IDX, Keras npz, the embedded digits, and the user's own CSV
tables, npz arrays and image folders), download and splits.

Inputs come out as float32, flattened to (N, D): pixels scaled to [0, 1] (uint8 / 255; any other
numbers min-max scaled per channel with the training split's range), and under
`data.normalize: standard` then shifted and scaled to zero mean and unit variance per channel
(no longer in [0, 1]; a table's every feature is its own channel); labels as int32, each below
the dataset's class count. The validation split is carved from the training set with the run's
seed; the test set is never used for decisions.

The digits ship in the package as `_digits.npz` (1,797 8x8 images of pixel values 0..16 as
uint8, and their labels), so no run needs scikit-learn: the UCI ML hand-written digits
(optdigits) test set of Alpaydin and Kaynak, licensed CC BY 4.0
(https://archive.ics.uci.edu/dataset/80), as scikit-learn's `sklearn.datasets.load_digits()`
ships it (written once with `np.savez_compressed(images=bunch.images.astype(np.uint8),
labels=bunch.target.astype(np.uint8))`; tests/test_data.py holds the copy equal to it).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import gzip
import hashlib
import os
import pickle
import re
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from dnnlab.config import DEFAULT_TEST_SPLIT, FILE_DATASETS, NUM_CLASSES, DataConfig

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DIGITS_FILE = Path(__file__).with_name("_digits.npz")  # see the module docstring
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20  # fixed: the digits test set is the same for every run
FILE_SPLIT_SEED = 20  # fixed too: the test split of csv, npz and folder data without a test set
CSV_DELIMITERS = (",", ";", "\t", "|")  # detected in this order of preference (data.delimiter sets one)
# cells that count as missing (compared stripped and lowercased); NaN in a float array too
MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none", "?")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # inputs are float32: a larger value becomes inf


@dataclass(frozen=True)
class Remote:
    """Where `dnnlab data download` gets a dataset: base URL and file -> sha256."""

    base_url: str
    files: dict[str, str]
    extract: bool = False  # a tar.gz archive, unpacked after its checksum matched


# Official mirrors used by Keras, with the SHA-256 that Keras checks too.
REMOTES: dict[str, Remote] = {
    "fashion-mnist": Remote(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    ),
    "mnist": Remote(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        {"mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"},
    ),
    "cifar10": Remote(
        "https://www.cs.toronto.edu/~kriz/",
        {"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
        extract=True,
    ),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


class DataError(Exception):
    """A dataset that cannot be found or read; `str()` is the message for the user."""


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, D) float32: [0, 1], or standardized (data.normalize)
    y: np.ndarray  # (N,) int32
    # set on the training split a loader returns (file data only): the class names (label i is
    # classes[i]), and whether x holds raw numbers that `load` still scales to [0, 1]
    classes: tuple[str, ...] = ()
    raw: bool = False

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


# ---------------------------------------------------------------- discovery


def candidate_locations(name: str, path: Optional[str] = None) -> list[Path]:
    """Where a file-based dataset is looked for, in order; only `path` when one is given (data.path)."""
    if path:
        return [Path(path).expanduser()]
    out: list[Path] = []
    env = os.environ.get("DNNLAB_DATA")
    if env:
        out.append(Path(env).expanduser() / name)
    out.append(cache_dir(name))
    out.append(Path("/usr/share/datasets") / name)
    keras = Path("~/.keras/datasets").expanduser()
    if name == "cifar10":
        out.append(keras / CIFAR_DIR)
    else:
        out.append(keras / f"{name}.npz")
        out.append(keras / name)
    return out


def cache_dir(name: str) -> Path:
    return Path("~/.cache/dnnlab").expanduser() / name


def _idx_file(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    # some mirrors use dots: train-images.idx3-ubyte
    dotted = stem.replace("-idx", ".idx")
    for candidate in (folder / f"{dotted}.gz", folder / dotted):
        if candidate.is_file():
            return candidate
    return None


def _resolve(location: Path, name: str) -> Optional[Path]:
    """The npz file, IDX folder or CIFAR batch folder at `location` that holds `name`, if any."""
    if name == "cifar10":
        for folder in (location, location / CIFAR_DIR):
            if all((folder / f).is_file() for f in CIFAR_TRAIN + (CIFAR_TEST,)):
                return folder
        return None
    if location.is_file() and location.suffix == ".npz":
        return location
    if location.is_dir():
        if all(_idx_file(location, stem) for stem in IDX_FILES.values()):
            return location
        npz = location / f"{name}.npz"
        if npz.is_file():
            return npz
    return None


def find(name: str, path: Optional[str] = None) -> Optional[Path]:
    """The first location that holds dataset `name`, or None; with `path`, only what `path` holds."""
    for location in candidate_locations(name, path):
        found = _resolve(location, name)
        if found is not None:
            return found
    return None


def not_found_message(name: str, path: Optional[str]) -> str:
    if path:
        return _path_message(name, path)
    looked = "\n".join(f"  - {p}" for p in candidate_locations(name, path))
    hint = f"dnnlab data download {name}"
    if name == "fashion-mnist":
        hint += "   (or, on Debian/Ubuntu: apt-get install dataset-fashion-mnist)"
    what = f"its python batches ({CIFAR_DIR}/)" if name == "cifar10" else f"its IDX files (or {name}.npz)"
    return (
        f"dataset {name!r} not found. Looked for {what} in:\n{looked}\n"
        f"Get it with: {hint}\nor point data.path (or $DNNLAB_DATA) at a folder that holds it."
    )


def _path_message(name: str, path: str) -> str:
    """Why data.path `path` does not hold dataset `name`: what is missing there."""
    location = Path(path).expanduser()
    if name == "cifar10":
        wanted = f"the CIFAR-10 python batches ({', '.join(CIFAR_TRAIN)}, {CIFAR_TEST}), in it or in its {CIFAR_DIR}/"
    else:
        wanted = f"the IDX files ({', '.join(f'{stem}[.gz]' for stem in IDX_FILES.values())}) or {name}.npz"
    if not location.exists():
        problem = "does not exist"
    elif not location.is_dir():
        problem = "is a file, not a folder" + ("" if name == "cifar10" else " or a .npz file")
    else:
        if name == "cifar10":
            folder = location / CIFAR_DIR if (location / CIFAR_DIR).is_dir() else location
            missing = [f for f in CIFAR_TRAIN + (CIFAR_TEST,) if not (folder / f).is_file()]
        else:
            missing = [f"{stem}[.gz]" for stem in IDX_FILES.values() if _idx_file(location, stem) is None]
            missing.append(f"{name}.npz")
        problem = f"holds no {name}: missing {', '.join(missing)}"
    return (
        f"data.path: {location} {problem}. It must hold {wanted}; fix data.path, "
        f"or remove it to search the usual places (dnnlab data list; get it with: dnnlab data download {name})"
    )


# ---------------------------------------------------------------- readers


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a uint8 array; DataError if corrupt."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated file ({exc}); delete it and fetch it again") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes); delete it and fetch it again")
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; delete it and fetch it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if 0 in dims:
        raise DataError(f"{path}: holds 0 examples (its header says {'x'.join(map(str, dims))}); fetch the dataset again")
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file: header says {'x'.join(map(str, dims))} "
            f"({expected} bytes of data), file has {len(raw) - header}; delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        with _npz_archive(path) as f:
            arrays = tuple(np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    except DataError:
        raise
    except KeyError as exc:
        raise DataError(f"{path}: missing array {exc}; expected x_train, y_train, x_test, y_test") from None
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError
        raise DataError(f"{path}: corrupt or truncated npz file ({exc}); delete it and fetch it again") from None
    return arrays  # type: ignore[return-value]


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches and nothing else: only NumPy's array reconstruction."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images (N, 32, 32, 3) uint8 and labels (N,)."""
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
        raw, labels = batch[b"data"], batch[b"labels"]
        data_arr = np.asarray(raw, dtype=np.uint8)
        labels_arr = np.asarray(labels, dtype=np.int64)
        if data_arr.ndim != 2 or data_arr.shape[1] != 3072 or data_arr.shape[0] != labels_arr.shape[0]:
            raise ValueError(f"data of shape {data_arr.shape} with {labels_arr.shape[0]} labels; expected (N, 3072)")
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise DataError(f"{path}: corrupt or truncated CIFAR-10 batch ({type(exc).__name__}: {exc}); delete it and fetch it again") from None
    return data_arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels_arr


def _read_images(location: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) at `location`, each checked and
    named by its file: uint8 images, as many labels, each a class number below `num_classes`."""
    parts: list[tuple[str, np.ndarray, np.ndarray, str, str]] = []  # (part, images, labels, their files)
    if (location / CIFAR_TEST).is_file():
        for part, files in (("train", CIFAR_TRAIN), ("test", (CIFAR_TEST,))):
            for f in files:
                images, labels = read_cifar_batch(location / f)
                parts.append((part, images, labels, str(location / f), str(location / f)))
    elif location.suffix == ".npz":
        xtr, ytr, xte, yte = _read_npz(location)
        parts = [("train", xtr, ytr, f"{location} (x_train)", f"{location} (y_train)"),
                 ("test", xte, yte, f"{location} (x_test)", f"{location} (y_test)")]
    else:
        for part, prefix in (("train", "train"), ("test", "test")):
            files = [_idx_file(location, IDX_FILES[f"{prefix}_{kind}"]) for kind in ("images", "labels")]
            images, labels = (read_idx(f) for f in files)  # type: ignore[arg-type]
            parts.append((part, images, labels, str(files[0]), str(files[1])))
    for part, images, labels, images_file, labels_file in parts:
        for arr, where in ((images, images_file), (labels, labels_file)):
            if arr.ndim == 0 or arr.shape[0] == 0:
                raise DataError(f"{where}: holds 0 {part} examples; fetch the dataset again")
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{location}: {part} images ({images.shape[0]}, {images_file}) and labels ({labels.shape[0]}, "
                f"{labels_file}) differ in count"
            )
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(f"{images_file}: {part} images must be uint8 of shape (N, H, W[, C]); got {images.dtype} {images.shape}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{labels_file}: {part} labels must be a 1-D array of class numbers 0, 1, ...; got {labels.dtype} {labels.shape}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise DataError(
                f"{labels_file}: {part} label {bad} is out of range: the dataset has {num_classes} classes "
                f"(labels 0..{num_classes - 1}); the file is corrupt or belongs to another dataset"
            )
    train = [p for p in parts if p[0] == "train"]
    test = [p for p in parts if p[0] == "test"]
    xtr = np.concatenate([p[1] for p in train]) if len(train) > 1 else train[0][1]
    ytr = np.concatenate([p[2] for p in train]) if len(train) > 1 else train[0][2]
    return xtr, ytr, test[0][1], test[0][2]


def _image_shape(images: np.ndarray) -> tuple[int, ...]:
    """(H, W, C) of an image array (N, H, W) or (N, H, W, C)."""
    return tuple(images.shape[1:3]) + ((images.shape[3],) if images.ndim == 4 else (1,))


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    return Split(x, labels.astype(np.int32))


Loaded = tuple[Split, Split, str, tuple[int, ...]]  # (train, test, source, image shape (H, W, C) or ())


def _load_digits(cfg: DataConfig) -> Loaded:
    """The digits from the package's `_digits.npz`: pixels 0..16 scaled to [0, 1], and the fixed
    stratified test split."""
    try:
        with np.load(DIGITS_FILE, allow_pickle=False) as f:
            images, labels = np.asarray(f["images"]), np.asarray(f["labels"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{DIGITS_FILE}: the embedded digits cannot be read ({exc}); reinstall dnnlab") from None
    # float64 / 16, then float32: bit for bit what scikit-learn's float64 `data` gave
    x = (images.reshape(len(images), -1).astype(np.float64) / 16.0).astype(np.float32)
    y = labels.astype(np.int32)
    test_idx = stratified_indices(y, DIGITS_TEST_FRACTION, np.random.default_rng(DIGITS_SPLIT_SEED))
    keep = np.ones(len(y), bool)
    keep[test_idx] = False
    return Split(x[keep], y[keep]), Split(x[test_idx], y[test_idx]), "scikit-learn (embedded)", (8, 8, 1)


def _load_files(cfg: DataConfig) -> Loaded:
    """A file-based dataset (IDX, npz or CIFAR batches) found by `find`."""
    location = find(cfg.dataset, cfg.path)  # a data.path is used or refused, never searched past
    if location is None:
        raise DataError(not_found_message(cfg.dataset, cfg.path))
    xtr, ytr, xte, yte = _read_images(location, NUM_CLASSES[cfg.dataset])
    shape = _image_shape(xtr) if xtr.ndim >= 3 else ()
    return _to_split(xtr, ytr), _to_split(xte, yte), str(location), shape


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
    test_idx = stratified_indices(y, fraction, np.random.default_rng(FILE_SPLIT_SEED))
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
    return f"test: a fixed stratified {fraction * 100:g}% of it"


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
    delimiter = cfg.delimiter or (like.delimiter if like else _detect_delimiter([lines[i] for i in nonblank[:20]]))
    if like is not None and not cfg.delimiter and len(_csv_fields(lines[nonblank[0]], delimiter)) < 2:
        # a test file with a separator of its own: found as the training file's was (data.delimiter
        # would set it for both files)
        delimiter = _detect_delimiter([lines[i] for i in nonblank[:20]])
    first = _csv_fields(lines[nonblank[0]], delimiter)
    sample = [_csv_fields(lines[i], delimiter) for i in nonblank[1:51]]
    named = [r for r in (cfg.label, *(cfg.features or ())) if isinstance(r, str)]
    if cfg.header is not None:
        header = cfg.header
    elif like is not None and like.names is not None and [c.strip() for c in first] == like.names:
        header = True
    else:
        header = bool(named and set(named) & {c.strip() for c in first}) or _has_header(first, sample)
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
    else:
        label_col = _column_index(cfg.label if cfg.label is not None else -1, names, n_cols, path, "data.label")
        if cfg.features is None:
            feature_cols = [j for j in range(n_cols) if j != label_col]
        else:
            feature_cols = [_column_index(r, names, n_cols, path, "data.features") for r in cfg.features]
            if label_col in feature_cols:
                raise DataError(f"data.features: holds the label column {label_col} of {path}; leave it out")
            if len(set(feature_cols)) != len(feature_cols):
                raise DataError(f"data.features: names a column of {path} twice: {cfg.features}")
    data_lines = [lines[i] for i in rows]
    line_of = np.asarray(rows) + 1
    _check_field_counts(path, data_lines, line_of, delimiter, n_cols, nonblank[0] + 1)
    labels = np.loadtxt(data_lines, delimiter=delimiter, comments=None, quotechar='"', usecols=[label_col], dtype=str, ndmin=1)
    table = _Table(path, np.zeros((0, 0)), np.char.strip(labels), line_of, names, label_col, feature_cols, delimiter)
    return dataclasses.replace(table, x=_features(data_lines, table))


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
    train = _clean_table(_read_csv(path, cfg), cfg)
    ytr, names, classes = _encode_labels(train.labels, str(path), lambda i: f"line {train.line[i]}")
    if cfg.test_path:
        test_path = _given_path(cfg.test_path, "data.test_path", "the test CSV file")
        test = _clean_table(_read_csv(test_path, cfg, like=train), cfg)
        yte = _encode_test_labels(test.labels, classes, names, str(test_path), lambda i: f"line {test.line[i]}")
        (xtr, ytr), (xte, yte) = (train.x, ytr), (test.x, yte)
        note = f"test: {test_path}"
    else:
        (xtr, ytr), (xte, yte) = _split_off(train.x, ytr, _hold_out(ytr, cfg, str(path)))
        note = _test_note(cfg)
    label = train.column(train.label_col).removeprefix("column ")
    source = f"{path} (label: column {label}, {len(train.feature_cols)} features; {note})"
    return (Split(xtr.astype(np.float32), ytr, names, raw=True), Split(xte.astype(np.float32), yte), source, ())


# ------------------------------------------ npz


def _npz_archive(path: Path) -> Any:
    """np.load of an .npz archive; DataError for a single array (an .npy file under another name)."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array (an .npy file), not an npz archive; save the arrays with np.savez(x=..., y=...)")
    return loaded


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


def _npz_pair(x: np.ndarray, y: np.ndarray, where_x: str, where_y: str, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """A checked (inputs, labels) pair, examples with a NaN input or label dropped under data.missing: drop."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{where_x}: holds no examples")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
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
    return x, y


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
    x, y = _npz_pair(arrays[cfg.x_key], arrays[cfg.y_key], named(cfg.x_key), named(cfg.y_key), cfg)
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
    if x.ndim == 1:
        x = x[:, None]
    ytr, names, classes = _encode_labels(y, named(cfg.y_key), lambda i: f"example {i}")
    test_where = None
    if held:
        xt, yt = _npz_pair(arrays[cfg.x_test_key], arrays[cfg.y_test_key], named(cfg.x_test_key), named(cfg.y_test_key), cfg)
        test_where, note = (named(cfg.x_test_key), named(cfg.y_test_key)), f"test: its {cfg.x_test_key}, {cfg.y_test_key}"
    elif cfg.test_path:
        test_path = _given_path(cfg.test_path, "data.test_path", "an .npz file of arrays x and y")
        test_arrays = _npz_arrays(test_path, [cfg.x_key, cfg.y_key], [cfg.x_key, cfg.y_key])
        test_where = (f"{test_path} ({cfg.x_key})", f"{test_path} ({cfg.y_key})")
        xt, yt = _npz_pair(test_arrays[cfg.x_key], test_arrays[cfg.y_key], *test_where, cfg)
        note = f"test: {test_path}"
    if test_where is not None:
        if xt.ndim == 1:
            xt = xt[:, None]
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{test_where[0]}: test inputs of shape {xt.shape[1:]} per example; the training inputs are {x.shape[1:]}"
            )
        yte = _encode_test_labels(yt, classes, names, test_where[1], lambda i: f"example {i}")
        xtr, xte = x, xt
    else:
        (xtr, ytr), (xte, yte) = _split_off(x, ytr, _hold_out(ytr, cfg, named(cfg.y_key)))
        note = _test_note(cfg)
    shape = _image_shape(x) if x.ndim in (3, 4) else ()
    (ftr, raw), (fte, _) = _npz_inputs(xtr), _npz_inputs(xte)
    return Split(ftr, ytr, names, raw), Split(fte, yte), f"{path} ({note})", shape


# ------------------------------------------ folder


def _class_folders(root: Path, where: str) -> dict[str, list[Path]]:
    """class name -> its image files (sorted; searched recursively, hidden files and folders skipped)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        raise DataError(
            f"{where}: {root} holds no class folders{f' ({loose} loose images)' if loose else ''}; put each class's "
            f"images in a folder of its own: {root}/<class>/*.png (or .jpg, .jpeg)"
        )
    out: dict[str, list[Path]] = {}
    for folder in folders:
        files = sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise DataError(f"{folder}: the class folder holds no .png, .jpg or .jpeg image; add images or remove it")
        out[folder.name] = files
    return out


def _image_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read the image ({type(exc).__name__}: {exc}); replace or delete it")


def _read_image_files(files: list[Path], cfg: DataConfig, size: Optional[tuple[int, int]]) -> tuple[np.ndarray, int]:
    """The images as uint8 (N, H, W, C) and C: the headers first (size and colour checks, naming the
    first odd file), then every file decoded in full, so that a truncated one is named too."""
    from PIL import Image  # Pillow: a dependency of matplotlib

    gray = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
    from dnnlab.interrupt import stop_point  # a stop signal takes effect between files

    modes, sizes = [], []
    for f in files:
        stop_point()
        try:
            with Image.open(f) as im:
                modes.append(im.mode)
                sizes.append(im.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise _image_error(f, exc) from None
    channels = cfg.channels or (1 if all(m in gray for m in modes) else 3)
    if size is None and cfg.image_size is None:
        w, h = sizes[0]
        for f, s in zip(files, sizes):
            if s != (w, h):
                raise DataError(
                    f"{f}: {s[0]}x{s[1]} pixels (width x height), but {files[0]} is {w}x{h}; every image must have the "
                    "same size: set data.image_size: [H, W] to resize them all"
                )
        size = (h, w)
    h, w = size if size is not None else tuple(cfg.image_size)  # type: ignore[misc]
    out = np.empty((len(files), h, w, channels), np.uint8)
    for i, f in enumerate(files):
        stop_point()
        try:
            with Image.open(f) as im:
                im.load()
                if im.mode == "F":
                    raise DataError(f"{f}: a floating-point image (mode F); save it as an 8- or 16-bit image")
                deep = im.mode == "I" or im.mode.startswith("I;16")  # 16-bit grayscale: Pillow's L would clip it
                if not deep:
                    im = im.convert("L" if channels == 1 else "RGB")
                if im.size != (w, h):
                    if cfg.image_size is None:  # a test image of another size than the training images
                        raise DataError(
                            f"{f}: {im.size[0]}x{im.size[1]} pixels (width x height), but the training images are "
                            f"{w}x{h}; set data.image_size: [H, W] to resize them all"
                        )
                    im = im.resize((w, h))
                pixels = np.asarray(im)
                if deep:  # 0..65535 -> 0..255
                    pixels = np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8)[..., None]
                    pixels = np.repeat(pixels, channels, axis=-1)
                out[i] = pixels.reshape(h, w, channels)
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise _image_error(f, exc) from None
    return out, channels


def _load_folder(cfg: DataConfig) -> Loaded:
    """Images in one folder per class (root/<class>/*.png|jpg|jpeg), and root/train + root/test when
    both exist: read with Pillow, grayscale or RGB (data.channels), resized to data.image_size."""
    root = _given_path(cfg.path, "data.path", "a folder of class folders", folder=True)
    train_root, test_root = root, None
    has = {part: (root / part).is_dir() for part in ("train", "test")}
    if all(has.values()):
        train_root, test_root = root / "train", root / "test"
        if cfg.test_path:
            raise DataError(f"data.test_path: {root} holds its own test/ folder; remove data.test_path")
        if cfg.test_split is not None:
            raise DataError(f"data.test_split: {root} holds its own test/ folder; remove data.test_split")
    elif any(has.values()):
        one, other = ("train", "test") if has["train"] else ("test", "train")
        raise DataError(
            f"{root}: holds a {one}/ folder but no {other}/; the train/test layout needs both (else every folder "
            f"is a class): add {root / other}, or point data.path at {root / one}"
        )
    elif cfg.test_path:
        test_root = _given_path(cfg.test_path, "data.test_path", "a folder of class folders", folder=True)
    where = "data.path"
    train_files = _class_folders(train_root, where)
    class_of = np.asarray([c for c, files in train_files.items() for _ in files])
    files = [f for fs in train_files.values() for f in fs]
    ytr, names, classes = _encode_labels(class_of, str(train_root), lambda i: str(files[i]), strip=False)
    images, channels = _read_image_files(files, cfg, tuple(cfg.image_size) if cfg.image_size else None)  # type: ignore[arg-type]
    h, w = images.shape[1:3]
    if test_root is not None:
        test_files = _class_folders(test_root, "data.test_path" if cfg.test_path else where)
        extra = sorted(set(test_files) - set(train_files))
        if extra:
            raise DataError(
                f"{test_root / extra[0]}: the test class {extra[0]!r} has no training folder in {train_root} "
                f"(classes: {', '.join(names)}); a model cannot predict a class it never saw"
            )
        tfiles = [f for fs in test_files.values() for f in fs]
        tclass = np.asarray([c for c, fs in test_files.items() for _ in fs])
        yte = _encode_test_labels(tclass, classes, names, str(test_root), lambda i: str(tfiles[i]), strip=False)
        test_images, _ = _read_image_files(tfiles, cfg.model_copy(update={"channels": channels}), (h, w))
        xtr_img, xte_img = images, test_images
        note = f"test: {test_root}"
    else:
        (xtr_img, ytr), (xte_img, yte) = _split_off(images, ytr, _hold_out(ytr, cfg, str(train_root)))
        note = _test_note(cfg)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
    source = f"{root} ({h}x{w}x{channels} images; {note})"
    return Split(flat(xtr_img), ytr, names), Split(flat(xte_img), yte), source, (h, w, channels)


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


def load(cfg: DataConfig, seed: int) -> Dataset:
    """Load `cfg.dataset`, carve the seeded validation split and subsample the training set.

    Returns:
        A Dataset; `val` is None when validation_split is 0. Raises DataError.
    """
    loader = LOADERS.get(cfg.dataset)
    if loader is None:
        raise DataError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(LOADERS)}")
    train, test, source, shape = loader(cfg)
    classes, raw = train.classes, train.raw
    # the published class count (the loaders refuse labels outside it), or the classes found in the files
    num_classes = len(classes) if cfg.dataset in FILE_DATASETS else NUM_CLASSES[cfg.dataset]
    rng = np.random.default_rng(seed)
    val = None
    if cfg.validation_split > 0:
        val_idx = stratified_indices(train.y, cfg.validation_split, rng)
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
        sub = stratified_indices(train.y, cfg.train_size, rng)
        train = Split(train.x[sub], train.y[sub])
    if len(train) == 0:
        raise DataError(f"{cfg.dataset}: the training split is empty; lower data.validation_split")
    channels = shape[-1] if shape else train.x.shape[1]  # a table's every feature is its own channel
    if cfg.normalize == "standard":
        train, val, test = standardize(train, val, test, channels)
    elif raw:
        train, val, test = rescale(train, val, test, channels)
    if cfg.normalize == "standard" or raw:
        _check_scaled(cfg, train, val, test, channels)
    return Dataset(cfg.dataset, train, val, test, num_classes, source, shape, classes)


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


def fingerprint(cfg: DataConfig, ds: Dataset) -> dict[str, Any]:
    """What a run records of its data (runs.INPUTS) and what `run --resume` and `fix` hold the
    data to: the digest of the loaded arrays (`Dataset.digest`, whatever the file format; the
    linear reference's cache is keyed by it too), and data.path and data.test_path as absolute
    paths, where the data are found from any folder, with the size and modification time of a
    file (a quick check: the digest decides)."""
    files = []
    for key, value in (("data.path", cfg.path), ("data.test_path", cfg.test_path)):
        if value:
            path = Path(value).expanduser().resolve()
            entry: dict[str, Any] = {"key": key, "path": str(path)}
            if path.is_file():
                stat = path.stat()
                entry.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            files.append(entry)
    return {"digest": ds.digest, "files": files}


def split_warnings(cfg: DataConfig, ds: Dataset) -> list[str]:
    """What the splits leave that a run cannot learn: classes with no training example."""
    counts = np.bincount(ds.train.y, minlength=ds.num_classes)
    missing = int((counts == 0).sum())
    if not missing:
        return []
    by = f"data.validation_split {cfg.validation_split:g}" + (f" and data.train_size {cfg.train_size:,}" if cfg.train_size is not None else "")
    return [
        f"the training split holds {len(ds.train):,} examples ({by}): {missing} of the {ds.num_classes} classes have none, "
        "so the model cannot learn them; lower data.validation_split (or raise data.train_size)"
    ]


def _per_channel(train: Split, val: Optional[Split], test: Split, channels: int, stats) -> tuple[Split, Optional[Split], Split]:
    """(x - shift) / scale per channel, with `stats(x_NxPxC) -> (shift, scale)` of the training split."""
    shift, scale = stats(train.x.reshape(len(train), -1, channels))

    def apply(split: Optional[Split]) -> Optional[Split]:
        if split is None:
            return None
        z = (split.x.reshape(len(split), -1, channels) - shift) / scale
        return Split(z.reshape(len(split), -1).astype(np.float32), split.y)

    return apply(train), apply(val), apply(test)  # type: ignore[return-value]


def standardize(train: Split, val: Optional[Split], test: Split, channels: int) -> tuple[Split, Optional[Split], Split]:
    """Per-channel zero mean and unit variance, with the training split's statistics."""
    return _per_channel(train, val, test, channels, lambda x: (x.mean(axis=(0, 1)), x.std(axis=(0, 1)) + 1e-7))


def rescale(train: Split, val: Optional[Split], test: Split, channels: int) -> tuple[Split, Optional[Split], Split]:
    """Per-channel min-max scaling to [0, 1] with the training split's range (a constant channel
    becomes 0; validation and test values outside the training range fall outside [0, 1])."""

    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low, span = x.min(axis=(0, 1)), x.max(axis=(0, 1)) - x.min(axis=(0, 1))
        return low, np.where(span > 0, span, 1.0)

    return _per_channel(train, val, test, channels, stats)


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ProgressFn = Callable[[str, int, Optional[int]], None]  # (file, bytes so far, total or None)


def download(
    name: str,
    dest: Optional[Path] = None,
    *,
    remote: Optional[Remote] = None,
    progress: Optional[ProgressFn] = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch dataset `name` into `dest` (default the dnnlab cache), checking every sha256.

    Each file is written to a temp file in the destination folder and renamed into place only
    after its checksum matches, so an interrupted or corrupt download never leaves a file that
    looks complete. Files already present with the right checksum are kept.

    Returns:
        The folder that now holds the dataset. Raises DataError.
    """
    from dnnlab.interrupt import stop_point

    remote = remote or REMOTES.get(name)
    if remote is None:
        known = ", ".join(REMOTES)
        raise DataError(f"no download for {name!r}; downloadable datasets: {known}")
    dest = Path(dest) if dest else cache_dir(name)
    dest.mkdir(parents=True, exist_ok=True)
    for filename, expected in remote.files.items():
        target = dest / filename
        if target.is_file() and sha256_of(target) == expected:
            continue
        url = remote.base_url.rstrip("/") + "/" + filename
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                total_bytes = int(total) if total and total.isdigit() else None
                done = 0
                for block in iter(lambda: resp.read(1 << 16), b""):
                    stop_point()  # a stop signal ends the download here; the partial file is removed
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(filename, done, total_bytes)
            got = digest.hexdigest()
            if got != expected:
                raise DataError(
                    f"{url}: checksum mismatch (sha256 {got}, expected {expected}); "
                    "the file was not kept. Try again, or fetch it by hand into "
                    f"{dest} and check it with sha256sum."
                )
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DataError(f"{url}: download failed ({exc}); nothing was kept in {dest}") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        if remote.extract:
            _extract(target, dest)
    return dest


def _extract(archive: Path, dest: Path) -> None:
    """Unpack a checked tar.gz into `dest` through a temp folder (safe member paths only)."""
    work = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                target = (work / member.name).resolve()
                if not str(target).startswith(str(work.resolve())) or member.issym() or member.islnk():
                    raise DataError(f"{archive}: unsafe path in the archive: {member.name}")
            tar.extractall(work)
        for item in work.iterdir():
            final = dest / item.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(item, final)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot unpack ({exc}); delete it and download again") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
