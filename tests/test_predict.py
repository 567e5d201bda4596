"""Using what was trained: preprocessing.json, `dnnlab predict` and `dnnlab export --format onnx`.

The oracle is the run's own data path: raw inputs through preprocessing.json must give the
model inputs `data.load` gave (bit for bit), and the predictions the evaluation's
probabilities (`evaluate.probabilities`) of those inputs. The three digits runs (an MLP, a
CNN with batch norm, a one-block resnet) train one epoch each, once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dnnlab import config, data, evaluate, experiment, predict, runs
from dnnlab.cli import app
from dnnlab.config import DataConfig
from dnnlab.data import DataError
from dnnlab.data.preprocessing import read_images, to_model_inputs

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def roundtrip(record: dict) -> dict:
    """The record as predict reads it back: through JSON."""
    return json.loads(json.dumps(record))


def table(tmp_path: Path, name: str, x: np.ndarray, labels, columns: list[str]) -> Path:
    lines = [",".join(columns)] + [",".join([*(f"{v:.6g}" for v in row), str(lab)]) for row, lab in zip(x, labels)]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of four features on very different scales (what normalization is for)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["low", "mid", "high"], n)
    centre = {"low": 0.0, "mid": 2.0, "high": 4.0}
    x = np.stack([rng.normal(centre[c], 1.0, 4) * [1, 10, 100, 1000] for c in labels])
    return x, labels


# ---------------------------------------------------------------- the record, without JAX


@pytest.mark.parametrize("normalize", ["unit", "standard"])
def test_csv_record_turns_raw_rows_into_the_training_inputs_bit_for_bit(tmp_path, normalize):
    cols = ["a", "b", "c", "d", "kind"]
    x, y = blobs(12, 0)
    xt, yt = blobs(4, 1)
    train, test = table(tmp_path, "train.csv", x, y, cols), table(tmp_path, "test.csv", xt, yt, cols)
    ds = data.load(DataConfig(dataset="csv", path=str(train), test_path=str(test), label="kind", normalize=normalize), 0)
    record = roundtrip(ds.preprocessing)
    assert record["csv"]["features"] == [{"name": c, "position": i} for i, c in enumerate(cols[:4])]
    assert record["csv"]["label"] == {"name": "kind", "position": 4}
    assert record["classes"] == list(ds.classes) and record["task"] == "classification"
    assert record["scaling"]["kind"] == ("standard" if normalize == "standard" else "minmax")
    raw = predict.read_inputs(record, [test])
    np.testing.assert_array_equal(to_model_inputs(record, raw.x), ds.test.x)  # bit for bit
    assert raw.y.tolist() == ds.test.y.tolist()
    # the training split's statistics, not the test file's: the training inputs come out scaled
    if normalize == "standard":
        np.testing.assert_allclose(ds.train.x.mean(axis=0), 0, atol=1e-5)
    else:
        assert ds.train.x.min(axis=0).tolist() == [0.0] * 4 and ds.train.x.max(axis=0).tolist() == [1.0] * 4


def test_csv_input_matched_by_name_shuffled_extra_and_no_label(tmp_path):
    cols = ["a", "b", "c", "d", "kind"]
    x, y = blobs(8, 0)
    train = table(tmp_path, "train.csv", x, y, cols)
    ds = data.load(DataConfig(dataset="csv", path=str(train), label="kind", normalize="standard"), 0)
    record = roundtrip(ds.preprocessing)
    xt, _ = blobs(3, 5)
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b,c,d\n" + "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in xt))
    shuffled = tmp_path / "shuffled.csv"
    order = [3, 0, 2, 1]
    shuffled.write_text("d,note,a,c,b\n" + "".join(
        ",".join([f"{row[3]:.6g}", "x", *(f"{row[j]:.6g}" for j in order[1:])]) + "\n" for row in xt))
    a, b = predict.read_inputs(record, [plain]), predict.read_inputs(record, [shuffled])
    assert a.y is None and b.y is None and b.ignored == ["note"]
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.x, np.asarray([[float(f"{v:.6g}") for v in row] for row in xt]))
    missing = tmp_path / "missing.csv"
    missing.write_text("a,bb,c,d\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"has no column 'b' \(did you mean 'bb'\?\)"):
        predict.read_inputs(record, [missing])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d\n1,2,3,4\n1,2,oops,4\n")
    with pytest.raises(DataError, match=r"column 2 \('c'\) is not numeric: line 3 holds 'oops'"):
        predict.read_inputs(record, [bad])


def test_image_record_reads_images_and_refuses_another_size_with_the_fix(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("circle", "square"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8), "L").save(tmp_path / "train" / cls / f"{i}.png")
    ds = data.load(DataConfig(dataset="folder", path=str(tmp_path / "train"), normalize="standard", validation_split=0), 0)
    record = roundtrip(ds.preprocessing)
    assert record["image"] == {"height": 6, "width": 5, "channels": 1, "resize": False}
    raw = read_images(record, [tmp_path / "train"])  # a folder of class folders: labelled
    assert raw.y.tolist() == [0] * 4 + [1] * 4
    # the training split is 6 of these 8 (a fixed held-out test split): their inputs, bit for bit
    z = to_model_inputs(record, raw.x)
    assert all(any(np.array_equal(row, t) for t in z) for row in ds.train.x)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((7, 5), np.uint8), "L").save(big)
    with pytest.raises(DataError, match=r"big.png: 5x7 pixels .* trained on 5x6 images; resize it to 5x6"):
        read_images(record, [big])


def test_digits_record_follows_the_config_and_raw_pixels_give_its_inputs():
    ds = data.load(DataConfig(), 0)
    record = roundtrip(ds.preprocessing)
    assert record["classes"] == [str(i) for i in range(10)] and record["scaling"] is None
    images = np.load(data.DIGITS_FILE)["images"].reshape(-1, 64)
    np.testing.assert_array_equal(to_model_inputs(record, images), (images / 16.0).astype(np.float32))


# ---------------------------------------------------------------- trained runs: predict and export

ARCHS = {
    "mlp": ["model.arch=mlp", "model.depth=1", "model.width=32"],
    "cnn": ["model.arch=cnn", "model.channels=[8]", "model.width=16", "model.norm=batch", "data.normalize=standard"],
    "resnet": ["model.arch=resnet", "model.blocks=1", "model.norm=batch", "data.normalize=standard"],
}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """One digits run per family, one epoch each: {arch: (run folder, Config, Dataset)}."""
    out = tmp_path_factory.mktemp("runs")
    found = {}
    for arch, sets in ARCHS.items():
        cfg = config.validate(config.apply_overrides({"name": arch}, [*sets, "train.epochs=1", "data.batch_size=128", "data.train_size=400",
                                                                       "logging.tensorboard=false", "diagnosis.reference=none"]))
        ds = experiment.load_data(cfg)
        outcome = experiment.execute(cfg, ds, out)
        found[arch] = (outcome.run_dir, cfg, ds)
    return found


@pytest.mark.parametrize("arch", list(ARCHS))
def test_predict_equals_the_evaluation_of_the_test_split(trained_runs, arch):
    run_dir, cfg, ds = trained_runs[arch]
    assert (run_dir / runs.PREPROCESSING).exists()
    trained = predict.open_trained(run_dir)
    model, params = trained.model()  # evaluate.kept_model of the checkpoint (one compiled program per model)
    expected = np.asarray(evaluate.probabilities(model, params, ds.test.x))
    got = predict.predict_split(trained)
    np.testing.assert_array_equal(got.probs, expected)  # bit for bit
    summary = runs.read_summary(run_dir)
    kept = summary["best"] if summary.get("restored_best") else summary["final"]
    assert got.scores()["accuracy"] == pytest.approx(kept["test_accuracy"], abs=1e-6)
    # the raw pixels of the same examples, through preprocessing.json
    images = np.load(data.DIGITS_FILE)["images"].reshape(-1, 64)
    raw = images[np.flatnonzero(np.isin(np.arange(len(images)), _digits_test_indices()))]
    np.testing.assert_array_equal(trained.proba_raw(raw), expected)


def _digits_test_indices() -> np.ndarray:
    labels = np.load(data.DIGITS_FILE)["labels"]
    return data.stratified_indices(labels, data.DIGITS_TEST_FRACTION, np.random.default_rng(data.DIGITS_SPLIT_SEED))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_onnx_export_matches_the_jax_probabilities(trained_runs, arch, tmp_path):
    pytest.importorskip("jax2onnx", reason="the onnx extra (pip install -e '.[onnx]'); the test extra installs it")
    ort = pytest.importorskip("onnxruntime")
    run_dir, _, _ = trained_runs[arch]
    result = invoke("export", run_dir, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    images = np.load(data.DIGITS_FILE)["images"].reshape(-1, 64)[:64].astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    onnx_probs = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(onnx_probs, predict.open_trained(run_dir).proba_raw(images), atol=1e-5, rtol=0)


def test_export_without_jax2onnx_names_the_install(trained_runs, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx now raises ImportError
    result = invoke("export", trained_runs["mlp"][0], "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "pip install -e '.[onnx]'" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_predict_cli_writes_rows_scores_and_confusion(trained_runs, tmp_path):
    run_dir, cfg, ds = trained_runs["mlp"]
    result = invoke("predict", run_dir, "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    rows = record["predictions"]
    assert len(rows) == len(ds.test) and rows[0]["label"] == str(int(ds.test.y[0]))
    assert sum(rows[0][f"p({c})"] for c in record["classes"]) == pytest.approx(1.0, abs=1e-5)
    assert np.asarray(record["scores"]["confusion"]).sum() == len(ds.test)
    out = tmp_path / "pred" / "p.csv"
    result = invoke("predict", run_dir, "--split", "test", "--out", out)
    assert result.exit_code == 0 and (out.parent / "confusion.png").exists()
    lines = out.read_text().splitlines()
    assert lines[0].startswith("input,predicted,label,p(0)") and len(lines) == len(ds.test) + 1
    assert "balanced accuracy" in result.output


def test_predict_refuses_an_old_folder_of_own_data_but_not_a_builtin_one(trained_runs, tmp_path):
    import shutil

    # a built-in dataset's preprocessing follows from its config
    old = tmp_path / "old-digits"
    shutil.copytree(trained_runs["mlp"][0], old)
    (old / runs.PREPROCESSING).unlink()
    assert invoke("predict", old, "--split", "test").exit_code == 0
    # a CSV run (an untrained model: the preprocessing is what is tested) and its inputs
    cols = ["a", "b", "c", "d", "kind"]
    x, y = blobs(10, 0)
    train = table(tmp_path, "train.csv", x, y, cols)
    cfg = config.validate(config.apply_overrides({"name": "csv"}, [
        "data.dataset=csv", f"data.path={train}", "data.label=kind", "data.normalize=standard", "model.depth=1",
        "model.width=8"]))
    ds = data.load(cfg.data, 0)
    run_dir = tmp_path / "csv-run"
    run_dir.mkdir()
    (run_dir / runs.CONFIG).write_text(config.dump_yaml(cfg))
    runs.write_preprocessing(run_dir, ds.preprocessing)
    from dnnlab import models
    from dnnlab.checkpoints import flatten_params

    model = models.build(cfg.model, ds.input_shape, ds.num_classes, models.plan_stack(cfg.model))
    params = model.init(jax_key())
    np.savez(run_dir / "last.npz", **flatten_params(params))
    trained = predict.open_trained(run_dir)
    xt, yt = blobs(1, 3)
    probs = predict.predict_inputs(trained, [table(tmp_path, "new.csv", xt, yt, cols)]).probs
    xt = np.asarray([[float(f"{v:.6g}") for v in row] for row in xt])  # as the table holds them
    oracle = (xt.astype(np.float32) - np.asarray(trained.record["scaling"]["shift"], np.float32)) / np.asarray(
        trained.record["scaling"]["scale"], np.float32)
    np.testing.assert_array_equal(probs, np.asarray(evaluate.probabilities(model, params, oracle)))
    missing = tmp_path / "missing.csv"
    missing.write_text("a,b,c\n1,2,3\n")
    out = tmp_path / "o.csv"
    result = invoke("predict", run_dir, missing, "--out", out)
    assert result.exit_code == 2 and "has no column 'd'" in result.output and not out.exists()
    # a folder from before runs kept preprocessing.json: refused with the fix, nothing written
    (run_dir / runs.PREPROCESSING).unlink()
    result = invoke("predict", run_dir, missing, "--out", out)
    assert result.exit_code == 2 and "has no preprocessing.json" in result.output and "train it again" in result.output
    assert not out.exists()


def jax_key():
    import jax

    return jax.random.PRNGKey(0)
