"""The user's own data: CSV tables, npz arrays and image folders (data.dataset csv | npz | folder),
and `dnnlab data inspect`. Every file is written by the test; the breast-cancer table is
scikit-learn's, exported to CSV and trained on end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dnnlab import config, data, runs
from dnnlab.cli import app
from dnnlab.config import ConfigError, DataConfig
from dnnlab.data import DataError
from dnnlab.experiment import check_compatible

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def load(**keys) -> data.Dataset:
    keys.setdefault("validation_split", 0.0)
    seed = keys.pop("seed", 0)
    return data.load(DataConfig(**keys), seed=seed)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def iris_like(n_per_class: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated classes named by words, four numeric features."""
    rng = np.random.default_rng(1)
    names = np.repeat(["versicolor", "setosa", "virginica"], n_per_class)
    centre = {"setosa": 0.0, "versicolor": 5.0, "virginica": 10.0}
    x = np.stack([rng.normal(centre[n], 1.0, 4) for n in names]).round(3)
    return x, names


def table_text(x: np.ndarray, labels, header: list[str] | None = None, sep: str = ",") -> str:
    rows = [sep.join([*(f"{v:g}" for v in row), str(label)]) for row, label in zip(x, labels)]
    return "\n".join(([sep.join(header)] if header else []) + rows) + "\n"


# ---------------------------------------------------------------- csv


def test_csv_without_header_maps_string_labels_to_sorted_classes(tmp_path):
    x, names = iris_like()
    path = write(tmp_path / "iris.csv", table_text(x, names))
    ds = load(dataset="csv", path=str(path), normalize="standard")
    assert ds.classes == ("setosa", "versicolor", "virginica") and ds.num_classes == 3
    assert ds.input_shape == (4,) and ds.image_shape == ()
    # every example is in train or test once, with its own label: the counts per name are kept
    got = Counter(ds.classes[i] for split in (ds.train, ds.test) for i in split.y)
    assert got == Counter(names.tolist())
    # the fixed 20% test split is stratified: 2 of each class's 10
    assert np.bincount(ds.test.y).tolist() == [2, 2, 2]
    # standard: every feature (a table's channel) has zero mean, unit variance on the training split
    assert np.allclose(ds.train.x.mean(axis=0), 0, atol=1e-5) and np.allclose(ds.train.x.std(axis=0), 1, atol=1e-4)


def test_csv_with_header_label_by_name_features_and_unit_scaling(tmp_path):
    x, names = iris_like()
    # the label first, a header, and a semicolon separator (detected)
    header = ["species", "a", "b", "c", "d"]
    rows = [";".join([str(n), *(f"{v:g}" for v in row)]) for row, n in zip(x, names)]
    path = write(tmp_path / "t.csv", "\n".join([";".join(header), *rows]) + "\n")
    ds = load(dataset="csv", path=str(path), label="species", features=["d", "b"], test_split=0.3)
    assert ds.input_shape == (2,) and ds.classes == ("setosa", "versicolor", "virginica")
    assert "label: column 0 ('species')" in ds.source and "30%" in ds.source
    # unit: min-max per feature with the training split's range; the test split uses the same
    assert ds.train.x.min(axis=0).tolist() == [0, 0] and ds.train.x.max(axis=0).tolist() == [1, 1]
    test_idx = data.stratified_indices(
        np.searchsorted(np.unique(names), names), 0.3, np.random.default_rng(data.FILE_SPLIT_SEED)
    )
    keep = np.setdiff1d(np.arange(len(names)), test_idx)
    raw_train, raw_test = x[keep][:, [3, 1]], x[test_idx][:, [3, 1]]
    low, span = raw_train.min(axis=0), raw_train.max(axis=0) - raw_train.min(axis=0)
    np.testing.assert_allclose(ds.test.x, (raw_test - low) / span, rtol=1e-5, atol=1e-6)
    # by index: the label column 0, negative feature indices count from the end
    same = load(dataset="csv", path=str(path), label=0, features=[-1, 2], test_split=0.3)
    np.testing.assert_array_equal(same.train.x, ds.train.x)


def test_csv_header_is_detected_or_set(tmp_path):
    x, names = iris_like()
    with_header = write(tmp_path / "h.csv", table_text(x, names, header=["a", "b", "c", "d", "y"]))
    without = write(tmp_path / "n.csv", table_text(x, names))
    assert len(load(dataset="csv", path=str(with_header)).train) == len(load(dataset="csv", path=str(without)).train) == 24
    # numbers naming the columns: detected above a column of words (the labels); data.header says so
    numeric = write(tmp_path / "num.csv", table_text(x, names, header=["1", "2", "3", "4", "5"]))
    assert len(load(dataset="csv", path=str(numeric)).train) == 24
    with pytest.raises(DataError, match=r"class '5' has a single example \(line 1\)"):
        load(dataset="csv", path=str(numeric), header=False)
    with pytest.raises(DataError, match=r"data\.label: 'species' names a column, but .* has no header row"):
        load(dataset="csv", path=str(without), label="species")
    with pytest.raises(DataError, match=r"has no column 'sepal'; .*its columns: a, b, c, d, y"):
        load(dataset="csv", path=str(with_header), label="sepal")


def test_csv_missing_values_are_an_error_or_dropped(tmp_path):
    x, names = iris_like()
    lines = table_text(x, names, header=["a", "b", "c", "d", "y"]).splitlines()
    lines[4] = lines[4].replace(lines[4].split(",")[1], "", 1)  # an empty cell at line 5, column 1
    lines[7] = "NA," + lines[7].split(",", 1)[1]  # NA at line 8, column 0
    lines[9] = lines[9].rsplit(",", 1)[0] + ", ? "  # a missing label at line 10
    path = write(tmp_path / "m.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load(dataset="csv", path=str(path))
    message = str(err.value)
    assert "3 missing values" in message and "in 3 of 30 rows" in message
    assert "the first at line 5, column 1 ('b')" in message and "data.missing: drop" in message
    ds = load(dataset="csv", path=str(path), missing="drop")
    assert len(ds.train) + len(ds.test) == 27 and not np.isnan(ds.train.x).any()
    assert [d.to_dict() for d in ds.dropped] == [{"where": str(path), "dropped": 3, "total": 30, "unit": "rows"}]
    said = f"data.missing: drop dropped 3 of 30 rows with missing values ({path})"
    assert data.split_warnings(DataConfig(dataset="csv", path=str(path), missing="drop"), ds) == [said]
    test_file = write(tmp_path / "t.csv", "\n".join(lines[:1] + lines[9:13]) + "\n")  # one missing label of 4
    both = load(dataset="csv", path=str(path), test_path=str(test_file), missing="drop")
    assert [(d.where, d.dropped, d.total) for d in both.dropped] == [(str(path), 3, 30), (str(test_file), 1, 4)]
    cfg = write(tmp_path / "m.yaml", f"data: {{dataset: csv, path: {path}, missing: drop}}\n")
    shown = invoke("data", "inspect", cfg)
    assert shown.exit_code == 0 and f"warning: {said}" in " ".join(shown.output.split())


def test_csv_non_numeric_feature_names_its_column_and_first_bad_value(tmp_path):
    x, names = iris_like()
    lines = table_text(x, names, header=["a", "b", "c", "d", "y"]).splitlines()
    for i in (6, 12):
        cells = lines[i].split(",")
        cells[2] = "tall" if i == 6 else "short"
        lines[i] = ",".join(cells)
    path = write(tmp_path / "w.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column 2 \('c'\) is not numeric: line 7 holds 'tall'"):
        load(dataset="csv", path=str(path))


def test_csv_test_file_columns_by_name_and_unknown_test_class(tmp_path):
    x, names = iris_like()
    train = write(tmp_path / "train.csv", table_text(x, names, header=["a", "b", "c", "d", "y"]))
    # the test file orders its columns differently: they are matched by name
    xt, nt = x[:6] + 0.5, names[:6]
    rows = [",".join([str(n), f"{r[3]:g}", f"{r[2]:g}", f"{r[1]:g}", f"{r[0]:g}"]) for r, n in zip(xt, nt)]
    test = write(tmp_path / "test.csv", "\n".join(["y,d,c,b,a", *rows]) + "\n")
    ds = load(dataset="csv", path=str(train), test_path=str(test), normalize="standard")
    assert len(ds.train) == 30 and len(ds.test) == 6 and "test: " + str(test) in ds.source
    mean, std = x.mean(axis=0), x.std(axis=0)
    np.testing.assert_allclose(ds.test.x, (xt - mean) / (std + 1e-7), rtol=1e-4, atol=1e-4)
    assert [ds.classes[i] for i in ds.test.y] == nt.tolist()
    write(test, "\n".join(["y,d,c,b,a", *rows[:5], rows[5].replace("versicolor", "rose", 1)]) + "\n")
    with pytest.raises(DataError, match=r"test label 'rose' \(line 7\) is not a class of the training data"):
        load(dataset="csv", path=str(train), test_path=str(test))


def test_test_split_is_fixed_across_seeds_and_validation_is_not(tmp_path):
    # uint8 inputs are divided by 255, whatever the training split: the splits can be compared as they are
    rng = np.random.default_rng(0)
    path = tmp_path / "t.npz"
    np.savez(path, x=rng.integers(0, 256, (60, 5), dtype=np.uint8), y=np.arange(60) % 3)
    a = load(dataset="npz", path=str(path), validation_split=0.2, seed=0)
    b = load(dataset="npz", path=str(path), validation_split=0.2, seed=7)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert len(a.test) == 12 and len(a.val) == len(b.val) == 10 and not np.array_equal(a.val.x, b.val.x)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", r"is empty"),
        ("a,b,y\n", r"holds a single line"),
        ("1,2,x\n3,4,x\n5,6,x\n", r"every example has the label 'x': a classifier needs at least 2 classes"),
        ("1,2,x\n3,4,x\n5,6,y\n", r"class 'y' has a single example \(line 3\)"),
        ("1,2,x\n3,4,5,x\n5,6,y\n", r"line 2 has 4 fields, line 1 has 3"),
        ("1,2,x\n3,inf,x\n5,6,y\n7,8,y\n", r"column 1 holds an infinite value at line 2"),
    ],
    ids=["empty", "header-only", "one-class", "singleton-class", "ragged-row", "infinite"],
)
def test_csv_unusable_tables_are_named_errors(tmp_path, text, problem):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=problem) as err:
        load(dataset="csv", path=str(path))
    assert str(path) in str(err.value)


# ---------------------------------------------------------------- npz


def test_npz_images_reach_an_mlp_flattened_and_a_cnn_as_hwc(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 6), dtype=np.uint8)
    labels = np.repeat(["cat", "dog"], 20)
    test_images = rng.integers(0, 256, (10, 8, 6), dtype=np.uint8)
    path = tmp_path / "img.npz"
    np.savez(path, x=images, y=labels, x_test=test_images, y_test=np.repeat(["dog", "cat"], 5))
    ds = load(dataset="npz", path=str(path))
    assert ds.image_shape == (8, 6, 1) and ds.input_dim == 48 and ds.classes == ("cat", "dog")
    np.testing.assert_allclose(ds.train.x, images.reshape(40, -1) / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.test.x, test_images.reshape(10, -1) / 255.0, atol=1e-7)
    assert ds.test.y.tolist() == [1] * 5 + [0] * 5
    check_compatible(config.validate({"model": {"arch": "cnn", "channels": [4]}}), ds)  # no error
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, pixels=rng.integers(0, 256, (30, 5, 4, 3), dtype=np.uint8), target=np.arange(30) % 3)
    ds = load(dataset="npz", path=str(rgb), x_key="pixels", y_key="target")
    assert ds.image_shape == (5, 4, 3) and ds.classes == ("0", "1", "2") and len(ds.test) == 6


def test_npz_flat_float_features_missing_values_and_keys(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 10.0, (50, 7))
    y = np.arange(50) % 2
    path = tmp_path / "flat.npz"
    np.savez(path, x=x, y=y)
    ds = load(dataset="npz", path=str(path))
    assert ds.input_shape == (7,) and ds.image_shape == () and len(ds.test) == 10
    assert ds.train.x.min(axis=0).tolist() == [0] * 7 and ds.train.x.max(axis=0).tolist() == [1] * 7
    x[[3, 9], [1, 4]] = np.nan
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError, match=r"\(x\): 2 missing values \(NaN\) in 2 of 50 examples, the first in example 3"):
        load(dataset="npz", path=str(path))
    dropped = load(dataset="npz", path=str(path), missing="drop", test_split=0.25)
    assert len(dropped.train) == 36
    assert [d.words() for d in dropped.dropped] == [
        f"data.missing: drop dropped 2 of 50 examples with missing values ({path} (x), {path} (y))"
    ]
    with pytest.raises(DataError, match=r"has no array 'features' \(it holds: x, y\); name the arrays with data\.x_key"):
        load(dataset="npz", path=str(path), x_key="features")
    np.savez(path, x=x[:, :3], y=np.eye(2)[y])
    with pytest.raises(DataError, match=r"labels must be a 1-D array.*one-hot\? store y\.argmax\(1\)"):
        load(dataset="npz", path=str(path))


# ---------------------------------------------------------------- image folders


def write_images(root: Path, counts: dict[str, int], size=(6, 5), mode="L", seed=0) -> dict[str, list[np.ndarray]]:
    """PNG (and one JPEG per class) images in root/<class>/; returns the PNGs' pixels by class."""
    rng = np.random.default_rng(seed)
    pixels: dict[str, list[np.ndarray]] = {}
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
        for i in range(n):
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            if i == n - 1:
                Image.fromarray(arr, mode).save(root / name / f"{i:03d}.jpg")
            else:
                Image.fromarray(arr, mode).save(root / name / f"{i:03d}.png")
                pixels.setdefault(name, []).append(arr)
    return pixels


def test_image_folder_train_test_layout_grayscale_and_pixels(tmp_path):
    train = write_images(tmp_path / "train", {"circle": 6, "square": 5})
    write_images(tmp_path / "test", {"circle": 2, "square": 3}, seed=1)
    ds = load(dataset="folder", path=str(tmp_path))
    assert ds.image_shape == (6, 5, 1) and ds.classes == ("circle", "square")
    assert len(ds.train) == 11 and len(ds.test) == 5 and ds.test.y.tolist() == [0, 0, 1, 1, 1]
    # PNGs are lossless: the first training image is circle/000.png over 255
    np.testing.assert_allclose(ds.train.x[0], train["circle"][0].reshape(-1) / 255.0, atol=1e-7)
    rgb = load(dataset="folder", path=str(tmp_path), channels=3, image_size=[4, 3], normalize="standard")
    assert rgb.image_shape == (4, 3, 3) and rgb.input_dim == 36
    per_channel = rgb.train.x.reshape(len(rgb.train), -1, 3)
    assert np.allclose(per_channel.mean(axis=(0, 1)), 0, atol=1e-5)


def test_image_folder_without_test_folder_colour_and_errors(tmp_path):
    write_images(tmp_path, {"a": 5, "b": 5}, mode="RGB")
    ds = load(dataset="folder", path=str(tmp_path))
    assert ds.image_shape == (6, 5, 3) and len(ds.test) == 2 and "fixed stratified 20%" in ds.source
    # an image of another size names the first odd file and the fix
    Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(tmp_path / "b" / "odd.png")
    with pytest.raises(DataError, match=r"b/odd\.png: 5x7 pixels .* set data\.image_size"):
        load(dataset="folder", path=str(tmp_path))
    assert load(dataset="folder", path=str(tmp_path), image_size=[6, 5]).image_shape == (6, 5, 3)
    (tmp_path / "b" / "odd.png").unlink()
    # a truncated image is named
    good = (tmp_path / "a" / "001.png").read_bytes()
    (tmp_path / "a" / "001.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"a/001\.png: cannot read the image \(OSError: .*truncated"):
        load(dataset="folder", path=str(tmp_path))
    (tmp_path / "a" / "001.png").write_bytes(good)
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match=r"/c: the class folder holds no \.png, \.jpg or \.jpeg image"):
        load(dataset="folder", path=str(tmp_path))
    (tmp_path / "c").rmdir()
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"holds a train/ folder but no test/"):
        load(dataset="folder", path=str(tmp_path))


def test_sixteen_bit_grayscale_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(20).reshape(4, 5) * 3000).astype(np.uint16)  # 0..57000
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(ramp).save(tmp_path / c / f"{i}.png")
    ds = load(dataset="folder", path=str(tmp_path))
    assert ds.image_shape == (4, 5, 1)
    np.testing.assert_allclose(ds.train.x[0], np.round(ramp.reshape(-1) / 257.0) / 255.0, atol=1e-6)


# ---------------------------------------------------------------- config, cli


def test_file_datasets_need_a_path_and_warn_about_options_they_ignore(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path: data\.dataset csv reads your own data; set data\.path"):
        config.validate({"data": {"dataset": "csv"}})
    raw = {"data": {"dataset": "npz", "path": "a.npz", "label": "y", "image_size": [4, 4]}}
    warnings = config.config_warnings(config.validate(raw), raw)
    assert warnings == [
        "data.label: y is ignored: only data.dataset csv reads it, and data.dataset is npz; remove it",
        "data.image_size: [4, 4] is ignored: only data.dataset folder reads it, and data.dataset is npz; remove it",
    ]
    raw = {"data": {"dataset": "csv", "path": "a.csv", "test_path": "b.csv", "test_split": 0.3}}
    assert config.config_warnings(config.validate(raw), raw) == [
        "data.test_split: 0.3 is ignored: data.test_path gives the test set; remove one of them"
    ]
    with pytest.raises(ConfigError, match=r"data\.label: must be a column name or a 0-based column index"):
        config.validate({"data": {"dataset": "csv", "path": "a.csv", "label": True}})


def test_a_bad_csv_exits_2_and_leaves_no_run_folder(tmp_path):
    bad = write(tmp_path / "bad.csv", "a,b,y\n1,2,x\n3,oops,x\n5,6,z\n7,8,z\n")
    out = tmp_path / "runs"
    result = invoke("run", ROOT / "configs" / "tabular-csv.yaml", "--out", out, "--set", f"data.path={bad}", "--set", "data.label=y")
    assert result.exit_code == 2
    assert "column 1 ('b') is not numeric: line 3 holds 'oops'" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_data_inspect_prints_examples_shape_classes_and_splits_without_jax(tmp_path):
    x, names = iris_like()
    csv_path = write(tmp_path / "iris.csv", table_text(x, names))
    cfg = write(tmp_path / "c.yaml", f"name: c\ndata: {{dataset: csv, path: {csv_path}, validation_split: 0.25}}\n")
    code = (
        "import sys; from typer.testing import CliRunner; from dnnlab.cli import app; "
        f"r = CliRunner().invoke(app, ['data', 'inspect', {str(cfg)!r}]); "
        "print(r.output); print('exit', r.exit_code, 'jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "exit 0 False" in out, out
    assert "examples: 30 (train 18, val 6, test 6;" in out and "4 features per example" in out
    lines = {line.split("│")[2].strip(): [c.strip() for c in line.split("│")[3:7]] for line in out.splitlines() if line.count("│") == 7}
    assert lines == {name: ["6", "2", "2", "10"] for name in ("setosa", "versicolor", "virginica")}
    result = invoke("data", "inspect", cfg, "--set", "data.path=nowhere.csv")
    assert result.exit_code == 2 and "data.path: nowhere.csv does not exist" in result.output


def test_breast_cancer_from_scikit_learn_trains_to_093_and_evaluate_names_the_classes(tmp_path):
    from sklearn.datasets import load_breast_cancer  # a test dependency (pyproject: test)

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    frame["target"] = bunch.target_names[bunch.target]  # malignant / benign, as words
    path = tmp_path / "breast-cancer.csv"
    frame.to_csv(path, index=False)
    assert frame.shape == (569, 31)
    out = tmp_path / "runs"
    result = invoke(
        "run", ROOT / "configs" / "tabular-csv.yaml", "--out", out, "--quiet", "--set", f"data.path={path}",
        "--set", "diagnosis.reference=none", "--set", "train.epochs=30",
    )
    assert result.exit_code == 0, result.output
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["classes"] == ["benign", "malignant"] and summary["data"]["num_classes"] == 2
    assert summary["data"]["train"] + summary["data"]["val"] + summary["data"]["test"] == 569
    assert runs.kept_metrics(summary)["test_accuracy"] >= 0.93
    table = invoke("evaluate", run, "--mc-dropout", "2")
    assert table.exit_code == 0, table.output
    assert "weight scaling, per class" in table.output and "malignant" in table.output and "benign" in table.output
    # the same file with other class names: the checkpoint's outputs would be misread
    frame["target"] = np.where(bunch.target == 0, "bad", "good")
    frame.to_csv(path, index=False)
    result = invoke("evaluate", run, "--mc-dropout", "2")
    assert result.exit_code == 2
    assert "now hold the classes ['bad', 'good'], but the run was trained on ['benign', 'malignant']" in result.output
