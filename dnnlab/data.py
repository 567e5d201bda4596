"""Datasets: discovery, loading (IDX, Keras npz, the embedded digits), download and splits.

Images come out as float32, flattened to (N, D): pixels scaled to [0, 1], and under
`data.normalize: standard` then shifted and scaled to zero mean and unit variance per channel
(no longer in [0, 1]); labels as int32, each below the dataset's class count. The validation
split is carved from the training set with the run's seed; the test set is never used for
decisions.

The digits ship in the package as `_digits.npz` (1,797 8x8 images of pixel values 0..16 as
uint8, and their labels), so no run needs scikit-learn: the UCI ML hand-written digits
(optdigits) test set of Alpaydin and Kaynak, licensed CC BY 4.0
(https://archive.ics.uci.edu/dataset/80), as scikit-learn's `sklearn.datasets.load_digits()`
ships it (written once with `np.savez_compressed(images=bunch.images.astype(np.uint8),
labels=bunch.target.astype(np.uint8))`; tests/test_data.py holds the copy equal to it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from dnnlab.config import NUM_CLASSES, DataConfig

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DIGITS_FILE = Path(__file__).with_name("_digits.npz")  # see the module docstring
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20  # fixed: the digits test set is the same for every run


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

    @property
    def input_dim(self) -> int:
        return int(self.train.x.shape[1])

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
        with np.load(path, allow_pickle=False) as f:
            arrays = tuple(np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
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


# `data.dataset` -> its loader; the names are config.Dataset's (tests/test_registries.py holds
# them equal). Every file-based dataset also has a download in REMOTES.
LOADERS: dict[str, Callable[[DataConfig], Loaded]] = {
    "digits": _load_digits,
    "mnist": _load_files,
    "fashion-mnist": _load_files,
    "cifar10": _load_files,
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
    num_classes = NUM_CLASSES[cfg.dataset]  # the loaders refuse labels outside it
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
    if cfg.normalize == "standard":
        train, val, test = standardize(train, val, test, shape[-1] if shape else 1)
    return Dataset(cfg.dataset, train, val, test, num_classes, source, shape)


def standardize(train: Split, val: Optional[Split], test: Split, channels: int) -> tuple[Split, Optional[Split], Split]:
    """Per-channel zero mean and unit variance, with the training split's statistics."""
    x = train.x.reshape(len(train), -1, channels)
    mean, std = x.mean(axis=(0, 1)), x.std(axis=(0, 1)) + 1e-7

    def apply(split: Optional[Split]) -> Optional[Split]:
        if split is None:
            return None
        z = (split.x.reshape(len(split), -1, channels) - mean) / std
        return Split(z.reshape(len(split), -1).astype(np.float32), split.y)

    return apply(train), apply(val), apply(test)  # type: ignore[return-value]


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
