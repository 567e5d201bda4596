"""Downloading the published datasets into the cache, each file checked against its sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from dnnlab.data.dataset import DataError


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


def cache_dir(name: str) -> Path:
    return Path("~/.cache/dnnlab").expanduser() / name


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
        _fetch(url, filename, dest, target, expected, progress, timeout)
        if remote.extract:
            _extract(target, dest)
    return dest


def _fetch(
    url: str, filename: str, dest: Path, target: Path, expected: str, progress: Optional[ProgressFn], timeout: float
) -> None:
    """One file streamed into a temp file in `dest` and renamed to `target` once its sha256 is
    `expected`; nothing is kept otherwise."""
    from dnnlab.interrupt import stop_point

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
