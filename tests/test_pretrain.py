"""Greedy layer-wise RBM pretraining (`model.pretrain: rbm`): CD-k against NumPy with the same
draws, the reconstruction error falling on the digits, the RBMs' weights in their layers, the
seed's bits, resuming a run killed while pretraining, and the config's refusals."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from dnnlab import config, models, runs, train

from dnnlab.train import pretrain
from dnnlab.cli import app
from conftest import make_cfg

runner = CliRunner()
SMALL = {"model": {"depth": 3, "width": 32, "activation": "sigmoid", "pretrain": "rbm"},
         "optimizer": {"name": "sgd", "lr": 0.1}, "pretrain": {"epochs": 2}, "diagnosis": {"reference": "none"}}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_cd(w, b, c, v0, weight, uniforms):
    """CD-k in NumPy, the textbook way: sample h0, reconstruct p(v|h), p(h|v) k times."""
    ph0 = sigmoid(v0 @ w + c)
    h = (uniforms[0] < ph0).astype(np.float64)
    for i in range(len(uniforms)):
        pv = sigmoid(h @ w.T + b)
        if i == 0:
            error = np.sum(weight[:, None] * (v0 - pv) ** 2)
        ph = sigmoid(pv @ w + c)
        if i + 1 < len(uniforms):
            h = (uniforms[i + 1] < ph).astype(np.float64)
    n = weight.sum()
    dw = ((v0 * weight[:, None]).T @ ph0 - (pv * weight[:, None]).T @ ph) / n  # <v h>_data - <v h>_model
    db = np.sum(weight[:, None] * (v0 - pv), axis=0) / n
    dc = np.sum(weight[:, None] * (ph0 - ph), axis=0) / n
    return dw, db, dc, error


@pytest.mark.parametrize("k", [1, 3])
def test_cd_gradients_equal_numpy_with_the_same_draws(k):
    rng = np.random.default_rng(0)
    w, b, c = rng.normal(0, 0.5, (5, 3)), rng.normal(0, 0.3, 5), rng.normal(0, 0.3, 3)
    v0 = rng.random((4, 5))
    weight = np.array([1.0, 1.0, 1.0, 0.0])  # the padding of a last, partial batch counts nowhere
    uniforms = rng.random((k, 4, 3))
    rbm = pretrain.RBM(*(jnp.asarray(a, jnp.float32) for a in (w, b, c)))
    grads, error = pretrain.cd_gradients(rbm, jnp.asarray(v0, jnp.float32), jnp.asarray(weight, jnp.float32), jnp.asarray(uniforms, jnp.float32))
    dw, db, dc, err = numpy_cd(w, b, c, v0, weight, uniforms)
    # the gradient of a loss: minus the CD statistic
    np.testing.assert_allclose(grads.w, -dw, atol=1e-6)
    np.testing.assert_allclose(grads.visible, -db, atol=1e-6)
    np.testing.assert_allclose(grads.hidden, -dc, atol=1e-6)
    assert float(error) == pytest.approx(err, rel=1e-5)
    padded = numpy_cd(w, b, c, v0[:3], weight[:3], uniforms[:, :3])
    np.testing.assert_allclose(grads.w, -padded[0], atol=1e-6)  # as if the padded row were not there


def test_one_cd1_update_of_the_compiled_epoch_equals_numpy():
    """One epoch of one batch: the draws are those `rbm_epoch` documents (the epoch's key split
    into the order's and the draws', the step's uniforms folded from the latter)."""
    rng = np.random.default_rng(1)
    w, b, c = rng.normal(0, 0.5, (6, 4)), rng.normal(0, 0.3, 6), np.zeros(4)
    v = (rng.random((5, 6)) < 0.4).astype(np.float32)
    lr, seed, layer, epoch = 0.3, 7, 1, 2
    rbm = pretrain.RBM(*(jnp.asarray(a, jnp.float32) for a in (w, b, c)))
    out, error = pretrain.rbm_epoch(rbm, jnp.asarray(v), np.int32(seed), np.int32(layer), np.int32(epoch), np.float32(lr), k=1, batch_size=5)
    order_key, draw_key = jax.random.split(pretrain.pretrain_key(seed, layer, epoch))
    order = np.asarray(jax.random.permutation(order_key, 5))
    uniforms = np.asarray(jax.random.uniform(jax.random.fold_in(draw_key, 0), (1, 5, 4)), np.float64)
    dw, db, dc, err = numpy_cd(w, b, c, v[order].astype(np.float64), np.ones(5), uniforms)
    np.testing.assert_allclose(out.w, w + lr * dw, atol=1e-6)
    np.testing.assert_allclose(out.visible, b + lr * db, atol=1e-6)
    np.testing.assert_allclose(out.hidden, c + lr * dc, atol=1e-6)
    assert float(error) == pytest.approx(err / v.size, rel=1e-5)


def test_the_reconstruction_error_falls_over_a_few_epochs_on_the_digits(digits):
    settings = config.PretrainConfig(epochs=6)
    w0 = jax.nn.initializers.glorot_uniform()(jax.random.PRNGKey(0), (64, 32), jnp.float32)
    _, errors, seconds = pretrain.train_rbm(w0, jax.device_put(digits.train.x), seed=0, layer=0, settings=settings)
    assert len(errors) == len(seconds) == 6 and all(np.isfinite(errors)) and all(t > 0 for t in seconds)
    assert errors[-1] < 0.6 * errors[0] and all(b < a for a, b in zip(errors[:3], errors[1:4])), errors


def _initial_params(cfg, digits, plan=None):
    model = models.build(cfg.model, digits.input_shape, digits.num_classes, plan)
    return model, jax.jit(model.init)(jax.random.split(jax.random.PRNGKey(cfg.seed), 3)[0])


def test_each_rbm_initializes_its_own_layer_and_the_classifier_keeps_its_init(digits):
    cfg = config.validate(SMALL)
    _, params = _initial_params(cfg, digits)
    pretrained, record = pretrain.pretrain(params, digits.train.x, cfg, cfg.seed)
    # the RBMs by hand: the first on the inputs, the next on the first's hidden probabilities
    x = jax.device_put(digits.train.x)
    first, *_ = pretrain.train_rbm(params["hidden"][0]["w"], x, cfg.seed, 0, cfg.pretrain)
    second, *_ = pretrain.train_rbm(params["hidden"][1]["w"], pretrain.hidden_probabilities(first.w, first.hidden, x), cfg.seed, 1, cfg.pretrain)
    np.testing.assert_array_equal(pretrained["hidden"][0]["w"], first.w)
    np.testing.assert_array_equal(pretrained["hidden"][0]["b"], first.hidden)
    np.testing.assert_allclose(pretrained["hidden"][1]["w"], second.w, atol=1e-6)
    assert not np.allclose(pretrained["hidden"][2]["w"], params["hidden"][2]["w"])
    np.testing.assert_array_equal(pretrained["out"]["w"], params["out"]["w"])
    np.testing.assert_array_equal(pretrained["out"]["b"], params["out"]["b"])
    assert [(layer["visible"], layer["hidden"], len(layer["reconstruction_error"])) for layer in record["layers"]] == [(64, 32, 2), (32, 32, 2), (32, 32, 2)]
    assert record["epochs"] == 2 and record["cd_steps"] == 1 and record["seconds"] > 0
    # a scanned stack holds the same layers, stacked
    plan = models.plan_stack(cfg.model, "scanned")
    _, scanned = _initial_params(cfg, digits, plan)
    restacked, _ = pretrain.pretrain(scanned, digits.train.x, cfg, cfg.seed)
    assert "stack" in restacked
    np.testing.assert_array_equal(models.unstack_params(restacked)["hidden"][2]["w"], pretrained["hidden"][2]["w"])
    # the same seed, the same bits; another seed, other draws
    again, _ = pretrain.pretrain(params, digits.train.x, cfg, cfg.seed)
    other, _ = pretrain.pretrain(params, digits.train.x, cfg, cfg.seed + 1)
    np.testing.assert_array_equal(again["hidden"][2]["w"], pretrained["hidden"][2]["w"])
    assert not np.array_equal(other["hidden"][0]["w"], pretrained["hidden"][0]["w"])


def test_fit_starts_from_the_pretrained_weights_and_records_them(digits):
    cfg = config.validate({**SMALL, "train": {"epochs": 1}, "diagnosis": {"reference": "none", "instruments": False}})
    model, params = _initial_params(cfg, digits)
    pretrained, _ = pretrain.pretrain(params, digits.train.x, cfg, cfg.seed)
    loss, acc = train.evaluate(pretrained, jax.device_put(digits.train.x), jax.device_put(digits.train.y), model=model, chunk=2048)
    result = train.fit(cfg, digits, progress=False)
    # epoch 0 is the model before fine-tuning: the pretrained one, not the ordinary init
    assert result.history[0]["train_loss"] == pytest.approx(float(loss), rel=1e-6)
    assert result.history[0]["train_accuracy"] == pytest.approx(float(acc), abs=1e-9)
    plain = train.fit(cfg.model_copy(update={"model": cfg.model.model_copy(update={"pretrain": "none"})}), digits, progress=False)
    assert plain.history[0]["train_loss"] != pytest.approx(result.history[0]["train_loss"], rel=1e-3)
    assert "pretrain" not in plain.summary
    record = result.summary["pretrain"]
    assert record["method"] == "rbm" and [layer["layer"] for layer in record["layers"]] == [1, 2, 3]


def _run(tmp_path, name, *extra):
    (tmp_path / "cfg.yaml").write_text(json.dumps({**SMALL, "name": "p", "logging": {"tensorboard": False}}))
    result = runner.invoke(app, ["run", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / name), "--quiet", "--set", "train.epochs=3", *extra])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / name).iterdir()
    return folder


def test_a_run_killed_while_pretraining_starts_again_and_one_killed_later_resumes(tmp_path):
    reference = _run(tmp_path, "full", "--keep-state")  # its copies resume as if killed
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["pretrain"]["layers"][0]["reconstruction_error"] and (reference / "pretrain.png").exists()
    assert "pretrain.png" in (reference / "report.md").read_text()
    same = lambda a, b: all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()  # noqa: E731
    # killed while pretraining: the folder holds its config and an interrupted summary, no state
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.yaml").write_text((reference / "config.yaml").read_text())
    (cut / "summary.json").write_text(json.dumps({"name": "p", "status": "interrupted", "epochs_run": 0}))
    resumed = runner.invoke(app, ["run", "--resume", str(cut), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert same(runs.load_checkpoint(cut / "last.npz"), runs.load_checkpoint(reference / "last.npz"))
    assert len(runs.read_metrics(cut)) == 4
    # killed after epoch 2: it resumes from the state, and keeps the pretraining's record
    later = tmp_path / "later"
    shutil.copytree(reference, later)
    for name in ("summary.json", "state.npz", "last.npz"):
        (later / name).unlink()
    resumed = runner.invoke(app, ["run", "--resume", str(later), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert same(runs.load_checkpoint(later / "last.npz"), runs.load_checkpoint(reference / "last.npz"))
    assert json.loads((later / "summary.json").read_text())["pretrain"] == summary["pretrain"]
    # a damaged state is never taken for "nothing saved yet": it is refused, not started over
    damaged = tmp_path / "damaged"
    shutil.copytree(reference, damaged)
    (damaged / "summary.json").unlink()
    (damaged / "state.npz").write_bytes(b"not a state")
    (damaged / "state.prev.npz").unlink(missing_ok=True)
    refused = runner.invoke(app, ["run", "--resume", str(damaged)])
    assert refused.exit_code == 2 and "state.npz" in refused.output


@pytest.mark.parametrize("overrides, words", [
    (["model.activation=relu"], "needs sigmoid hidden units (model.activation sigmoid"),
    (["model.arch=cnn"], "an mlp (model.arch mlp), not a cnn"),
    (["model.depth=0"], "at least one hidden layer"),
    (["model.norm=batch"], "not with model.norm batch"),
    (["data.normalize=standard"], "inputs in [0, 1] (data.normalize unit)"),
])
def test_unsupported_models_and_inputs_are_config_errors(overrides, words):
    base = ["model.activation=sigmoid", "model.pretrain=rbm"]
    with pytest.raises(config.ConfigError) as exc:
        config.validate(config.apply_overrides({}, base + overrides))
    assert "model.pretrain: rbm" in str(exc.value) and words in str(exc.value)


def test_an_unsupported_activation_is_exit_2_from_the_cli_naming_the_key(tmp_path):
    result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp_path), "--set", "model.pretrain=rbm"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "model.pretrain: rbm needs sigmoid hidden units" in text and "not relu" in text
    assert not any(tmp_path.iterdir())  # refused before any folder is made


def test_pretrain_settings_without_pretraining_are_a_warning():
    raw = {"pretrain": {"epochs": 5}}
    cfg = config.validate(raw)
    assert config.config_warnings(cfg, raw) == [
        "pretrain.epochs: 5 is ignored: model.pretrain is none (no pretraining); set model.pretrain=rbm"
    ]
    assert make_cfg(**{"model.activation": "sigmoid", "model.pretrain": "rbm"}).pretrain.epochs == config.PRETRAIN_EPOCHS


def test_the_diagnosis_offers_pretraining_after_relu_and_turns_it_off_in_their_place():
    from dnnlab.diagnose import diagnose

    n = 10
    h = [{"epoch": e, "train_loss": 2.33 if e == 0 else 2.31, "train_accuracy": 0.1, "val_loss": 2.31, "val_accuracy": 0.1,
          "grad_ratio": 4e-6, "grad_rms": [1e-8, 1e-6, 1e-4, 1e-2], "update_ratio": [1e-8, 1e-6, 1e-4, 1e-2],
          "saturated_pre_fraction": [0.0, 0.0, 0.0]} for e in range(n + 1)]
    summary = {"status": "completed", "data": {"num_classes": 10}}
    base = {"model": {"activation": "sigmoid", "depth": 10}, "optimizer": {"name": "sgd", "lr": 0.1}}
    d = diagnose(h, config.validate(base), summary)
    assert d.verdict == "failed-training" and d.causes == ["vanishing-gradients"]
    assert [r.set for r in d.remedies][:3] == ["model.activation=relu", "model.norm=batch", "model.pretrain=rbm"]
    assert d.remedies[2].sets == ["model.pretrain=rbm"]
    # every remedy is a valid config
    for r in d.remedies:
        config.validate(config.apply_overrides(base, r.sets))
    # a pretrained net that still fails: the same verdict, and its remedies turn pretraining off
    pre = config.apply_overrides(base, ["model.pretrain=rbm"])
    d = diagnose(h, config.validate(pre), summary)
    assert d.verdict == "failed-training" and d.causes == ["vanishing-gradients"]
    assert "model.pretrain" not in [r.set.split("=")[0] for r in d.remedies]
    assert d.remedies[0].sets == ["model.activation=relu", "optimizer.name=adam", "optimizer.lr=0.001", "model.pretrain=none"]
    for r in d.remedies:
        config.validate(config.apply_overrides(pre, r.sets))
    # not offered where it cannot run: standardized inputs, tanh
    for other in (["data.normalize=standard"], ["model.activation=tanh"]):
        d = diagnose(h, config.validate(config.apply_overrides(base, other)), summary)
        assert "model.pretrain" not in [r.set.split("=")[0] for r in d.remedies]


def test_ctrl_c_while_pretraining_is_an_interrupted_run_with_nothing_to_continue(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    (tmp_path / "cfg.yaml").write_text(json.dumps({**SMALL, "name": "p", "pretrain": {"epochs": 100_000}}))
    env = {**os.environ, "DNNLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "dnnlab", "run", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "runs"), "--quiet"],
                            cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "runs").glob("*/config.yaml")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)  # 100,000 epochs a layer: still pretraining its first layer
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert runs.read_metrics(run) == [] and not (run / "state.npz").exists()
