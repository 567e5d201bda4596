"""`dnnlab fix`: the remedies a diagnosis prints, applied as written, trained and measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnnlab import config
from dnnlab.cli import app
from conftest import require_fashion

runner = CliRunner()


def fix(run, out, *extra):
    result = runner.invoke(app, ["fix", str(run), "--out", str(out), "--json", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, json.loads(result.output)


@pytest.mark.parametrize("recipe", ["deep-sigmoid-sgd", "deep-plain-mlp", "lr-too-low", "dropout-on-failing", "huge-lr"])
def test_every_remedy_the_recipes_print_trains_past_its_failure(recipe, recipe_run, tmp_path):
    """Each printed remedy, applied as written, removes the failure it targets: the diverged run
    trains, the failed run's causes are gone and its training accuracy rises beyond the noise."""
    out = tmp_path / "fixes"
    control = recipe_run(recipe)  # the run test_recipe reads too
    run, d = control.run, control.diagnosis
    assert d["verdict"] in ("failed-training", "diverged") and d["remedies"]
    code, report = fix(run, out, "--top", "10", "--no-lr-find")  # as printed: no range test (by default that depends on the machine's speed)
    assert [r["remedy"]["sets"] for r in report["remedies"]] == [r["sets"] for r in d["remedies"]]
    for r in report["remedies"]:
        (member,) = r["members"]
        after = json.loads((Path(member) / "summary.json").read_text())
        assert after["status"] in ("completed", "stopped_early"), (r["command"], after["status"])
        assert not set(d["causes"]) & set(after["diagnosis"]["causes"]), (r["command"], after["diagnosis"]["causes"])
        if d["verdict"] == "failed-training":
            gain = r["train_accuracy"]["remedy"] - r["train_accuracy"]["control"]
            assert gain > r["train_accuracy"]["tolerance"], (r["command"], gain)
    assert code == 0 and report["fixed"] is True and report["winner"]
    if recipe == "deep-sigmoid-sgd":
        fixed_yaml_and_folder(report)


def fixed_yaml_and_folder(report):
    """The winner reaches training accuracy 0.8, fixed.yaml holds it, the folder is a sweep."""
    assert report["verdict"] == "failed-training"
    winner = next(r for r in report["remedies"] if r["command"] == report["winner"])
    assert winner["fixed"] and winner["train_accuracy"]["remedy"] >= 0.8
    assert winner["remedy"]["set"].startswith(("model.activation", "optimizer.", "model.norm"))
    # compare's shape, plus the fix's own keys; the folder is an ordinary sweep folder
    assert {"metric", "groups", "comparisons", "fixed", "winner", "fixed_config"} <= set(report)
    fixed = Path(report["fixed_config"])
    cfg = config.load_config(fixed)
    for setting in winner["remedy"]["sets"]:
        key, _, value = setting.partition("=")
        section, name = key.split(".")
        assert str(getattr(getattr(cfg, section), name)).lower() == value.lower() or float(getattr(getattr(cfg, section), name)) == float(value)
    assert (fixed.parent / "sweep.json").exists() and (fixed.parent / "compare.md").exists()
    table = runner.invoke(app, ["compare", str(fixed.parent), "--json"])
    assert table.exit_code == 0 and len(json.loads(table.output)["groups"]) == len(report["remedies"])
    # a fix folder given again: nothing pending, judged again
    again = runner.invoke(app, ["fix", str(fixed.parent), "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["winner"] == report["winner"]


def test_fix_on_a_good_fit_trains_nothing(recipe_run, tmp_path):
    good = recipe_run("good-fit", "--fail-on", "overfitting,good-fit")  # test_recipe's run
    assert good.diagnosis["verdict"] == "good-fit"
    result = runner.invoke(app, ["fix", str(good.run), "--out", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to fix" in result.output
    assert list(tmp_path.iterdir()) == []


def test_fix_bad_input(tmp_path):
    assert runner.invoke(app, ["fix", str(tmp_path / "missing")]).exit_code == 2
    assert runner.invoke(app, ["fix", str(tmp_path), "--top", "0"]).exit_code == 2
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text("name: x\n")
    result = runner.invoke(app, ["fix", str(killed)])
    assert result.exit_code == 2 and "never finished" in result.output


@pytest.mark.slow
def test_fix_on_small_data_overfit_lowers_the_kept_validation_loss(recipe_run, tmp_path):
    require_fashion()
    control = recipe_run("small-data-overfit")  # test_recipe's run
    assert control.diagnosis["verdict"] == "overfitting"
    code, report = fix(control.run, tmp_path, "--top", "1")  # early stopping at the named epoch
    assert code == 0 and report["fixed"] is True
    winner = next(r for r in report["remedies"] if r["command"] == report["winner"])
    assert winner["val_loss"]["remedy"] < 0.99 * winner["val_loss"]["control"]
