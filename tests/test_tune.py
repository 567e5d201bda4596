"""Sweeps that tune a key per grid point (`dnnlab sweep --tune KEY=V1,V2`): the choice on
hand-built member records, the layout of the members, the plan's checks, the waiting seeds
getting the chosen value, compare at the chosen values, and a tuned sweep end to end with resume
and workers."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from dnnlab import compare, sweep
from dnnlab.cli import app
from dnnlab.config import ConfigError

runner = CliRunner()
BASE = {
    "name": "tiny", "seed": 0,
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"hidden": [16]}, "optimizer": {"name": "sgd", "lr": 0.003}, "train": {"epochs": 2},
}


def test_choose_keeps_the_best_value_that_every_trial_finished_at():
    trials = [
        (0.001, "completed", {"val_loss": 0.50, "val_accuracy": 0.80}),
        (0.01, "stopped_early", {"val_loss": 0.30, "val_accuracy": 0.85}),
        (0.1, "diverged", {"val_loss": 0.10}),  # diverged: never chosen, whatever it recorded
        (1.0, "failed", {}),
        (3.0, "completed", {"val_loss": float("nan")}),
    ]
    value, scores = sweep.choose(trials, "val_loss")
    assert value == 0.01
    assert [s["value"] for s in scores] == [0.001, 0.01, 0.1, 1.0, 3.0]
    assert [s["val_loss"] for s in scores] == [0.50, 0.30, None, None, None]
    assert scores[2]["status"] == "diverged"
    # an accuracy is best highest; a tie goes to the first value
    tie = [(0.1, "completed", {"val_accuracy": 0.9}), (0.3, "completed", {"val_accuracy": 0.9}), (1.0, "completed", {"val_accuracy": 0.7})]
    assert sweep.choose(tie, "val_accuracy")[0] == 0.1
    assert sweep.choose([(0.1, "diverged", {}), (1.0, "failed", {})], "val_loss") == (None, [
        {"value": 0.1, "status": "diverged", "val_loss": None, "seeds": 1}, {"value": 1.0, "status": "failed", "val_loss": None, "seeds": 1}])


def test_choose_over_every_seed_takes_the_mean_and_skips_a_value_where_one_seed_did_not_finish():
    trials = [
        (0.01, "completed", {"val_loss": 0.30}), (0.01, "completed", {"val_loss": 0.40}),  # mean 0.35
        (0.1, "completed", {"val_loss": 0.10}), (0.1, "diverged", {}),  # its best seed is the best of all: not chosen
        (0.3, "completed", {"val_loss": 0.36}), (0.3, "completed", {"val_loss": 0.36}),
    ]
    value, scores = sweep.choose(trials, "val_loss")
    assert value == 0.01
    assert scores[0] == {"value": 0.01, "status": "completed", "val_loss": pytest.approx(0.35), "seeds": 2}
    assert scores[1]["status"] == "1 completed, 1 diverged" and scores[1]["val_loss"] is None


def test_members_of_a_tuned_sweep_first_seed_and_every_seed():
    tune = sweep.Tuning("optimizer.lr", [0.01, 0.1])
    first = sweep.expand_tuned({"model.activation": ["relu", "tanh"]}, 3, 5, None, tune)
    assert [(m.params, m.tune) for m in first[:4]] == [
        ({"model.activation": "relu", "optimizer.lr": 0.01, "seed": 5}, {"point": 0, "trial": True}),
        ({"model.activation": "relu", "optimizer.lr": 0.1, "seed": 5}, {"point": 0, "trial": True}),
        ({"model.activation": "relu", "seed": 6}, {"point": 0, "trial": False}),
        ({"model.activation": "relu", "seed": 7}, {"point": 0, "trial": False}),
    ]
    assert len(first) == 2 * tune.runs(3) == 8
    every = sweep.expand_tuned({"model.activation": ["relu"]}, 2, 0, None, sweep.Tuning("optimizer.lr", [0.01, 0.1], seeds="all"))
    assert [m.overrides for m in every] == [
        ["model.activation=relu", "optimizer.lr=0.01", "seed=0"], ["model.activation=relu", "optimizer.lr=0.01", "seed=1"],
        ["model.activation=relu", "optimizer.lr=0.1", "seed=0"], ["model.activation=relu", "optimizer.lr=0.1", "seed=1"],
    ]
    assert all(m.tune["trial"] for m in every)


def test_the_plan_checks_the_tuning_before_anything_trains():
    p = sweep.plan({**BASE, "sweep": {"tune": {"optimizer.lr": [0.01, 0.1]}, "seeds": 2}}, [], None)
    assert p.tune == sweep.Tuning("optimizer.lr", [0.01, 0.1], "val_loss", "first") and p.grid == {}
    cli = sweep.plan(BASE, ["model.activation=relu,tanh"], None, tune_items=["optimizer.lr=1e-3,0.01"], tune_metric="val_accuracy", tune_seeds="all")
    assert cli.tune == sweep.Tuning("optimizer.lr", [0.001, 0.01], "val_accuracy", "all")
    with pytest.raises(sweep.SweepError, match="one key at a time"):
        sweep.plan(BASE, [], None, tune_items=["optimizer.lr=0.01,0.1", "optimizer.momentum=0.9,0.99"])
    with pytest.raises(ConfigError, match="sweep: tune.optimizer.lr: the key is swept too"):
        sweep.plan(BASE, ["optimizer.lr=0.01,0.1"], None, tune_items=["optimizer.lr=0.01,0.1"])
    no_val = {**BASE, "data": {**BASE["data"], "validation_split": 0.0}}
    with pytest.raises(sweep.SweepError, match="needs a validation split: set data.validation_split"):
        sweep.plan(no_val, [], None, tune_items=["optimizer.lr=0.01,0.1"])
    assert sweep.plan(no_val, [], None, tune_items=["optimizer.lr=0.01,0.1"], tune_metric="train_loss").tune.metric == "train_loss"
    with pytest.raises(ConfigError, match="sweep.tune_seeds"):
        sweep.plan({**BASE, "sweep": {"tune": {"optimizer.lr": [0.1]}, "tune_seeds": "some"}}, [], None)


def _fake_member_run(job: sweep.Sweep, member: dict, val_loss: float, *, status: str = "completed", train_acc: float = 0.9) -> None:
    """A run folder for `member` as `run_member` would leave it, and its record in sweep.json."""
    folder = job.path / f"tiny-{member['index']:03d}-fake"
    folder.mkdir()
    raw = {**BASE, "name": f"tiny-{member['index']:03d}"}
    for key, value in member["params"].items():
        section, _, leaf = key.partition(".")
        raw[section] = {**raw[section], leaf: value} if leaf else value
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    final = {"train_loss": 0.3, "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": 0.85, "test_loss": 0.4, "test_accuracy": 0.84}
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 0, **final}) + "\n" + json.dumps({"epoch": 1, **final}) + "\n")
    (folder / "summary.json").write_text(json.dumps({"status": status, "epochs_run": 1, "final": final if status != "diverged" else None,
                                                     "data": {"train": 1000, "val": 150}, "diagnosis": {"verdict": "good-fit"}}))
    member.update(dir=folder.name, status=status)


def test_the_waiting_seeds_get_the_chosen_value_and_compare_compares_at_it(tmp_path):
    p = sweep.plan(BASE, ["model.activation=relu,tanh"], 2, tune_items=["optimizer.lr=0.01,0.1,1.0"])
    job = sweep.Sweep.create(tmp_path, "tiny", "base.yaml", p.base, p.grid, p.seeds, p.variants, tune=p.tune)
    assert [m["status"] for m in job.members] == ["pending"] * 3 + ["waiting"] + ["pending"] * 3 + ["waiting"]
    assert [m["index"] for m in job.pending()] == [0, 1, 2, 4, 5, 6] and [m["index"] for m in job.waiting()] == [3, 7]
    scores = {("relu", 0.01): 0.5, ("relu", 0.1): 0.2, ("tanh", 0.01): 0.25, ("tanh", 0.1): 0.6, ("tanh", 1.0): 0.9}
    for m in job.members[:3]:
        value = m["params"]["optimizer.lr"]
        _fake_member_run(job, m, scores.get(("relu", value), 9.0), status="diverged" if value == 1.0 else "completed")
    assert sweep.resolve(job) and job.members[3]["params"] == {"model.activation": "relu", "optimizer.lr": 0.1, "seed": 1}
    assert job.members[3]["overrides"] == ["model.activation=relu", "optimizer.lr=0.1", "seed=1"] and job.members[3]["status"] == "pending"
    assert job.manifest["tune"]["points"][0]["chosen"] == 0.1 and job.manifest["tune"]["points"][1]["chosen"] is None
    assert [m["index"] for m in job.pending()] == [3, 4, 5, 6] and not sweep.resolve(job)  # nothing new: not saved again
    for m in job.members[3:7]:  # the first point's seed, then the second point's trials
        _fake_member_run(job, m, 0.21 if m["index"] == 3 else scores[(m["params"]["model.activation"], m["params"]["optimizer.lr"])])
    sweep.resolve(job)
    _fake_member_run(job, job.members[7], 0.26)
    assert job.members[7]["params"]["optimizer.lr"] == 0.01
    job.save()
    comp, _ = compare.compare([str(job.path)], "val_loss")
    assert sorted((g.values["model.activation"], g.values["optimizer.lr"], len(g.runs)) for g in comp.groups) == [
        ("relu", 0.1, 2), ("tanh", 0.01, 2)]
    assert comp.orphans == [] and comp.keys == ["model.activation", "optimizer.lr"]
    (c,) = comp.comparisons
    assert c["key"] == "model.activation" and "model.activation=tanh, optimizer.lr=0.01 vs model.activation=relu, optimizer.lr=0.1" in c["text"]
    md = compare.markdown(comp, [])
    assert "## Tuning" in md and "- model.activation=relu: chose 0.1 (0.01: 0.5000; **0.1: 0.2000**; 1: diverged)" in md
    assert "- model.activation=tanh: chose 0.01 (**0.01: 0.2500**; 0.1: 0.6000; 1: 0.9000): at the edge of the values" in md
    assert compare.compare([str(job.path)])[0].to_dict()["tuning"][0]["points"][1]["chosen"] == 0.01


def test_a_point_with_nothing_to_choose_fails_its_seeds_and_resume_chooses_later(tmp_path):
    p = sweep.plan(BASE, [], 2, tune_items=["optimizer.lr=0.01,0.1"])
    job = sweep.Sweep.create(tmp_path, "tiny", "base.yaml", p.base, p.grid, p.seeds, p.variants, tune=p.tune)
    for m in job.members[:2]:
        m.update(status="failed", error="boom")
    assert sweep.resolve(job)
    assert job.members[2]["status"] == "failed" and "no value of optimizer.lr to run at" in job.members[2]["error"]
    assert job.waiting() == [job.members[2]] and [m["index"] for m in job.pending()] == [0, 1]  # the trials run again
    _fake_member_run(job, job.members[0], 0.3)
    _fake_member_run(job, job.members[1], 0.4)
    assert sweep.resolve(job) and job.members[2]["status"] == "pending" and job.members[2]["params"]["optimizer.lr"] == 0.01


def test_a_tuned_sweep_trains_resumes_and_compares_at_the_chosen_values(tmp_path):
    base_yaml = tmp_path / "base.yaml"
    base_yaml.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "runs"
    p = sweep.plan(BASE, ["model.activation=relu,tanh"], 2, tune_items=["optimizer.lr=0.01,0.3"])
    job = sweep.Sweep.create(out, "tiny", str(base_yaml), p.base, p.grid, p.seeds, p.variants, tune=p.tune)
    calls = {"n": 0}

    def stop_at_the_seed(member):
        calls["n"] += 1
        if not member["tune"]["trial"]:
            raise KeyboardInterrupt  # the first point's seed: its trials ran, its value was chosen

    with pytest.raises(KeyboardInterrupt):
        sweep.run(job, on_start=stop_at_the_seed)
    saved = sweep.Sweep.open(job.path)
    assert [m["status"] for m in saved.members] == ["completed", "completed", "interrupted", "pending", "pending", "waiting"]
    chosen = saved.manifest["tune"]["points"][0]["chosen"]
    assert chosen in (0.01, 0.3) and saved.members[2]["params"]["optimizer.lr"] == chosen
    result = runner.invoke(app, ["sweep", str(base_yaml), "--resume", str(job.path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    done = sweep.Sweep.open(job.path)
    assert all(m["status"] == "completed" for m in done.members)
    points = done.manifest["tune"]["points"]
    for point, seed_member in zip(points, (done.members[2], done.members[5])):
        trial_scores = [s["val_loss"] for s in point["scores"]]
        assert point["chosen"] == point["scores"][trial_scores.index(min(trial_scores))]["value"]
        assert seed_member["params"]["optimizer.lr"] == point["chosen"]
    table = json.loads((job.path / "compare.json").read_text())
    assert sorted((g["values"]["model.activation"], g["values"]["optimizer.lr"]) for g in table["groups"]) == [
        ("relu", points[0]["chosen"]), ("tanh", points[1]["chosen"])]
    assert all(g["seeds"] == 2 for g in table["groups"]) and "tuned optimizer.lr on val_loss" in result.output
    assert "## Tuning" in (job.path / "compare.md").read_text()
