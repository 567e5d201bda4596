"""The built-in datasets: the embedded digits and the published IDX and CIFAR-10 files, where
they are looked for, and what a run records of the data it trained on.

The digits ship in the package as `_digits.npz` (1,797 8x8 images of pixel values 0..16 as
uint8, and their labels), so no run needs scikit-learn: the UCI ML hand-written digits
(optdigits) test set of Alpaydin and Kaynak, licensed CC BY 4.0
(https://archive.ics.uci.edu/dataset/80), as scikit-learn's `sklearn.datasets.load_digits()`
ships it (written once with `np.savez_compressed(images=bunch.images.astype(np.uint8),
labels=bunch.target.astype(np.uint8))`; tests/test_data.py holds the copy equal to it).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from dnnlab.config import NUM_CLASSES, DataConfig
from dnnlab.data.dataset import (
    DataError,
    Dataset,
    Loaded,
    Split,
    _image_shape,
    stratified_indices,
)
from dnnlab.data.files import _npz_archive
from dnnlab.data.remote import CIFAR_DIR, CIFAR_TEST, CIFAR_TRAIN, cache_dir

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DIGITS_FILE = Path(__file__).with_name("_digits.npz")  # see the module docstring
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20  # fixed: the digits test set is the same for every run


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


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    return Split(x, labels.astype(np.int32))


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
    """What loading left out: the rows data.missing: drop dropped, and classes the splits leave
    with no training example (which a run cannot learn)."""
    dropped = [d.words() for d in ds.dropped]
    if ds.regression:
        return dropped
    counts = np.bincount(ds.train.y, minlength=ds.num_classes)
    missing = int((counts == 0).sum())
    if not missing:
        return dropped
    by = f"data.validation_split {cfg.validation_split:g}" + (f" and data.train_size {cfg.train_size:,}" if cfg.train_size is not None else "")
    return [
        *dropped,
        f"the training split holds {len(ds.train):,} examples ({by}): {missing} of the {ds.num_classes} classes have none, "
        "so the model cannot learn them; lower data.validation_split (or raise data.train_size)"
    ]
