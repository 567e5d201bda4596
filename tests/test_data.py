"""Datasets: splits, the IDX and npz readers, discovery, corrupt files, and download."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import sys
import threading
from functools import partial
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from dnnlab import data
from dnnlab.config import DATASET_SHAPES, NUM_CLASSES, DataConfig
from dnnlab.config import Dataset as DatasetName
from dnnlab.data import DataError, Remote


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_dataset(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0) -> None:
    """A tiny MNIST-format dataset: 10 classes, 4x4 images whose brightness encodes the label."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = (labels[:, None, None] * 25 + rng.integers(0, 5, (n, 4, 4))).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{part}-{kind}-ubyte"
            payload = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)


def test_digits_splits_are_stratified_fixed_and_seeded(digits):
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == 359 or len(digits.test) == 360
    assert digits.input_dim == 64 and digits.num_classes == 10
    assert 0.0 <= digits.train.x.min() and digits.train.x.max() <= 1.0
    # stratified: every class keeps its share within one example
    counts = np.bincount(digits.test.y, minlength=10)
    assert counts.max() - counts.min() <= 2
    other = data.load(DataConfig(), seed=1)
    np.testing.assert_array_equal(other.test.y, digits.test.y)  # the test split does not move
    np.testing.assert_array_equal(other.test.x, digits.test.x)
    assert not np.array_equal(other.val.x, digits.val.x)  # the validation split follows the seed
    again = data.load(DataConfig(), seed=0)
    np.testing.assert_array_equal(again.val.x, digits.val.x)


def test_train_size_subsamples_after_the_validation_split():
    ds = data.load(DataConfig(train_size=200, validation_split=0.2), seed=3)
    assert len(ds.train) == 200
    assert len(ds.val) == round(0.2 * 1438)
    assert np.bincount(ds.train.y, minlength=10).min() >= 18


def test_no_validation_split():
    ds = data.load(DataConfig(validation_split=0.0), seed=0)
    assert ds.val is None


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_reads_through_data_path(tmp_path, isolated_home, gz):
    write_idx_dataset(tmp_path / "m", gz=gz)
    ds = data.load(DataConfig(dataset="mnist", path=str(tmp_path / "m"), validation_split=0.1), seed=0)
    assert len(ds.train) == 54 and len(ds.val) == 6 and len(ds.test) == 20
    assert ds.input_dim == 16
    # brightness encodes the label, so the scaling to [0, 1] is checked too
    np.testing.assert_allclose(ds.test.x.mean(1), (ds.test.y * 25 + 2) / 255.0, atol=3 / 255)


def test_search_order_path_then_env_then_cache_then_keras(tmp_path, isolated_home, monkeypatch):
    env_root = tmp_path / "env"
    write_idx_dataset(env_root / "fashion-mnist")
    monkeypatch.setenv("DNNLAB_DATA", str(env_root))
    cache = isolated_home / ".cache/dnnlab/fashion-mnist"
    write_idx_dataset(cache)
    assert data.find("fashion-mnist") == env_root / "fashion-mnist"
    assert data.find("fashion-mnist", str(cache)) == cache
    monkeypatch.delenv("DNNLAB_DATA")
    assert data.find("fashion-mnist") == cache
    locations = data.candidate_locations("mnist")
    assert locations[0] == isolated_home / ".cache/dnnlab/mnist"
    assert locations[-2] == isolated_home / ".keras/datasets/mnist.npz"
    # a data.path is the only place looked: used or refused, never searched past
    assert data.candidate_locations("mnist", "/x") == [Path("/x")]


@pytest.mark.parametrize("make, expected", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("not a dataset"), "is a file, not a folder or a .npz file"),
    (lambda p: p.mkdir(), "holds no fashion-mnist: missing train-images-idx3-ubyte[.gz]"),
])
def test_a_data_path_without_the_dataset_is_refused_not_searched_past(tmp_path, isolated_home, monkeypatch, make, expected):
    # a complete copy in the usual places must not stand in for the folder the user named
    env_root = tmp_path / "env"
    write_idx_dataset(env_root / "fashion-mnist")
    monkeypatch.setenv("DNNLAB_DATA", str(env_root))
    named = tmp_path / "named"
    make(named)
    assert data.find("fashion-mnist", str(named)) is None
    with pytest.raises(DataError) as info:
        data.load(DataConfig(dataset="fashion-mnist", path=str(named)), seed=0)
    message = str(info.value)
    assert message.startswith(f"data.path: {named} {expected}") and "fashion-mnist.npz" in message
    assert "train-images-idx3-ubyte[.gz]" in message  # what the folder would hold, whatever the path is


def test_a_data_path_missing_one_file_names_it(tmp_path, isolated_home):
    folder = tmp_path / "m"
    write_idx_dataset(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"holds no mnist: missing t10k-labels-idx1-ubyte\[\.gz\], mnist\.npz"):
        data.load(DataConfig(dataset="mnist", path=str(folder)), seed=0)
    cifar = tmp_path / "c"
    cifar.mkdir()
    with pytest.raises(DataError, match="holds no cifar10: missing data_batch_1, .*test_batch"):
        data.load(DataConfig(dataset="cifar10", path=str(cifar)), seed=0)


def test_every_dataset_has_its_class_count_and_image_shape():
    assert set(NUM_CLASSES) == set(get_args(DatasetName)) == set(DATASET_SHAPES)


def test_labels_beyond_the_class_count_name_the_file(tmp_path, isolated_home):
    folder = tmp_path / "f"
    write_idx_dataset(folder, gz=False)
    labels = np.arange(60) % 10
    labels[7] = 200
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError) as info:
        data.load(DataConfig(dataset="fashion-mnist", path=str(folder)), seed=0)
    assert str(info.value).startswith(f"{folder / 'train-labels-idx1-ubyte'}: train label 200 is out of range")
    assert "10 classes (labels 0..9)" in str(info.value)


def test_the_class_count_is_the_datasets_not_the_largest_label(tmp_path, isolated_home):
    folder = tmp_path / "f"
    write_idx_dataset(folder)
    ds = data.load(DataConfig(dataset="mnist", path=str(folder), train_size=5, validation_split=0.0), seed=0)
    assert ds.num_classes == 10


@pytest.mark.parametrize("which", ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_an_idx_file_with_no_examples_is_named(tmp_path, isolated_home, which):
    folder = tmp_path / "m"
    write_idx_dataset(folder, gz=False)
    empty = np.zeros((0, 4, 4) if "images" in which else (0,), np.uint8)
    (folder / which).write_bytes(idx_bytes(empty))
    with pytest.raises(DataError) as info:
        data.load(DataConfig(dataset="mnist", path=str(folder)), seed=0)
    assert f"{folder / which}: holds 0 examples" in str(info.value)


def test_an_npz_with_no_examples_is_named(tmp_path, isolated_home):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.uint8),
             x_test=np.zeros((3, 28, 28), np.uint8), y_test=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"mnist.npz \(x_train\): holds 0 train examples"):
        data.load(DataConfig(dataset="mnist", path=str(path)), seed=0)


def test_the_embedded_digits_are_scikit_learns():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    with np.load(data.DIGITS_FILE) as f:
        images, labels = f["images"], f["labels"]
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8) and labels.dtype == np.uint8
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    # and the loader gives bit for bit what it gave when it read scikit-learn's float64 data
    train, test, _, _ = data._load_digits(DataConfig())
    x, y = (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int32)
    test_idx = data.stratified_indices(y, data.DIGITS_TEST_FRACTION, np.random.default_rng(data.DIGITS_SPLIT_SEED))
    keep = np.ones(len(y), bool)
    keep[test_idx] = False
    for got, want in ((train.x, x[keep]), (train.y, y[keep]), (test.x, x[test_idx]), (test.y, y[test_idx])):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_the_digits_load_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # any import of it now fails
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    ds = data.load(DataConfig(), seed=0)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797


def test_keras_npz_is_found_and_read(isolated_home):
    keras = isolated_home / ".keras/datasets"
    keras.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(
        keras / "mnist.npz",
        x_train=rng.integers(0, 255, (30, 28, 28), dtype=np.uint8), y_train=np.arange(30) % 10,
        x_test=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10) % 10,
    )
    ds = data.load(DataConfig(dataset="mnist", validation_split=0.0), seed=0)
    assert ds.train.x.shape == (30, 784) and ds.test.x.shape == (10, 784)


def test_not_found_lists_where_it_looked_and_how_to_get_it(isolated_home, monkeypatch):
    monkeypatch.setattr(data.builtin, "candidate_locations", lambda name, path=None: [isolated_home / "nowhere"])
    with pytest.raises(DataError) as info:
        data.load(DataConfig(dataset="mnist"), seed=0)
    message = str(info.value)
    assert "dataset 'mnist' not found" in message and str(isolated_home / "nowhere") in message
    assert "dnnlab data download mnist" in message


def test_truncated_and_corrupt_files_get_clear_errors(tmp_path, isolated_home):
    folder = tmp_path / "m"
    write_idx_dataset(folder, gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated or corrupt IDX file"):
        data.load(DataConfig(dataset="mnist", path=str(folder)), seed=0)
    images.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 40)
    with pytest.raises(DataError, match="bad magic number"):
        data.load(DataConfig(dataset="mnist", path=str(folder)), seed=0)
    gz_folder = tmp_path / "g"
    write_idx_dataset(gz_folder, gz=True)
    labels = gz_folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:10])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt or truncated"):
        data.load(DataConfig(dataset="mnist", path=str(gz_folder)), seed=0)


# ---------------------------------------------------------------- download from a local server


@pytest.fixture()
def served(tmp_path):
    root = tmp_path / "server"
    write_idx_dataset(root)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _remote(root: Path, url: str) -> Remote:
    return Remote(url, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())})


def test_download_checks_sha256_and_lands_atomically(served, tmp_path, isolated_home):
    root, url = served
    seen = []
    dest = data.download("fashion-mnist", tmp_path / "dest", remote=_remote(root, url), progress=lambda *a: seen.append(a))
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in root.iterdir())
    assert seen and seen[-1][1] == seen[-1][2]  # progress reached the Content-Length
    ds = data.load(DataConfig(dataset="fashion-mnist", path=str(dest)), seed=0)
    assert len(ds.test) == 20


def test_download_rejects_a_bad_checksum_and_keeps_nothing(served, tmp_path):
    root, url = served
    remote = _remote(root, url)
    bad_name = "train-labels-idx1-ubyte.gz"
    remote.files[bad_name] = "0" * 64
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=f"{bad_name}: checksum mismatch .* the file was not kept"):
        data.download("fashion-mnist", dest, remote=remote)
    assert not (dest / bad_name).exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]


def test_download_reports_an_unreachable_server(tmp_path):
    remote = Remote("http://127.0.0.1:9/", {"x.gz": "0" * 64})
    with pytest.raises(DataError, match="download failed"):
        data.download("fashion-mnist", tmp_path / "d", remote=remote, timeout=2)
    with pytest.raises(DataError, match="no download for 'digits'"):
        data.download("digits", tmp_path / "d")


def test_images_keep_their_shape_and_standardize_per_channel(tmp_path, isolated_home):
    write_idx_dataset(tmp_path / "m")
    ds = data.load(DataConfig(dataset="mnist", path=str(tmp_path / "m"), normalize="standard"), seed=0)
    assert ds.image_shape == (4, 4, 1) and ds.input_shape == (4, 4, 1)
    assert abs(float(ds.train.x.mean())) < 1e-5 and float(ds.train.x.std()) == pytest.approx(1.0, rel=1e-4)
    assert data.load(DataConfig(), 0).input_shape == (8, 8, 1)


def write_cifar(folder: Path, n_per_batch: int = 12, seed: int = 0) -> None:
    """A small CIFAR-10 in the official python-pickle format (dicts with bytes keys)."""
    import pickle

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        data_arr = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data_arr, b"filenames": [b"x.png"] * n_per_batch}, fh, protocol=2)


def test_cifar10_batches_are_read_in_hwc_order(tmp_path, isolated_home):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    write_cifar(folder)
    ds = data.load(DataConfig(dataset="cifar10", path=str(tmp_path / "cifar"), validation_split=0.0), seed=0)
    assert len(ds.train) == 60 and len(ds.test) == 12 and ds.image_shape == (32, 32, 3)
    raw, labels = data.read_cifar_batch(folder / "test_batch")
    assert raw.shape == (12, 32, 32, 3)
    import pickle

    with open(folder / "test_batch", "rb") as fh:
        original = pickle.load(fh, encoding="bytes")[b"data"]
    # channel-first rows (1024 R, 1024 G, 1024 B) become (H, W, C)
    assert raw[3, 5, 7, 2] == original[3, 2 * 1024 + 5 * 32 + 7]
    np.testing.assert_allclose(ds.test.x[3].reshape(32, 32, 3)[5, 7, 2], original[3, 2048 + 167] / 255.0)


def test_cifar10_truncated_or_malicious_batches_are_rejected(tmp_path, isolated_home):
    folder = tmp_path / "c" / "cifar-10-batches-py"
    write_cifar(folder)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3: corrupt or truncated CIFAR-10 batch"):
        data.load(DataConfig(dataset="cifar10", path=str(tmp_path / "c")), seed=0)
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    batch.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to load"):
        data.load(DataConfig(dataset="cifar10", path=str(tmp_path / "c")), seed=0)


def test_cifar10_download_unpacks_the_checked_archive(tmp_path, isolated_home):
    import tarfile

    src = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar(src)
    served_root = tmp_path / "served"
    served_root.mkdir()
    archive = served_root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served_root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = Remote(f"http://127.0.0.1:{server.server_address[1]}/", {archive.name: hashlib.sha256(archive.read_bytes()).hexdigest()}, extract=True)
        dest = data.download("cifar10", remote=remote)
    finally:
        server.shutdown()
        server.server_close()
    assert dest == isolated_home / ".cache/dnnlab/cifar10"
    assert data.find("cifar10") == dest / "cifar-10-batches-py"
    assert len(data.load(DataConfig(dataset="cifar10", validation_split=0.0), seed=0).test) == 12
