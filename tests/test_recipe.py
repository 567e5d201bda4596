"""The shipped recipe configs get the right verdict and cause, end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnnlab import runs
from dnnlab.cli import app
from conftest import require_fashion

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "recipe"
runner = CliRunner()


def run_recipe(name, tmp_path, *extra):
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(RECIPE / f"{name}.yaml"), "--out", str(out), "--quiet", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    (run,) = list(out.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    return result, run, summary, summary["diagnosis"]


def test_deep_sigmoid_sgd_fails_to_train_with_vanishing_gradients(recipe_run):
    r = recipe_run("deep-sigmoid-sgd")
    run, summary, d = r.run, r.summary, r.diagnosis
    assert r.exit_code == 0
    assert d["verdict"] == "failed-training" and "vanishing-gradients" in d["causes"]
    sets = [r["set"] for r in d["remedies"]]
    assert sets[:2] == ["model.activation=relu", "model.norm=batch"]
    # a complete change: ReLU with Adam at Adam's usual learning rate, not at SGD's 0.1
    assert d["remedies"][0]["sets"] == ["model.activation=relu", "optimizer.name=adam", "optimizer.lr=0.001"]
    assert not any(s.startswith(("model.dropout", "regularization.")) for s in sets)
    assert summary["final"]["train_accuracy"] < 0.2
    report = (run / "report.md").read_text()
    assert "# deep-sigmoid-sgd: failed-training" in report and "vanishing-gradients" in report
    for png in ("curves.png", "gradients.png", "saturated.png"):
        assert (run / png).stat().st_size > 5000 and f"]({png})" in report
    assert "verdict failed-training (vanishing-gradients)" in r.output


def test_the_same_net_with_relu_and_adam_trains(tmp_path):
    _, run, summary, d = run_recipe("deep-relu-adam", tmp_path)
    assert d["verdict"] != "failed-training"
    assert summary["final"]["train_accuracy"] > 0.95
    ratios = [json.loads(line).get("grad_ratio") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(1e-2 < r < 10 for r in ratios)


def test_huge_learning_rate_diverges_with_lr_too_high(recipe_run):
    """The one diverging training of the suite: exit 1, the cause and remedy, the epochs kept."""
    r = recipe_run("huge-lr")
    summary, d = r.summary, r.diagnosis
    assert r.exit_code == 1 and summary["status"] == "diverged"
    assert "diverged" in r.output and "lower optimizer.lr" in r.output
    assert d["verdict"] == "diverged" and "lr-too-high" in d["causes"]
    assert d["remedies"][0]["set"] == "optimizer.lr=0.1"  # SGD's usual lr, not a tenth of 50
    # the epochs before the divergence are kept; non-finite parameters are never saved
    lines = runs.read_metrics(r.run)
    assert [line["epoch"] for line in lines] == [0, 1]
    assert lines[0]["train_loss"] == pytest.approx(summary["initial"]["train_loss"])
    assert not (r.run / "last.npz").exists()


def test_reasonable_setup_is_a_good_fit_and_fail_on_exits_3(recipe_run):
    r = recipe_run("good-fit", "--fail-on", "overfitting,good-fit")
    assert r.diagnosis["verdict"] == "good-fit" and r.diagnosis["remedies"] == []
    assert r.exit_code == 3


def test_tiny_learning_rate_is_lr_too_low(recipe_run):
    d = recipe_run("lr-too-low").diagnosis
    assert d["verdict"] == "failed-training" and d["causes"] == ["lr-too-low"]
    assert d["remedies"][0]["set"] == "optimizer.lr=0.1"  # SGD's usual lr, not 10x of 1e-5


def test_dropout_on_a_failing_net_is_warned_and_removed_first(recipe_run):
    d = recipe_run("dropout-on-failing").diagnosis
    assert d["verdict"] == "failed-training"
    # every remedy turns dropout off as well: dropout makes a net that fails to train worse
    assert d["remedies"] and all("model.dropout=0" in r["sets"] for r in d["remedies"])
    assert any("dropout is on" in w for w in d["warnings"])


@pytest.mark.slow
def test_small_data_overfits_with_early_stopping_and_dropout_remedies(recipe_run):
    require_fashion()
    summary, d = recipe_run("small-data-overfit").summary, recipe_run("small-data-overfit").diagnosis
    assert d["verdict"] == "overfitting"
    sets = [r["set"] for r in d["remedies"]]
    assert {"train.early_stopping.enabled=true", "model.dropout=0.5"} <= set(sets)
    best = summary["best_epoch"]
    assert f"epoch {best}" in d["remedies"][0]["why"] and best < 30
    assert summary["final"]["train_accuracy"] == 1.0


def test_unknown_fail_on_verdict_is_bad_input(tmp_path):
    result = runner.invoke(app, ["run", str(RECIPE / "good-fit.yaml"), "--out", str(tmp_path), "--fail-on", "overfit"])
    assert result.exit_code == 2 and "unknown verdict overfit" in result.output
    assert list(tmp_path.iterdir()) == []


def test_diagnose_rereads_a_run_without_jax(recipe_run, tmp_path):
    r = recipe_run("dropout-on-failing")
    run, d = r.run, r.diagnosis
    code = textwrap.dedent(
        f"""
        import sys, json
        from typer.testing import CliRunner
        from dnnlab.cli import app
        res = CliRunner().invoke(app, ["diagnose", {str(run)!r}, "--json"])
        assert res.exit_code == 0, res.output
        print(json.dumps({{"jax": "jax" in sys.modules, "d": json.loads(res.output)}}))
        """
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["jax"] is False and out["d"] == d
    panel = runner.invoke(app, ["diagnose", str(run)])
    assert panel.exit_code == 0 and "failed-training" in panel.output and "--set model.dropout=0" in panel.output
    missing = runner.invoke(app, ["diagnose", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope does not exist" in missing.output


def test_diagnose_a_killed_run_without_summary(recipe_run, tmp_path):
    run = recipe_run("deep-sigmoid-sgd").copy_to(tmp_path)
    (run / "summary.json").unlink()
    result = runner.invoke(app, ["diagnose", str(run), "--json", "--write"])
    assert result.exit_code == 0 and json.loads(result.output)["verdict"] == "failed-training"
    assert (run / "report.md").exists()


def test_check_passes_a_good_config_and_fails_a_failing_one():
    good = runner.invoke(app, ["check", str(RECIPE / "good-fit.yaml")])
    assert good.exit_code == 0 and "all 4 checks passed" in good.output
    assert "initial loss near ln(C)" in good.output and "can overfit one batch of 32" in good.output
    bad = runner.invoke(app, ["check", str(RECIPE / "deep-sigmoid-sgd.yaml")])
    assert bad.exit_code == 1 and "FAIL can overfit one batch" in bad.output
    diverging = runner.invoke(app, ["check", str(RECIPE / "huge-lr.yaml")])
    assert diverging.exit_code == 1 and "FAIL 10 training steps stay finite and bounded" in diverging.output
    # a schedule that decays to zero must not fail the single-batch check: it runs at the peak lr
    cosine = runner.invoke(app, ["check", str(RECIPE / "good-fit.yaml"), "--set", "optimizer.schedule=cosine", "--set", "train.epochs=2"])
    assert cosine.exit_code == 0, cosine.output


def digits_zero_csv(folder: Path) -> Path:
    """scikit-learn's digits labelled "is it a zero?" (10% yes), as the recipe's header writes it."""
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame
    table = frame.drop(columns="target")
    table["zero"] = ["yes" if v == 0 else "no" for v in frame["target"]]
    path = folder / "digits-zero.csv"
    table.to_csv(path, index=False)
    return path


def test_a_net_at_the_prior_of_an_imbalanced_table_fails_to_train_and_fix_mends_it(tmp_path):
    csv = digits_zero_csv(tmp_path)
    result, run, summary, d = run_recipe("imbalanced-at-prior", tmp_path, "--set", f"data.path={csv}")
    # 0.901 accurate, and yet it learned nothing: it predicts the majority class for every example
    assert summary["final"]["train_accuracy"] == pytest.approx(1166 / 1294)
    assert summary["final"]["train_balanced_accuracy"] == 0.5 and summary["per_class"]["recall"]["val"] == [1.0, 0.0]
    assert summary["data"]["imbalanced"] is True and summary["data"]["class_counts"]["train"] == [1166, 128]
    assert d["verdict"] == "failed-training" and "vanishing-gradients" in d["causes"]
    assert any("training accuracy 0.901 (skill 0.00)" in e and "predicts 'no' for every example" in e for e in d["evidence"])
    assert any("skill 0.00 vs 0.9" in e for e in d["evidence"])  # the linear reference, on the skill scale
    assert "train.class_weight=balanced" in [r["set"] for r in d["remedies"]]
    assert any(w.startswith("imbalanced classes: 'no' holds 90.1%") for w in d["warnings"])
    assert "warning: imbalanced classes: 'no' holds 90.1% of the training split" in result.output
    report = (run / "report.md").read_text()
    assert "## Classes" in report and "| yes | 0.0000 | 0.0000 | 0.0000 |" in report
    # the first remedy, measured on balanced accuracy (the data are imbalanced), fixes it
    fixed = runner.invoke(app, ["fix", str(run), "--out", str(tmp_path / "fix"), "--json", "--top", "1"])
    out = json.loads(fixed.output)
    (remedy,) = out["remedies"]
    assert fixed.exit_code == 0 and out["fixed"] is True and remedy["measure"] == "balanced_accuracy"
    assert remedy["remedy"]["set"] == "model.activation=relu" and remedy["val_accuracy"]["remedy"] > 0.9


def test_l2_too_strong_is_over_regularization_and_its_first_remedy_trains(tmp_path):
    _, _, summary, d = run_recipe("l2-too-strong", tmp_path)
    assert d["verdict"] == "failed-training" and d["causes"][0] == "over-regularization"
    assert summary["penalty"]["l2"] > 0 and summary["penalty"]["epoch"] == 15
    share = summary["penalty"]["l2"] / (summary["penalty"]["l2"] + summary["final"]["train_loss"])
    assert any(f"the l2 penalty is {100 * share:.3g}% of the training loss at epoch 15" in e for e in d["evidence"])
    assert any("the weights' norm is" in e and "of the same net's at epoch 0" in e for e in d["evidence"])
    first = d["remedies"][0]
    assert first["sets"] == ["regularization.l2=0"]
    assert all("regularization.l2=0" in r["sets"] for r in d["remedies"])  # a complete change, like dropout's
    # the remedy, applied as written: the net fits the digits
    again = tmp_path / "again"
    again.mkdir()
    sets = [arg for s in first["sets"] for arg in ("--set", s)]
    _, _, after, d_after = run_recipe("l2-too-strong", again, *sets)
    assert after["final"]["train_accuracy"] > 0.95 and d_after["verdict"] not in ("failed-training", "diverged")
