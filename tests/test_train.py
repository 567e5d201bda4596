"""Training end to end on the embedded digits: activations with parameters, determinism, early
stopping, the compiled programs and their store. A diverging run is held once, through the CLI on
the shipped huge-lr recipe (test_recipe.py); Ctrl-C in test_cli.py and test_faults.py."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnnlab import config, models, optim, train
from dnnlab.config import EarlyStoppingConfig
from dnnlab.runs import CLASS_METRICS, METRICS, Writer, read_metrics
from conftest import make_cfg

SMALL = {"model.hidden": [64], "train.epochs": 6, "data.batch_size": 64}


class Recorder(Writer):
    def __init__(self):
        self.epochs, self.summary, self.checkpoints, self.steps = [], None, [], []

    def write(self, epoch, metrics):
        self.epochs.append((epoch, metrics))

    def checkpoint(self, tag, arrays):
        self.checkpoints.append(tag)

    def progress(self, epoch, step):
        self.steps.append((epoch, step))

    def finish(self, summary):
        self.summary = summary


# The other activations' math is held by their oracle tests (test_model.py) and the optimizers' by
# the quadratic and hand-computed steps (test_optim.py); these two carry parameters of their own
# (PReLU's slopes, Maxout's pieces) through a whole compiled run.
@pytest.mark.parametrize("activation", ["prelu", "maxout"])
def test_activations_with_parameters_of_their_own_train_digits_well_above_chance(digits, activation):
    cfg = make_cfg(**{**SMALL, "model.activation": activation, "optimizer.lr": 0.003})
    result = train.fit(cfg, digits, progress=False)
    assert result.summary["status"] == "completed"
    assert result.summary["final"]["train_accuracy"] > 0.85  # chance is 0.1
    assert result.summary["final"]["test_accuracy"] > 0.8


def test_metrics_records_and_summary(digits):
    rec = Recorder()
    cfg = make_cfg(**SMALL)
    result = train.fit(cfg, digits, rec)
    epochs = [e for e, _ in rec.epochs]
    assert epochs == list(range(0, 7))
    init = rec.epochs[0][1]
    assert init["train_loss"] == pytest.approx(math.log(10), rel=0.3)  # near ln(C) at initialization
    for key in METRICS + ("lr", "seconds"):
        assert key in rec.epochs[-1][1]
    assert rec.epochs[-1][1]["lr"] == pytest.approx(0.001)
    s = result.summary
    assert s["status"] == "completed" and s["epochs_run"] == 6 and s["params"] == 64 * 64 + 64 + 64 * 10 + 10
    assert set(s["final"]) == set(METRICS + CLASS_METRICS) and s["best_epoch"] in range(1, 7)
    # balanced classes: the records are the six metrics, never the evaluation's per-class sums
    assert not any("balanced" in k or "class_" in k for k in rec.epochs[-1][1])
    assert s["final"]["val_balanced_accuracy"] == pytest.approx(sum(s["per_class"]["recall"]["val"]) / 10)
    assert s["device"].startswith(jax.devices()[0].platform)
    assert rec.checkpoints.count("last") == 6 and "best" in rec.checkpoints
    # the training loss is the evaluation-mode loss on the whole training set
    x, y = jnp.asarray(digits.train.x), jnp.asarray(digits.train.y)
    loss, acc = train.evaluate(result.params, x, y, model=models.build(cfg.model, 64, 10), chunk=100)
    assert float(loss) == pytest.approx(s["final"]["train_loss"], rel=1e-5)
    assert float(acc) == pytest.approx(s["final"]["train_accuracy"], rel=1e-6)
    # progress within an epoch: the first epoch in slices (a twentieth of it each), the steps done
    # after each; the slices are one program, so the numbers equal those of a run without progress
    steps = math.ceil(len(digits.train) / 64)
    first = [st for e, st in rec.steps if e == 1]
    assert len(first) > 1 and first == sorted(set(first)) and first[-1] == steps, first
    assert {st for e, st in rec.steps if e == 6} >= {steps}
    quiet = train.fit(cfg, digits, progress=False).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(quiet) == strip(result.history)


def test_same_config_and_seed_give_identical_metrics(digits):
    cfg = make_cfg(**{**SMALL, "model.dropout": 0.3, "model.input_dropout": 0.1})
    a = train.fit(cfg, digits, progress=False).history
    b = train.fit(cfg, digits, progress=False).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(a) == strip(b)
    c = train.fit(make_cfg(**{**SMALL, "model.dropout": 0.3, "model.input_dropout": 0.1, "seed": 1}), digits, progress=False).history
    assert strip(a) != strip(c)


def test_partial_last_batch_is_padded_with_zero_weight():
    cfg = make_cfg(**{"model.hidden": [8]})
    model = models.build(cfg.model, 4, 3)
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    y = jnp.array([0, 1, 2, 0, 1])
    reg = cfg.regularization
    real = train.loss_fn(params, None, x[:3], y[:3], jnp.ones(3), None, model=model, reg=reg)[0]
    padded = train.loss_fn(params, None, x, y, jnp.array([1.0, 1, 1, 0, 0]), None, model=model, reg=reg)[0]
    assert float(real) == pytest.approx(float(padded), rel=1e-6)


@pytest.mark.parametrize(
    "monitor, values, min_delta, patience, stop_at, best",
    [
        ("val_loss", [1.0, 0.9, 0.95, 0.91, 0.92], 0.0, 3, 5, 2),
        ("val_loss", [1.0, 0.9, 0.89, 0.885, 0.88], 0.05, 2, 4, 2),  # gains below min_delta do not count
        ("val_accuracy", [0.5, 0.7, 0.6, 0.8, 0.7, 0.7], 0.0, 2, 6, 4),
        ("val_loss", [1.0, float("nan"), 0.9], 0.0, 2, None, 3),  # NaN never improves; not yet patience
    ],
)
def test_early_stopping_follows_keras(monitor, values, min_delta, patience, stop_at, best):
    stopper = train.EarlyStopping(EarlyStoppingConfig(enabled=True, monitor=monitor, patience=patience, min_delta=min_delta))
    stopped = None
    for epoch, value in enumerate(values, start=1):
        stopper.update(epoch, value)
        if stopper.should_stop and stopped is None:
            stopped = epoch
    assert stopped == stop_at and stopper.best_epoch == best


def test_early_stopping_restores_the_best_weights(digits):
    cfg = make_cfg(**{
        "model.hidden": [256], "data.train_size": 150, "train.epochs": 60, "optimizer.lr": 0.003,
        "train.early_stopping.enabled": True, "train.early_stopping.patience": 3,
    })
    result = train.fit(cfg, digits, progress=False)
    s = result.summary
    assert s["status"] == "stopped_early" and s["epochs_run"] < 60
    assert s["best_epoch"] == s["epochs_run"] - 3 and s["restored_best"] is True
    model = models.build(cfg.model, 64, 10)
    val_loss, _ = train.evaluate(result.params, jnp.asarray(digits.val.x), jnp.asarray(digits.val.y), model=model, chunk=512)
    assert float(val_loss) == pytest.approx(s["best"]["val_loss"], rel=1e-5)
    assert s["best"]["val_loss"] == min(r["val_loss"] for r in result.history[1:])


def test_without_validation_the_best_epoch_follows_the_training_loss():
    from dnnlab import data

    ds = data.load(config.DataConfig(validation_split=0.0), 0)
    result = train.fit(make_cfg(**{**SMALL, "data.validation_split": 0.0}), ds, progress=False)
    s = result.summary
    assert s["monitor"] == "train_loss" and s["final"]["val_loss"] is None
    assert "val_loss" not in result.history[-1]
    assert s["best"]["train_loss"] == min(r["train_loss"] for r in result.history[1:])


def test_dropout_masks_are_resampled_every_step():
    cfg = make_cfg(**{"model.hidden": [32], "model.dropout": 0.5, "optimizer.name": "sgd", "optimizer.lr": 1e-12})
    model = models.build(cfg.model, 4, 3)
    params = model.init(jax.random.PRNGKey(0))
    tx = optim.make_optimizer(cfg.optimizer, cfg.regularization, steps_per_epoch=1, epochs=1)[0]
    x, y, w = jax.random.normal(jax.random.PRNGKey(1), (8, 4)), jnp.arange(8) % 3, jnp.ones(8)
    key = jax.random.PRNGKey(5)
    losses = []
    for step in (0, 1, 0):
        state = train.TrainState(params, tx.init(params), jnp.asarray(step, jnp.int32))
        losses.append(float(train.train_step(state, x, y, w, key, model=model, tx=tx, reg=cfg.regularization)[1]["ce_sum"]))
    assert losses[0] != losses[1] and losses[0] == losses[2]  # same key: the step alone picks the mask


def test_train_eval_size_measures_on_a_fixed_subset(digits):
    cfg = make_cfg(**{**SMALL, "train.epochs": 1, "train.train_eval_size": 200})
    result = train.fit(cfg, digits, progress=False)
    assert result.summary["data"]["train_eval"] == 200 and result.summary["data"]["train"] == len(digits.train)
    subset = np.sort(np.random.default_rng(cfg.seed + 1).permutation(len(digits.train))[:200])
    model = models.build(cfg.model, digits.input_shape, 10)
    loss, _ = train.evaluate(result.params, jnp.asarray(digits.train.x[subset]), jnp.asarray(digits.train.y[subset]), model=model, chunk=64)
    assert float(loss) == pytest.approx(result.summary["final"]["train_loss"], rel=1e-5)


def test_a_small_cnn_trains_digits_and_its_instruments_see_the_conv_layers(digits):
    cfg = make_cfg(**{"model.arch": "cnn", "model.channels": [8, 16], "model.depth": 1, "model.width": 32,
                      "train.epochs": 4, "optimizer.lr": 0.003, "data.batch_size": 64})
    result = train.fit(cfg, digits, progress=False)
    assert result.summary["final"]["train_accuracy"] > 0.85
    last = result.history[-1]
    assert len(last["grad_rms"]) == 4 and len(last["dead_fraction"]) == 3  # 2 conv + 1 dense (+ classifier)
    assert result.params["conv"][1]["w"].shape == (3, 3, 8, 16)


def test_the_stepwise_loop_gives_the_same_run_as_the_scan(digits):
    base = {**SMALL, "train.epochs": 3, "model.dropout": 0.2}
    scan = train.fit(make_cfg(**{**base, "train.loop": "scan"}), digits, progress=False).history
    steps = train.fit(make_cfg(**{**base, "train.loop": "steps"}), digits, progress=False).history
    for a, b in zip(scan, steps):
        for key in METRICS + ("running_loss",):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=2e-4, abs=1e-6), key


def test_a_quickstart_run_compiles_a_handful_of_programs(tmp_path):
    """One run compiles its init, epoch, evaluation and probes once each (not per epoch, not op by
    op); the linear reference adds its own three. Counted in a fresh process from jax.monitoring's
    backend-compile events."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import json, sys
        import jax.monitoring
        from typer.testing import CliRunner
        from dnnlab.cli import app
        counts = []
        jax.monitoring.register_event_duration_secs_listener(
            lambda name, d, **kw: counts.append(name) if name == "/jax/core/compile/backend_compile_duration" else None)
        out = []
        for reference in ("none", "linear"):
            counts.clear()
            r = CliRunner().invoke(app, ["run", "configs/quickstart.yaml", "--out", sys.argv[1], "--quiet",
                                         "--set", "train.epochs=6", "--set", f"diagnosis.reference={reference}",
                                         "--set", f"seed={len(out)}"])
            assert r.exit_code == 0, r.output
            out.append(len(counts))
        print(json.dumps(out))
        """
    )
    env = {**__import__("os").environ, "DNNLAB_CACHE": str(tmp_path / "cache"), "DNNLAB_NO_COMPILE_CACHE": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True)
    alone, with_reference = json.loads(result.stdout.strip().splitlines()[-1])
    assert alone <= 3, alone  # init, epoch, and the evaluation with the instruments: nothing eager
    # the second run reuses nothing from the first but the eager ops' caches: its own programs
    # and the reference's (init, epoch, evaluation)
    assert with_reference <= alone + 3, (alone, with_reference)


def test_the_persistent_compilation_cache_serves_a_second_process(tmp_path):
    """A rerun in a new process loads its programs from <cache>/programs (dnnlab's own store:
    no tracing, no lowering, no compiling), with the same metrics; DNNLAB_NO_COMPILE_CACHE=1
    writes no cache."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import json, sys
        import jax.monitoring
        from typer.testing import CliRunner
        from dnnlab.train import stored
        from dnnlab.cli import app
        counts = {"hits": 0, "stored": 0, "compiles": 0}
        def listen(name, **kw):
            key = {stored.HIT: "hits", stored.STORED: "stored"}.get(name)
            if key:
                counts[key] += 1
        jax.monitoring.register_event_listener(listen)
        jax.monitoring.register_event_duration_secs_listener(
            lambda name, d, **kw: counts.update(compiles=counts["compiles"] + 1) if name == "/jax/core/compile/backend_compile_duration" else None)
        r = CliRunner().invoke(app, ["run", "configs/quickstart.yaml", "--out", sys.argv[1], *sys.argv[2:],
                                     "--set", "train.epochs=3", "--set", "diagnosis.reference=none"])
        assert r.exit_code == 0, r.output
        print(json.dumps(counts))
        """
    )

    def run(out, *args, **env):
        full = {**os.environ, "DNNLAB_CACHE": str(tmp_path / "cache"), **env}
        result = subprocess.run([sys.executable, "-c", code, str(out), *args], capture_output=True, text=True, env=full, check=True)
        (run_dir,) = out.iterdir()
        return json.loads(result.stdout.strip().splitlines()[-1]), read_metrics(run_dir)

    def same(a, b):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in a] == [{k: v for k, v in r.items() if k != "seconds"} for r in b]

    off, off_metrics = run(tmp_path / "off", "--quiet", DNNLAB_NO_COMPILE_CACHE="1")
    assert not (tmp_path / "cache" / "xla").exists() and not (tmp_path / "cache" / "programs").exists()
    cold, cold_metrics = run(tmp_path / "cold", "--quiet")
    assert len(list((tmp_path / "cache" / "xla").iterdir())) >= 3
    # the rerun shows its progress (as a run without --quiet does): its epoch, run in slices,
    # is the same program, and one without a host callback (which could never be kept)
    warm, warm_metrics = run(tmp_path / "warm")
    # init, epoch, and the evaluation with the instruments: compiled and stored on the first run,
    # loaded on the second, which compiles at most the odd eager operation
    assert off["hits"] == off["stored"] == 0 and off["compiles"] >= 3, off
    assert cold["hits"] == 0 and cold["stored"] >= 3, cold
    assert warm["hits"] >= 3 and warm["stored"] == 0 and warm["compiles"] <= cold["compiles"] - 3, (cold, warm)
    assert same(off_metrics, cold_metrics) and same(cold_metrics, warm_metrics)


def test_stored_programs_are_keyed_by_what_shapes_them_and_a_damaged_one_is_compiled_again(digits, tmp_path, monkeypatch):
    """dnnlab's program store (<cache>/programs): a run that differs only in injected numbers (the
    learning rate) loads the programs of an earlier one; a new width stores new ones; a damaged
    file is deleted and its program compiled again, with the same numbers."""
    import jax.monitoring

    from dnnlab.train import stored

    monkeypatch.setenv("DNNLAB_CACHE", str(tmp_path / "cache"))
    events: list[str] = []
    listen = lambda name, **kw: events.append(name) if name in (stored.HIT, stored.STORED) else None  # noqa: E731
    folder = tmp_path / "cache" / "programs"

    def fit(**dotted):
        train.clear_programs()  # as a new process would: nothing reused in memory
        del events[:]
        cfg = make_cfg(**{**SMALL, "train.epochs": 2, "model.hidden": [32], **dotted})
        history = train.fit(cfg, digits, progress=False).history
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history], events.count(stored.HIT), events.count(stored.STORED)

    jax.monitoring.register_event_listener(listen)
    try:
        first, hits, written = fit(**{"optimizer.lr": 0.01})
        assert (hits, written) == (0, 3)
        files = sorted(folder.iterdir())
        again, hits, written = fit(**{"optimizer.lr": 0.01})
        assert (hits, written) == (3, 0) and again == first
        other_lr, hits, written = fit(**{"optimizer.lr": 0.02})
        assert (hits, written) == (3, 0) and other_lr != first and sorted(folder.iterdir()) == files
        _, hits, written = fit(**{"model.hidden": [16]})
        assert (hits, written) == (0, 3) and len(list(folder.iterdir())) == 6
        for path in files:
            path.write_bytes(b"not a program")
        # compiled again: JAX's own cache serves the programs, and what it serves is not stored
        # again (an executable loaded from there, serialized once more, lacks kernels)
        repaired, hits, written = fit(**{"optimizer.lr": 0.01})
        assert (hits, written) == (0, 0) and repaired == first
        assert not any(path.exists() for path in files)
    finally:
        jax.monitoring.unregister_event_listener(listen)
        train.clear_programs()


def test_runs_that_differ_only_in_optimizer_numbers_share_their_compiled_programs(digits, tmp_path, monkeypatch):
    """The learning rate, momentum, eps and weight decay reach the compiled programs as values
    in the optimizer state: after the first run of a cold cache, three more learning rates (and a
    momentum) compile nothing new, and each still trains with its own numbers."""
    import jax.monitoring

    monkeypatch.setenv("DNNLAB_CACHE", str(tmp_path / "cold"))
    requests: list[str] = []
    hits: list[str] = []

    def listen(name, **kwargs):
        (requests if name.endswith("compile_requests_use_cache") else hits if name.endswith("cache_hits") else []).append(name)

    jax.monitoring.register_event_listener(listen)
    misses, losses = [], []
    try:
        for lr, momentum in ((0.05, 0.9), (0.1, 0.9), (0.2, 0.9), (0.1, 0.5)):
            before = len(requests) - len(hits)
            cfg = make_cfg(**{"optimizer.name": "momentum", "optimizer.lr": lr, "optimizer.momentum": momentum,
                              "regularization.weight_decay": 1e-3, "train.epochs": 2, "model.width": 32})
            result = train.fit(cfg, digits, progress=False)
            misses.append(len(requests) - len(hits) - before)
            losses.append(result.history[-1]["train_loss"])
            assert result.history[-1]["lr"] == pytest.approx(lr)
    finally:
        jax.monitoring.unregister_event_listener(listen)
    assert misses[0] >= 3 and misses[1:] == [0, 0, 0], misses
    assert len(set(losses)) == 4, losses  # each run trained with its own numbers


def _backend_compile_count(fn) -> tuple[int, object]:
    import jax.monitoring

    names: list[str] = []

    def listen(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", ""))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        out = fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return len(names), out


def test_a_learning_rate_sweep_in_one_process_compiles_its_programs_once(digits, monkeypatch):
    """Runs that differ only in injected numbers reuse the programs of the one before them in
    the same process (no tracing, no cache lookup; DNNLAB_NO_COMPILE_CACHE=1 here), and a
    reused program gives the same numbers, bit for bit, as freshly built ones."""
    monkeypatch.setenv("DNNLAB_NO_COMPILE_CACHE", "1")
    train.clear_programs()
    base = {"model.width": 48, "train.epochs": 2, "optimizer.name": "adam"}
    counts, histories = [], []
    for lr in (1e-3, 3e-3, 1e-2, 3e-2):
        n, result = _backend_compile_count(lambda lr=lr: train.fit(make_cfg(**{**base, "optimizer.lr": lr}), digits, progress=False))
        counts.append(n)
        histories.append([{k: v for k, v in r.items() if k != "seconds"} for r in result.history])
    assert counts[0] >= 3 and counts[1:] == [0, 0, 0], counts
    assert len({h[-1]["train_loss"] for h in histories}) == 4
    train.clear_programs()  # the third lr again, from new programs
    fresh = train.fit(make_cfg(**{**base, "optimizer.lr": 1e-2}), digits, progress=False).history
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in fresh] == histories[2]
    # a change that is not an injected number builds new programs
    n, _ = _backend_compile_count(lambda: train.fit(make_cfg(**{**base, "model.dropout": 0.1}), digits, progress=False))
    assert n >= 2


def test_initialization_compiled_for_speed_gives_the_same_bits(digits):
    """The init program is compiled at LLVM -O1 on the CPU (half the compile time of the
    default level): the parameters and optimizer state are the same bits as at the default."""
    from functools import partial

    for dotted in ({}, {"model.activation": "maxout"}, {"model.norm": "batch", "model.activation": "sigmoid"},
                   {"model.arch": "cnn", "model.channels": [4], "model.depth": 1}):
        cfg = make_cfg(**{"model.width": 32, **dotted})
        setup = train.prepare(cfg, digits)
        values = {k: np.float32(v) for k, v in optim.hyperparameters(cfg.optimizer, cfg.regularization).items()}
        init = partial(train.init_state, model=setup.model, tx=setup.tx)
        default = jax.tree_util.tree_leaves(jax.jit(init)(np.int32(7), values))
        once = jax.tree_util.tree_leaves(jax.jit(init, compiler_options=train.ONCE_OPTIONS)(np.int32(7), values))
        assert len(default) == len(once) > 4
        for a, b in zip(default, once):
            assert np.array_equal(np.asarray(a), np.asarray(b)), dotted


def test_the_program_store_keys_every_source_file_of_the_package_subpackages_included(tmp_path):
    """A compiled program is kept under a digest of dnnlab's source: an edit of a module in a
    subpackage (dnnlab/train/step.py, dnnlab/config/schema.py) changes it, so the store never serves a
    program compiled from other code; a file that is not Python does not."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import dnnlab

    copy = tmp_path / "dnnlab"
    shutil.copytree(Path(dnnlab.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))

    def digest() -> str:
        code = "from dnnlab.train import stored; print(stored._source())"
        env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.strip()

    before = digest()
    (copy / "notes.txt").write_text("not source")
    assert digest() == before
    seen = {before}
    for module in ("train/step.py", "config/schema.py", "models.py"):
        with open(copy / module, "a") as fh:
            fh.write("\n# an edit\n")
        seen.add(digest())
    assert len(seen) == 4
