"""Several seeds of one config: vmapped in one compiled program, or one after another."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from dnnlab import cli, experiment, train
from dnnlab.runs import Writer
from conftest import make_cfg

SMALL = {
    "data.train_size": 400, "model.hidden": [32, 32, 32], "model.dropout": 0.2, "train.epochs": 4,
    "data.batch_size": 64, "train.seeds": 3, "seed": 5,
}


class Recorder(Writer):
    def __init__(self) -> None:
        self.lines: list[dict] = []
        self.summary: dict | None = None

    def write(self, epoch, metrics):
        self.lines.append({"epoch": epoch, **metrics})

    def finish(self, summary):
        self.summary = summary


def run_all(cfg, data, mode):
    writers = [Recorder() for _ in range(cfg.train.seeds)]
    results = train.fit_seeds(cfg, data, writers, progress=False, mode=mode)
    return results, writers


def comparable(record):
    return {k: v for k, v in record.items() if k not in ("seconds",)}


@pytest.mark.parametrize("extra", [{}, {"train.early_stopping.enabled": True, "train.early_stopping.patience": 1, "train.early_stopping.min_delta": 0.1, "train.epochs": 8}])
def test_vmapped_seeds_give_the_same_records_as_sequential_runs(digits, extra):
    cfg = make_cfg(**{**SMALL, **extra})
    vm, vm_writers = run_all(cfg, digits, "vmap")
    sq, sq_writers = run_all(cfg, digits, "sequential")
    assert [r.summary["seed"] for r in vm] == [5, 6, 7] == [r.summary["seed"] for r in sq]
    for a, b in zip(vm_writers, sq_writers):
        assert [r["epoch"] for r in a.lines] == [r["epoch"] for r in b.lines]
        for ra, rb in zip(a.lines, b.lines):
            ra, rb = comparable(ra), comparable(rb)
            assert ra.keys() == rb.keys()
            for key in ra:
                np.testing.assert_allclose(ra[key], rb[key], rtol=2e-4, atol=2e-5, err_msg=key)
        assert a.summary["status"] == b.summary["status"]
        assert a.summary["best_epoch"] == b.summary["best_epoch"]
    if extra:  # early stopping ends the seeds at different epochs
        assert len({r.summary["epochs_run"] for r in vm}) > 1 or any(r.summary["status"] == "stopped_early" for r in vm)
    # the seeds really differ
    finals = [r.summary["final"]["train_loss"] for r in vm]
    assert len({round(f, 6) for f in finals}) == 3
    # the kept parameters too
    for a, b in zip(vm, sq):
        np.testing.assert_allclose(a.params["out"]["w"], b.params["out"]["w"], rtol=1e-3, atol=1e-5)


def test_a_diverging_seed_does_not_stop_the_others(digits):
    # between the two seeds' edges, as far from each as it can be (measured alone, SGD on this
    # net: seed 5 trains at 4.25 and diverges from 4.5, seed 6 trains up to 5.25 and diverges at
    # 5.5): seed 5 diverges in its first epoch, seed 6 trains all four beside it (at lr 30 both
    # diverged, and the test held nothing)
    cfg = make_cfg(**{**SMALL, "optimizer.lr": 4.9, "optimizer.name": "sgd", "model.activation": "relu", "train.seeds": 2})
    results, _ = run_all(cfg, digits, "vmap")
    sequential, _ = run_all(cfg, digits, "sequential")
    assert [(r.summary["status"], r.summary["epochs_run"]) for r in results] == [("diverged", 1), ("completed", 4)]
    assert [r.summary["status"] for r in results] == [r.summary["status"] for r in sequential]
    assert [r.summary["epochs_run"] for r in results] == [r.summary["epochs_run"] for r in sequential]


def test_seed_mode_choice():
    assert experiment.seeds_mode(make_cfg(**{"train.seeds": 1})) == "sequential"
    small = make_cfg(**{"train.seeds": 8, "model.hidden": [100, 100]})
    assert experiment.seeds_mode(small, "cpu") == "vmap" and experiment.seeds_mode(small, "gpu") == "vmap"
    big = make_cfg(**{"train.seeds": 8, "model.hidden": [500, 500]})
    assert experiment.seeds_mode(big, "cpu") == "sequential" and experiment.seeds_mode(big, "gpu") == "vmap"
    assert experiment.seeds_mode(make_cfg(**{"train.seeds": 8, "train.seed_mode": "vmap", "model.hidden": [500]}), "cpu") == "vmap"
    # the per-step loop of convolutional nets is not vmapped
    assert experiment.seeds_mode(make_cfg(**{"train.seeds": 8, "model.arch": "cnn", "data.dataset": "digits"}), "gpu") == "sequential"


def test_run_with_seeds_writes_one_folder_per_seed_and_the_mean_and_std(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("name: multi\ndata: {train_size: 300}\nmodel: {hidden: [16]}\ntrain: {epochs: 2}\n")
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli.app, ["run", str(cfg_path), "--seeds", "3", "--out", str(out)], env={"DNNLAB_LOG_EVERY": "0"})
    assert result.exit_code == 0, result.output
    (run_dir,) = list(out.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    # not a terminal: every seed's epochs as lines that name the seed (vmapped, an epoch's lines
    # come together), then the seeds' table (a row each, then the mean ± std) and one diagnosis
    # panel of the seeds together
    shown = sorted(re.findall(r"^seed (\d)  epoch (\d)/2  train ", result.output, re.M))
    assert shown == [(str(s), str(e)) for s in range(3) for e in (1, 2)], result.output
    rows = [line for line in result.output.splitlines() if re.match(r"^│ +(\d|mean) │", line)]
    mean, std = summary["mean"]["test_accuracy"], summary["std"]["test_accuracy"]
    assert len(rows) == 4 and f"{mean:.3f}±{std:.3f}" in rows[3]
    assert [m["epochs_run"] for m in summary["members"]] == [2, 2, 2]
    verdicts = [m["verdict"] for m in summary["members"]]
    top = max(verdicts, key=verdicts.count)
    assert result.output.count("diagnosis") == 1
    assert (f"all 3 seeds: {top}" if verdicts.count(top) == 3 else f"{verdicts.count(top)} of 3 seeds: {top}") in result.output
    assert summary["seeds"] == [0, 1, 2] and len(summary["members"]) == 3
    tests = [m["kept"]["test_accuracy"] for m in summary["members"]]
    assert summary["mean"]["test_accuracy"] == pytest.approx(np.mean(tests))
    assert summary["std"]["test_accuracy"] == pytest.approx(np.std(tests, ddof=1))
    for seed in (0, 1, 2):
        lines = [json.loads(x) for x in (run_dir / f"seed-{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert len(lines) == 3 and all(line["seed"] == seed for line in lines)
        assert (run_dir / f"seed-{seed}" / "report.md").exists()
    assert "± " in result.output and result.output.count("seed ") >= 3
    # compare groups the seeds into one row; diagnose reads every seed
    compared = CliRunner().invoke(cli.app, ["compare", str(run_dir), "--json", "--out", str(tmp_path / "cmp")])
    assert compared.exit_code == 0, compared.output
    diag = CliRunner().invoke(cli.app, ["diagnose", str(run_dir), "--json"])
    assert diag.exit_code == 0 and set(json.loads(diag.output)) == {"seed-0", "seed-1", "seed-2"}


def test_each_seed_config_keeps_the_shared_data_split():
    cfg = make_cfg(**{"seed": 3, "train.seeds": 3})
    members = train.seed_configs(cfg)
    assert [c.seed for c in members] == [3, 4, 5]
    assert all(c.data.split_seed == 3 and c.train.seeds == 1 for c in members)


def test_sweeps_refuse_train_seeds():
    from dnnlab import sweep

    with pytest.raises(sweep.SweepError, match="--seeds"):
        sweep.plan({"train": {"seeds": 3}}, ["model.depth=1,2"], None)


def test_one_rule_for_the_mean_over_seeds_everywhere(tmp_path):
    """runs.seed_stats leaves out diverged, interrupted and killed seeds; the multi-seed
    summary and compare's groups use that one rule, so they cannot disagree."""
    from pathlib import Path

    from dnnlab import compare, runs

    ok = {"status": "completed", "final": {"test_accuracy": 0.8}}
    summaries = [
        ok,
        {**ok, "final": {"test_accuracy": 0.9}},
        {"status": "diverged", "final": {"test_accuracy": float("nan")}},
        {"status": "interrupted", "final": {"test_accuracy": 0.1}},
        {},  # killed: no summary
    ]
    mean, std, count = runs.seed_stats(summaries, "test_accuracy")
    assert count == 2 and mean == pytest.approx(0.85) and std == pytest.approx(0.0707, abs=1e-4)
    records = [compare.RunRecord(Path(f"r{i}"), summary=s) for i, s in enumerate(summaries)]
    assert compare.Group({}, records).stat("test_accuracy") == (mean, std)
    # the kept model: the restored best epoch, else the last; a killed run's last record
    assert runs.kept_metrics({"restored_best": True, "best": {"a": 1}, "final": {"a": 2}}) == {"a": 1}
    assert runs.kept_metrics({"restored_best": False, "best": {"a": 1}, "final": {"a": 2}}) == {"a": 2}
    history = [{"epoch": 0, "test_accuracy": 0.1}, {"epoch": 1, "test_accuracy": 0.7}]
    assert runs.kept_metrics({}, history)["test_accuracy"] == 0.7


def _backend_compiles(fn) -> int:
    """XLA compilations while `fn()` runs (jax.monitoring's backend-compile events)."""
    import jax.monitoring

    events: list[str] = []

    def listen(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return len(events)


def test_sequential_seeds_share_one_setup_and_compile_once(digits, monkeypatch):
    """Three sequential seeds upload the data once and compile no more programs than one seed."""
    cfg = make_cfg(**{**SMALL, "train.epochs": 2})
    one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seeds": 1})})
    train.fit(one, digits, progress=False)  # warm the eager-op caches
    setups = []
    real_setup = train.loop._setup
    monkeypatch.setattr(train.loop, "_setup", lambda *a: setups.append(1) or real_setup(*a))
    # new programs for each (a fit in this process would otherwise reuse the warm-up's)
    train.clear_programs()
    compiles_one = _backend_compiles(lambda: train.fit(one, digits, progress=False))
    train.clear_programs()
    compiles_three = _backend_compiles(lambda: run_all(cfg, digits, "sequential"))
    assert setups == [1, 1]
    assert compiles_three == compiles_one > 0
