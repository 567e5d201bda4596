"""The learning-rate range test (`dnnlab lr-find`): its schedule and smoothing against NumPy, its
stopping rule, the suggestion rules on synthetic curves (valley against fastai's own loops), the
suggestion on the quickstart against a grid's best, one compilation, and the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_cfg
from dnnlab import lr_find
from dnnlab.cli import app

runner = CliRunner()


def test_the_rate_grows_geometrically_from_min_to_max():
    lrs = np.asarray([float(lr_find.schedule(1e-7, 10.0, 100)(i)) for i in range(100)])
    np.testing.assert_allclose(lrs, np.geomspace(1e-7, 10.0, 100), rtol=2e-6)
    ratios = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratios, (10.0 / 1e-7) ** (1 / 99), rtol=1e-5)


def test_smoothing_is_the_bias_corrected_exponential_average():
    losses = np.random.default_rng(0).uniform(0.5, 3.0, 60)
    beta = lr_find.BETA
    i = np.arange(60)
    # avg_i = sum_j (1 - beta) beta^(i - j) x_j, divided by 1 - beta^(i + 1)
    weights = np.where(i[:, None] >= i[None, :], (1 - beta) * beta ** (i[:, None] - i[None, :]).clip(0), 0.0)
    expected = weights @ losses / (1 - beta ** (i + 1))
    np.testing.assert_allclose(lr_find.smooth(list(losses)), expected, rtol=1e-12)
    assert lr_find.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull toward 0 at the start


def test_the_test_stops_at_four_times_the_minimum_or_a_non_finite_loss():
    assert lr_find.should_stop(1.9, 0.5, 1.9) is None
    assert lr_find.should_stop(2.01, 0.5, 9.0) == "diverged"
    assert lr_find.should_stop(1.0, 0.5, math.nan) == "non-finite"
    assert lr_find.should_stop(math.inf, 0.5, 3.0) == "non-finite"


def _fastai_valley(losses: list[float]) -> int:
    """fastai.callback.schedule.valley's loops, transcribed (the oracle)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


@pytest.mark.parametrize("seed", range(5))
def test_valley_is_fastais_on_noisy_curves(seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(-7, 1, 80)
    curve = 2.3 - 1.5 / (1 + np.exp(-3 * (x + 2.5))) + np.exp(3 * (x - 0.5)) + rng.normal(0, 0.05, x.size)
    lrs = 10.0**x
    assert lr_find.valley(lrs, curve) == max(0, _fastai_valley(list(curve)))


def test_the_rules_on_a_synthetic_range_test():
    # flat at 2.3 up to lr 1e-4, a fall in log(lr) steepest at 1e-2 down to a minimum at 1, then a blow-up
    x = np.linspace(-7, 1, 100)
    curve = 2.3 - 2.0 / (1 + np.exp(-4 * (x + 2))) + np.where(x > 0, 20 * x**2, 0.0)
    lrs = 10.0**x
    steep = lrs[lr_find.steepest(lrs, curve)]
    assert steep == pytest.approx(1e-2, rel=0.25)  # the sigmoid's centre, to the grid's spacing
    low = lrs[lr_find.minimum(lrs, curve)]
    assert low == pytest.approx(lrs[np.argmin(curve)] / 10, rel=0.1)
    valley = lrs[lr_find.valley(lrs, curve)]
    assert 1e-7 < valley < lrs[np.argmin(curve)]  # inside the falling stretch, below the minimum
    got = lr_find.suggest(list(lrs), list(curve), 100)
    assert set(got) == set(lr_find.SUGGESTIONS) and got["steepest"] == pytest.approx(steep, rel=0.25)
    assert lr_find.suggest(list(lrs[:10]), list(curve[:10]), 100) == {k: None for k in lr_find.SUGGESTIONS}


def _sgd_quickstart():
    raw = yaml.safe_load(open("configs/quickstart.yaml"))
    raw["optimizer"] = {"name": "sgd", "lr": 0.1}
    return make_cfg(raw)


def test_on_the_quickstart_with_sgd_the_suggestion_is_within_a_decade_of_a_grids_best(digits):
    from dnnlab.runs import kept_metrics
    from dnnlab.train import fit

    cfg = _sgd_quickstart()
    found = lr_find.range_test(cfg, digits)
    assert found.stopped == "diverged" and found.suggestion is not None
    grid = [0.01, 0.03, 0.1, 0.3, 1.0]
    val = {}
    for lr in grid:
        trial = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"lr": lr})})
        result = fit(trial, digits, progress=False)
        loss = kept_metrics(result.summary).get("val_loss")
        val[lr] = loss if result.summary["status"] in ("completed", "stopped_early") and loss is not None else math.inf
    best = min(grid, key=val.__getitem__)
    assert abs(math.log10(found.suggestion / best)) <= 1.0, (found.suggestions, val)


def test_the_range_test_compiles_its_programs_once(digits):
    cfg = make_cfg({"data": {"dataset": "digits", "batch_size": 256}, "model": {"hidden": [16]}, "optimizer": {"name": "momentum"}})
    result = lr_find.range_test(cfg, digits, min_lr=1e-5, max_lr=1.0, steps=30)
    assert result.steps_per_epoch == 6 and len(result.lrs) > result.steps_per_epoch  # several epochs' batches
    assert result.compiled == {"step": 1, "batches": 1, "init": 1}
    assert result.lrs[0] == pytest.approx(1e-5, rel=1e-5) and result.lrs[1] / result.lrs[0] == pytest.approx(1e5 ** (1 / 29), rel=1e-5)
    # the recorded loss is the cross-entropy of an untrained net at the first, tiny step
    assert result.losses[0] == pytest.approx(math.log(10), abs=0.3)


def test_lr_find_command_writes_its_files_and_the_line_to_paste(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"name": "tiny", "data": {"dataset": "digits", "batch_size": 64}, "model": {"hidden": [16]},
                                   "optimizer": {"name": "sgd", "lr": 0.1}}))
    result = runner.invoke(app, ["lr-find", str(cfg), "--set", "model.activation=tanh", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (folder,) = list((tmp_path / "out").iterdir())
    assert folder.name.startswith("tiny-lr-find-") and (folder / "lr_find.png").stat().st_size > 0
    record = json.loads((folder / "lr_find.json").read_text())
    lr = record["suggestion"]
    assert record["rule"] == "minimum" and record["set"] == f"--set optimizer.lr={lr:.2g}"
    assert len(record["lrs"]) == len(record["losses"]) == len(record["smoothed"]) <= 100
    assert f"--set optimizer.lr={lr:.2g}" in result.output
    assert f"run it: dnnlab run {cfg} --set model.activation=tanh --set optimizer.lr={lr:.2g}" in result.output
    bad = runner.invoke(app, ["lr-find", str(cfg), "--min", "1", "--max", "0.1", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--max 0.1: give a rate above --min" in bad.output and not (tmp_path / "bad").exists()
    rule = runner.invoke(app, ["lr-find", str(cfg), "--rule", "median", "--out", str(tmp_path / "bad")])
    assert rule.exit_code == 2 and "choose one of minimum, valley, steepest" in rule.output


def test_fix_measures_the_remedies_rates_with_range_tests(tmp_path):
    """An lr-too-low run: `fix --lr-find` trains each rate remedy at a range test's rate (the
    tests' files in the fix folder), and they fix it; by default, on a run this short, the tests
    would cost more than a quarter of the remedies' training: the table's rates, and a note."""
    recipe = "configs/recipe/lr-too-low.yaml"
    out = tmp_path / "runs"
    ran = runner.invoke(app, ["run", recipe, "--out", str(out), "--quiet"])
    (run,) = list(out.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert "lr-too-low" in summary["diagnosis"]["causes"], ran.output
    printed = [r["sets"] for r in summary["diagnosis"]["remedies"][:2]]
    measured = runner.invoke(app, ["fix", str(run), "--top", "2", "--lr-find", "--out", str(tmp_path / "a"), "--json"])
    report = json.loads(measured.output)
    assert measured.exit_code == 0 and report["fixed"] is True
    assert [f["printed"] for f in report["lr_find"]] == printed
    folder = Path(next((tmp_path / "a").iterdir()))
    for found, remedy in zip(report["lr_find"], report["remedies"]):
        test = json.loads((folder / found["folder"] / "lr_find.json").read_text())
        assert found["lr"] == float(f"{test['suggestion']:.2g}") and test["rule"] == "minimum"
        assert f"optimizer.lr={found['lr']:g}" in remedy["remedy"]["sets"] and "a range test's" in remedy["remedy"]["why"]
        assert remedy["fixed"], remedy
    default = runner.invoke(app, ["fix", str(run), "--top", "2", "--out", str(tmp_path / "b"), "--json"])
    plain = json.loads(default.output)
    assert plain["lr_find"] == [] and "would add more than 25%" in plain["lr_find_note"]
    assert [r["remedy"]["sets"] for r in plain["remedies"]] == printed
