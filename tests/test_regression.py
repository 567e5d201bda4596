"""Regression (data.task: regression): the standardized targets, MSE/MAE/R^2 against NumPy, the
least-squares reference against numpy.linalg.lstsq, the verdict on hand-built histories, the
refusal of a numeric label under classification, and one run end to end on a small table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import make_cfg
from typer.testing import CliRunner

from dnnlab import config, reference
from dnnlab.cli import app
from dnnlab.data import DataError, Dataset, Split, load
from dnnlab.data.dataset import standardize_targets, unstandardize
from dnnlab.diagnose import diagnose


def table(tmp_path, n=300, d=5, noise=0.3, seed=0, name="table.csv"):
    """A CSV of y = x @ w + 100 + noise, with 3 decimals: a numeric target with n distinct values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) * 10 + 100 + noise * 10 * rng.normal(size=n)
    path = tmp_path / name
    rows = [",".join([f"f{j}" for j in range(d)] + ["target"])]
    rows += [",".join(f"{v:.5f}" for v in x[i]) + f",{y[i]:.3f}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path, x, y


def regression_cfg(path, **dotted):
    return make_cfg(**{"data.dataset": "csv", "data.path": str(path), "data.task": "regression",
                       "data.normalize": "standard", **dotted})


# ---------------------------------------------------------------- data


def test_targets_are_standardized_with_the_training_split_and_come_back(tmp_path):
    path, _, y = table(tmp_path)
    ds = load(regression_cfg(path).data, 0)
    assert ds.regression and ds.num_classes == 1 and ds.train.y.dtype == np.float32
    assert abs(float(ds.train.y.mean())) < 1e-6 and abs(float(ds.train.y.std()) - 1) < 1e-6
    # every split back in the target's units is a subset of the file's targets (3 decimals)
    back = np.concatenate([unstandardize(s.y, ds.target_mean, ds.target_std) for s in (ds.train, ds.val, ds.test)])
    assert len(back) == len(y)
    np.testing.assert_allclose(np.sort(back), np.sort(np.round(y, 3)), atol=1e-3)
    # the statistics are the training split's alone
    train_y = unstandardize(ds.train.y, ds.target_mean, ds.target_std)
    assert math.isclose(ds.target_mean, float(train_y.mean()), rel_tol=1e-6)
    (tr, _, _), mean, std = standardize_targets(Split(ds.train.x, train_y), None, ds.test, "t")
    assert math.isclose(mean, ds.target_mean, rel_tol=1e-9) and math.isclose(std, ds.target_std, rel_tol=1e-6)


def test_a_constant_target_and_a_word_are_refused(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a,y\n" + "".join(f"{i},5\n" for i in range(30)))
    with pytest.raises(DataError, match="every training target is 5"):
        load(regression_cfg(path).data, 0)
    path.write_text("a,y\n" + "".join(f"{i},{i}\n" for i in range(30)) + "3,high\n")
    with pytest.raises(DataError, match=r"the target 'high' \(line 32\) is not a number"):
        load(regression_cfg(path).data, 0)


def test_a_numeric_label_under_classification_is_refused_naming_the_task(tmp_path):
    path, _, _ = table(tmp_path)
    with pytest.raises(DataError, match=r"a number with 29\d distinct values among 300 examples.*data\.task: regression"):
        load(make_cfg(**{"data.dataset": "csv", "data.path": str(path)}).data, 0)
    # a few numeric classes with enough examples each stay classes
    few = tmp_path / "few.csv"
    few.write_text("a,y\n" + "".join(f"{i},{i % 25}\n" for i in range(500)))
    assert load(make_cfg(**{"data.dataset": "csv", "data.path": str(few)}).data, 0).num_classes == 25


def test_the_refusal_comes_before_any_run_folder(tmp_path):
    path, _, _ = table(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: csv, path: {path}}}\n")
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(out)])
    assert result.exit_code == 2 and "data.task: regression" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_config_errors_name_the_key():
    with pytest.raises(config.ConfigError, match="data.task: regression reads numeric targets.*digits"):
        make_cfg(**{"data.task": "regression"})
    with pytest.raises(config.ConfigError, match="monitor: val_accuracy is not measured under data.task regression"):
        make_cfg(**{"data.dataset": "npz", "data.path": "x.npz", "data.task": "regression",
                    "train.early_stopping.monitor": "val_accuracy"})
    with pytest.raises(config.ConfigError, match="val_r2 is not measured under data.task classification"):
        make_cfg(**{"train.early_stopping.monitor": "val_r2"})


def test_npz_targets_of_shape_n_by_1_and_n_by_k(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    path = tmp_path / "a.npz"
    np.savez(path, x=x, y=(x.sum(1, keepdims=True) * 3 + 7))
    cfg = make_cfg(**{"data.dataset": "npz", "data.path": str(path), "data.task": "regression"})
    ds = load(cfg.data, 0)
    assert ds.train.y.shape == (len(ds.train),) and ds.regression
    np.savez(path, x=x, y=np.stack([x[:, 0], x[:, 1]], 1))
    with pytest.raises(DataError, match=r"one number per example.*\(80, 2\)"):
        load(cfg.data, 0)


# ---------------------------------------------------------------- metrics against NumPy


def test_mse_mae_r2_of_a_linear_net_equal_numpys(tmp_path):
    """One epoch of a linear model (depth 0): the records' MSE, MAE, R^2 in the target's units
    equal NumPy's on the predictions of the final parameters."""
    from dnnlab import train

    path, _, _ = table(tmp_path, n=200)
    cfg = regression_cfg(path, **{"model.depth": 0, "train.epochs": 2, "diagnosis.instruments": False,
                                  "optimizer.lr": 0.05, "data.batch_size": 32})
    ds = load(cfg.data, 0)
    result = train.fit(cfg, ds, progress=False)
    from dnnlab.checkpoints import flatten_params

    arrays = flatten_params(result.params)
    (w,) = [np.asarray(a, np.float64) for k, a in arrays.items() if k.endswith(".w")]
    (b,) = [np.asarray(a, np.float64) for k, a in arrays.items() if k.endswith(".b")]
    last = result.history[-1]
    for name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        pred = unstandardize((np.asarray(split.x, np.float64) @ w + b)[:, 0], ds.target_mean, ds.target_std)
        true = unstandardize(split.y, ds.target_mean, ds.target_std)
        mse = np.mean((pred - true) ** 2)
        assert math.isclose(last[f"{name}_mse"], mse, rel_tol=1e-4)
        assert math.isclose(last[f"{name}_mae"], np.mean(np.abs(pred - true)), rel_tol=1e-4)
        assert math.isclose(last[f"{name}_r2"], 1 - mse / np.var(true), rel_tol=1e-4, abs_tol=1e-5)
        assert math.isclose(last[f"{name}_loss"], mse / ds.target_std**2, rel_tol=1e-4)
    assert "train_accuracy" not in last and "running_accuracy" not in last
    assert result.summary["final"]["val_r2"] == last["val_r2"]
    assert result.summary["data"]["task"] == "regression" and "class_counts" not in result.summary["data"]


# ---------------------------------------------------------------- the least-squares reference


def test_least_squares_equals_numpys_lstsq():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = x @ rng.normal(size=6) + 0.5 + 0.1 * rng.normal(size=120)
    w, b = reference.solve_least_squares(x, y, ridge=0.0)
    sol = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), y, rcond=None)[0]
    np.testing.assert_allclose(w, sol[:-1], rtol=1e-9, atol=1e-10)
    assert math.isclose(b, sol[-1], rel_tol=1e-9)
    # the default ridge leaves a well-posed fit as it is, and solves a singular one
    w_r, _ = reference.solve_least_squares(x, y)
    np.testing.assert_allclose(w_r, sol[:-1], atol=1e-4)
    w_s, _ = reference.solve_least_squares(np.column_stack([x, x[:, 0]]), y)
    assert np.isfinite(w_s).all()


def test_the_reference_r2_on_train_and_validation():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=100)).astype(np.float32)
    ds = Dataset("csv", Split(x[:70], y[:70]), Split(x[70:], y[70:]), Split(x[70:], y[70:]), 1, "t", task="regression",
                 target_std=2.0)
    ref = reference.least_squares(ds)
    sol = np.linalg.lstsq(np.column_stack([x[:70], np.ones(70)]).astype(np.float64), y[:70].astype(np.float64), rcond=None)[0]
    for name, sl in (("train", slice(0, 70)), ("val", slice(70, 100))):
        pred = np.column_stack([x[sl], np.ones(len(x[sl]))]).astype(np.float64) @ sol
        mse = np.mean((pred - y[sl]) ** 2)
        assert math.isclose(ref[f"{name}_r2"], 1 - mse / np.var(y[sl].astype(np.float64)), rel_tol=1e-5)
        assert math.isclose(ref[f"{name}_mse"], mse * 4.0, rel_tol=1e-5)
    assert ref["status"] == "completed" and ref["model"] == "least-squares"


# ---------------------------------------------------------------- the verdict on hand-built histories

SUMMARY = {"status": "completed", "data": {"num_classes": 1, "task": "regression", "target": {"mean": 150.0, "std": 75.0}}}
HEALTHY = {"grad_ratio": 0.3, "grad_rms": [0.01, 0.02, 0.03], "update_ratio": [1e-3, 1e-3, 1e-3],
           "nonpositive_fraction": [0.5, 0.5], "dead_fraction": [0.0, 0.0]}


def history(train_loss, train_r2, val_loss=None, val_r2=None, **instruments):
    out = []
    for e in range(len(train_loss)):
        r = {"epoch": e, "train_loss": train_loss[e], "train_r2": train_r2[e], **instruments}
        if val_loss is not None:
            r["val_loss"], r["val_r2"] = val_loss[e], val_r2[e]
        out.append(r)
    return out


def rcfg(**dotted):
    return make_cfg(**{"data.dataset": "csv", "data.path": "t.csv", "data.task": "regression", **dotted})


def test_a_net_that_predicts_the_mean_failed_training():
    n = 12
    h = history([1.3] + [1.0] * n, [-0.3] + [0.0] * n, [1.0] * (n + 1), [0.0] * (n + 1), **HEALTHY)
    d = diagnose(h, rcfg(), SUMMARY)
    assert d.verdict == "failed-training" and "plateau" in d.causes
    assert any("training R^2 0 " in e and "is at chance" in e for e in d.evidence)


def test_vanishing_gradients_under_regression():
    n = 10
    h = history([1.2] + [1.0] * n, [-0.2] + [0.0] * n, [1.0] * (n + 1), [0.0] * (n + 1),
                grad_ratio=4e-6, grad_rms=[1e-8, 1e-6, 1e-4, 1e-2], update_ratio=[1e-8, 1e-6, 1e-4, 1e-2])
    d = diagnose(h, rcfg(**{"model.activation": "sigmoid", "optimizer.name": "sgd", "optimizer.lr": 0.1, "model.depth": 10}), SUMMARY)
    assert d.verdict == "failed-training" and d.causes == ["vanishing-gradients"]
    assert d.remedies[0].sets == ["model.activation=relu", "optimizer.name=adam", "optimizer.lr=0.001"]


def test_below_least_squares_is_failed_training():
    n = 10
    loss = [1.2] + [0.62] * n
    h = history(loss, [1 - v for v in loss], [0.7] * (n + 1), [0.3] * (n + 1), **HEALTHY)
    ref = {"model": "least-squares", "train_r2": 0.6, "val_r2": 0.5, "train_loss": 0.4}
    d = diagnose(h, rcfg(), {**SUMMARY, "final": h[-1], "reference": ref})
    assert d.verdict == "failed-training"
    assert any("least squares" in e for e in d.evidence)
    # without the reference the same R^2 (0.38 >= poor_train_r2 0.3) is a fit, judged on validation
    assert diagnose(h, rcfg(), {**SUMMARY, "final": h[-1]}).verdict != "failed-training"


def test_overfitting_by_a_rising_validation_loss_and_by_the_r2_gap():
    n = 20
    train = [1.2] + [1.0 / (e + 1) for e in range(1, n + 1)]
    val = [1.2] + [0.6 - 0.02 * e for e in range(1, 6)] + [0.5 + 0.03 * (e - 5) for e in range(6, n + 1)]
    h = history(train, [1 - v for v in train], val, [1 - v for v in val], **HEALTHY)
    d = diagnose(h, rcfg(), SUMMARY)
    assert d.verdict == "overfitting" and any("then rose" in e for e in d.evidence)
    # flat validation, but a train - validation R^2 gap of 0.3 > overfit_gap_r2 0.2
    h = history([1.2] + [0.1] * n, [-0.2] + [0.9] * n, [1.2] + [0.4] * n, [-0.2] + [0.6] * n, **HEALTHY)
    d = diagnose(h, rcfg(), SUMMARY)
    assert d.verdict == "overfitting" and any("R^2 gap 0.3 " in e for e in d.evidence)
    assert diagnose(h, rcfg(**{"diagnosis.overfit_gap_r2": 0.4}), SUMMARY).verdict == "good-fit"


def test_good_fit_undertrained_and_diverged():
    n = 12
    h = history([1.2] + [0.2] * n, [-0.2] + [0.8] * n, [1.2] + [0.3] * n, [-0.2] + [0.7] * n, **HEALTHY)
    d = diagnose(h, rcfg(), SUMMARY)
    assert d.verdict == "good-fit" and any("validation R^2 0.7" in e for e in d.evidence)
    falling = [1.2 * 0.8**e for e in range(n + 1)]
    h = history(falling, [1 - v for v in falling], [v + 0.05 for v in falling], [0.95 - v for v in falling], **HEALTHY)
    assert diagnose(h, rcfg(), SUMMARY).verdict == "undertrained"
    h = history([1.2, 0.9, 50.0], [-0.2, 0.1, -49.0], [1.2, 0.9, 50.0], [-0.2, 0.1, -49.0], **HEALTHY)
    assert diagnose(h, rcfg(), {**SUMMARY, "status": "diverged"}).verdict == "diverged"


def test_poor_training_r2_threshold_is_a_key():
    n = 12
    h = history([1.2] + [0.75] * n, [-0.2] + [0.25] * n, [0.8] * (n + 1), [0.2] * (n + 1), **HEALTHY)
    assert diagnose(h, rcfg(), SUMMARY).verdict == "failed-training"
    assert diagnose(h, rcfg(**{"diagnosis.poor_train_r2": 0.2}), SUMMARY).verdict != "failed-training"


# ---------------------------------------------------------------- end to end

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


def diabetes(folder):
    """configs/regression-csv.yaml's table, written by docs/data.md's recipe."""
    from sklearn.datasets import load_diabetes

    load_diabetes(as_frame=True, scaled=False).frame.to_csv(folder / "diabetes.csv", index=False)


def test_the_failing_regression_recipe_predicts_the_mean_and_fix_fixes_it(tmp_path, monkeypatch):
    diabetes(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(CONFIGS / "recipe" / "regression-mean.yaml"), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    d = summary["diagnosis"]
    assert d["verdict"] == "failed-training" and "vanishing-gradients" in d["causes"]
    assert abs(summary["final"]["train_r2"]) < 0.05 and summary["reference"]["train_r2"] > 0.45
    assert summary["final"]["train_mse"] > 0.9 * 75**2  # in the target's units: about its variance
    assert "train R^2 -0.0" in result.output
    report = (run / "report.md").read_text()
    assert "| split | final loss | final MSE | final MAE | final R^2 |" in report and "Least squares" in report
    fixed = runner.invoke(app, ["fix", str(run), "--top", "1", "--out", str(tmp_path / "fix"), "--json"])
    assert fixed.exit_code == 0, fixed.output
    outcome = json.loads(fixed.output[fixed.output.index("{"):])
    (remedy,) = outcome["remedies"] if "remedies" in outcome else outcome["results"]
    assert remedy["fixed"] and remedy["measure"] == "r2"
    assert remedy["train_accuracy"]["remedy"] > 0.5


@pytest.mark.slow
def test_the_shipped_regression_config_reaches_its_headers_r2(tmp_path, monkeypatch):
    diabetes(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(CONFIGS / "regression-csv.yaml"), "--seeds", "3", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    # the header: test R^2 0.53 +- 0.02 over seeds 0-2
    assert 0.46 <= summary["mean"]["test_r2"] <= 0.56 and summary["std"]["test_r2"] < 0.06
    assert summary["verdicts"] == ["good-fit"]


# ---------------------------------------------------------------- the rest follows the task


def test_data_inspect_prints_the_targets_statistics(tmp_path):
    path, _, _ = table(tmp_path, n=200)
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"data: {{dataset: csv, path: {path}, task: regression}}\n")
    result = CliRunner().invoke(app, ["data", "inspect", str(cfg)])
    assert result.exit_code == 0, result.output
    ds = load(regression_cfg(path).data, 0)
    y = unstandardize(ds.train.y, ds.target_mean, ds.target_std)
    row = next(line for line in result.output.splitlines() if "train" in line and "│" in line)
    assert f"{y.mean():.4g}" in row and f"{y.std():.4g}" in row and f"{y.min():.4g}" in row and f"{y.max():.4g}" in row
    assert "classes" not in result.output


def test_early_stopping_maximizes_val_r2_and_tracking_names_the_metrics():
    from dnnlab.tracking import scalars
    from dnnlab.train.loop import EarlyStopping

    stopper = EarlyStopping(config.validate({}).train.early_stopping, monitor="val_r2")
    assert stopper.update(1, 0.2) and stopper.update(2, 0.5) and not stopper.update(3, 0.4)
    assert stopper.best_epoch == 2
    tags = scalars({"epoch": 1, "train_loss": 0.4, "train_r2": 0.6, "val_mse": 12.0, "test_mae": 3.0})
    assert tags == {"loss/train": 0.4, "r2/train": 0.6, "mse/val": 12.0, "mae/test": 3.0}


def test_check_expects_an_initial_loss_near_1(tmp_path):
    from dnnlab.smoke import run_checks

    path, _, _ = table(tmp_path, n=120)
    cfg = regression_cfg(path, **{"model.hidden": [16]})
    checks = run_checks(cfg, load(cfg.data, 0))
    assert [c.ok for c in checks] == [True] * 4, [c.detail for c in checks]
    assert checks[0].name == "initial loss near 1 (standardized targets)"
    assert "MAE" in checks[2].detail


def test_one_tasks_thresholds_set_under_the_other_are_warned_about():
    raw = {"data": {"dataset": "csv", "path": "t.csv", "task": "regression"}, "diagnosis": {"overfit_gap": 0.2}}
    assert any("diagnosis.overfit_gap" in w and "classification threshold" in w for w in config.config_warnings(config.validate(raw), raw))
    raw = {"diagnosis": {"chance_r2": 0.1}}
    assert any("diagnosis.chance_r2" in w and "regression threshold" in w for w in config.config_warnings(config.validate(raw), raw))
    raw = {"data": {"dataset": "csv", "path": "t.csv", "task": "regression"}, "diagnosis": {"chance_r2": 0.1}}
    assert config.config_warnings(config.validate(raw), raw) == []


def test_mc_dropout_of_a_linear_regression_averages_to_weight_scaling():
    """A linear net (depth 0) with input dropout: weight scaling is the exact mean of the thinned
    nets, so the MC average of many masks approaches it; both scored against NumPy."""
    import jax

    from dnnlab import models
    from dnnlab.checkpoints import flatten_params
    from dnnlab.evaluate import mc_dropout

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.2 * rng.normal(size=400)).astype(np.float32)
    ds = Dataset("npz", Split(x[:200], y[:200]), None, Split(x[200:], y[200:]), 1, "t", task="regression",
                 target_mean=10.0, target_std=3.0)
    cfg = rcfg(**{"model.depth": 0, "model.input_dropout": 0.2})
    arrays = flatten_params(models.build(cfg.model, ds.input_shape, 1).init(jax.random.PRNGKey(0)))
    w, b = (np.asarray(a, np.float64) for k, a in sorted(arrays.items(), key=lambda kv: not kv[0].endswith(".w")))
    out = mc_dropout(cfg, ds, arrays, 256)
    pred = (x[200:].astype(np.float64) @ w + b)[:, 0] * 3.0 + 10.0
    true = y[200:].astype(np.float64) * 3.0 + 10.0
    ws = out["weight_scaling"]
    assert math.isclose(ws["mse"], np.mean((pred - true) ** 2), rel_tol=1e-5)
    assert math.isclose(ws["r2"], 1 - np.mean((pred - true) ** 2) / np.var(true), rel_tol=1e-5, abs_tol=1e-6)
    assert [r["k"] for r in out["mc"]][-1] == 256
    # one thinned net adds its own variance; 256 of them averaged come within 5% of weight scaling
    assert out["mc"][0]["mse"] > ws["mse"]
    assert abs(out["mc"][-1]["mse"] - ws["mse"]) < 0.05 * ws["mse"]
