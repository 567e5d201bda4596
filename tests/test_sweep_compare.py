"""Sweeps (grid expansion, grouping, resume, failing members) and comparisons (differing keys,
seed aggregation, the comparative verdict on synthetic runs)."""

from __future__ import annotations

import json
from pathlib import Path

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
    "model": {"hidden": [16]}, "optimizer": {"lr": 0.003}, "train": {"epochs": 2},
}


@pytest.fixture()
def base_yaml(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def test_grid_parsing_and_expansion():
    grid = sweep.parse_grid(["model.depth=1,2,3", "model.hidden=[512,256],[64]", "optimizer.lr=1e-3,0.01", "model.activation=relu"])
    assert grid == {"model.depth": [1, 2, 3], "model.hidden": [[512, 256], [64]], "optimizer.lr": [0.001, 0.01], "model.activation": ["relu"]}
    members = sweep.expand({"model.depth": [1, 2], "model.activation": ["sigmoid", "relu"]}, seeds=2, base_seed=5)
    assert len(members) == 8
    assert members[0].overrides == ["model.depth=1", "model.activation=sigmoid", "seed=5"]
    assert members[-1].overrides == ["model.depth=2", "model.activation=relu", "seed=6"]
    assert sweep.override("name", "a: b") == 'name="a: b"'
    with pytest.raises(sweep.SweepError, match="expected KEY=V1,V2"):
        sweep.parse_grid(["model.depth"])


def test_variants_are_one_more_axis():
    raw = {**BASE, "sweep": {"grid": {"model.hidden": [[8], [16]]}, "variants": [
        {"optimizer.name": "sgd", "optimizer.lr": 0.1}, {"optimizer.name": "adam", "optimizer.lr": 0.001}]}}
    p = sweep.plan(raw, [], None)
    members = sweep.expand(p.grid, p.seeds, 0, p.variants)
    assert [m.overrides for m in members][:2] == [
        ["model.hidden=[8]", "optimizer.name=sgd", "optimizer.lr=0.1"],
        ["model.hidden=[8]", "optimizer.name=adam", "optimizer.lr=0.001"],
    ]
    assert len(members) == 4


def test_plan_merges_the_yaml_sweep_section_and_rejects_a_typo():
    raw = {**BASE, "model": {"width": 16}, "sweep": {"grid": {"model.depth": [1, 2]}, "seeds": 2}}
    p = sweep.plan(raw, ["model.activation=tanh,relu"], None)
    assert "sweep" not in p.base and p.grid == {"model.depth": [1, 2], "model.activation": ["tanh", "relu"]} and p.seeds == 2
    with pytest.raises(ConfigError, match="model.dpeth: unknown key; did you mean model.depth"):
        sweep.plan(BASE, ["model.dpeth=1,2"], None)
    with pytest.raises(sweep.SweepError, match="nothing to sweep"):
        sweep.plan(BASE, [], None)


def test_a_sweep_with_an_invalid_member_fails_before_training_any(base_yaml, tmp_path):
    out = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(base_yaml), "--grid", "model.activation=relu,rleu,tahn", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()  # nothing trained, no folder
    text = " ".join(result.output.split())
    assert "2 of 3 members of the sweep are invalid; nothing was trained" in text and "--keep-going" in text
    # each invalid member with its message and did-you-mean
    assert "member 001 (model.activation=rleu)" in text and "member 002 (model.activation=tahn)" in text
    assert "did you mean relu" in text and "did you mean tanh" in text


def test_sweep_groups_members_records_a_failure_and_compares(base_yaml, tmp_path):
    out = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(base_yaml), "--grid", "model.dropout=0.0,1.5", "--seeds", "2", "--out", str(out), "--keep-going"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output  # members failed: the sweep did not succeed
    (folder,) = list(out.iterdir())
    assert folder.name.startswith("tiny-sweep-")
    manifest = json.loads((folder / "sweep.json").read_text())
    statuses = [(m["params"]["model.dropout"], m["params"]["seed"], m["status"]) for m in manifest["members"]]
    assert statuses == [(0.0, 0, "completed"), (0.0, 1, "completed"), (1.5, 0, "failed"), (1.5, 1, "failed")]
    assert "model.dropout: must be less than 1" in manifest["members"][2]["error"]
    runs = [folder / m["dir"] for m in manifest["members"] if m["dir"]]
    assert all((r / "summary.json").exists() for r in runs) and len(runs) == 2
    assert (folder / "compare.md").exists() and (folder / "curves.png").exists()
    assert "2 members of 4 failed" in " ".join(result.output.split())
    # each member trained here shows its epochs, its lines named by the member (the first and last always)
    for index in (0, 1):
        assert f"member {index:03d}  epoch 1/2  train " in result.output and f"member {index:03d}  epoch 2/2  train " in result.output


def test_resume_skips_finished_members_and_redoes_the_rest(base_yaml, tmp_path):
    out = tmp_path / "runs"
    raw = yaml.safe_load(base_yaml.read_text())
    p = sweep.plan(raw, ["model.hidden=[8],[16],[24]"], None)
    job = sweep.Sweep.create(out, "tiny", str(base_yaml), p.base, p.grid, p.seeds)
    done = []
    calls = {"n": 0}

    def interrupt_second(member):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run(job, on_start=interrupt_second, on_end=lambda m: done.append(m["index"]))
    states = [m["status"] for m in sweep.Sweep.open(job.path).members]
    assert states == ["completed", "interrupted", "pending"]
    first_dir = job.members[0]["dir"]
    result = runner.invoke(app, ["sweep", str(base_yaml), "--grid", "model.hidden=[8],[16],[24]", "--resume", str(job.path)])
    assert result.exit_code == 0, result.output
    assert "3 members, 2 to run" in result.output
    after = sweep.Sweep.open(job.path).members
    assert [m["status"] for m in after] == ["completed"] * 3 and after[0]["dir"] == first_dir
    mismatch = runner.invoke(app, ["sweep", str(base_yaml), "--grid", "model.hidden=[8]", "--resume", str(job.path)])
    assert mismatch.exit_code == 2 and "differs from this command's" in mismatch.output


# ---------------------------------------------------------------- compare on synthetic runs


def fake_run(root: Path, name: str, config: dict, train_acc: float, val_acc: float, *, seed: int = 0, n_val: int = 6000, n_train: int = 54000, verdict="good-fit", summary=True, epochs=3):
    path = root / name
    path.mkdir(parents=True)
    cfg = {"name": name, "seed": seed, **config}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for e in range(epochs + 1):
        f = e / epochs
        lines.append({"epoch": e, "train_loss": 2.3 - f, "train_accuracy": 0.1 + f * (train_acc - 0.1), "val_loss": 2.3 - f * 0.9, "val_accuracy": 0.1 + f * (val_acc - 0.1)})
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    if summary:
        final = {k: lines[-1][k] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
        final.update(test_loss=1.0, test_accuracy=val_acc)
        (path / "summary.json").write_text(json.dumps({
            "status": "completed", "epochs_run": epochs, "final": final, "best": final, "best_epoch": epochs,
            "wall_seconds": 1.0, "data": {"train": n_train, "val": n_val}, "diagnosis": {"verdict": verdict},
        }))
    return path


def test_compare_shows_only_the_differing_keys_and_aggregates_seeds(tmp_path):
    common = {"optimizer": {"name": "adam", "lr": 0.001}}
    for seed, (t, v) in enumerate([(0.90, 0.85), (0.92, 0.87)]):
        fake_run(tmp_path, f"d2-s{seed}", {"model": {"depth": 2}, **common}, t, v, seed=seed)
    fake_run(tmp_path, "d4", {"model": {"depth": 4}, **common}, 0.95, 0.88)
    comp, _ = compare.compare([str(tmp_path / "*")])
    assert comp.keys == ["model.depth"]
    assert [g.values for g in comp.groups] == [{"model.depth": 2}, {"model.depth": 4}]
    mean, std = comp.groups[0].stat("val_accuracy")
    assert mean == pytest.approx(0.86) and std == pytest.approx(0.014142, rel=1e-3)
    header, rows = compare.table_rows(comp)
    assert header[:2] == ["depth", "seeds"] and rows[0][1] == "2" and rows[0][3] == "0.8600 ± 0.0141"
    assert comp.best.values == {"model.depth": 4}


def test_comparative_verdict_worse_on_both_is_failed_to_train_and_better_train_worse_val_overfits(tmp_path):
    fake_run(tmp_path, "d20", {"model": {"depth": 20}}, 0.75, 0.74)
    fake_run(tmp_path, "d56", {"model": {"depth": 56}}, 0.39, 0.38)
    calls = {c["text"].split(":")[0]: c["call"] for c in compare.compare([str(tmp_path / "*")])[0].comparisons}
    assert calls == {"model.depth=56 vs 20": "failed-to-train"}

    other = tmp_path / "b"
    fake_run(other, "w64", {"model": {"width": 64}}, 0.90, 0.86)
    fake_run(other, "w1024", {"model": {"width": 1024}}, 1.00, 0.80)
    fake_run(other, "w256", {"model": {"width": 256}}, 0.95, 0.88)
    comps = {c["text"].split(":")[0]: c["call"] for c in compare.compare([str(other / "*")])[0].comparisons}
    assert comps == {"model.width=256 vs 64": "improves-both", "model.width=1024 vs 256": "overfits"}


def test_small_differences_within_the_noise_are_similar(tmp_path):
    fake_run(tmp_path, "a", {"model": {"activation": "relu"}}, 0.95, 0.930, n_val=144, n_train=1300)
    fake_run(tmp_path, "b", {"model": {"activation": "gelu"}}, 0.951, 0.937, n_val=144, n_train=1300)
    (c,) = compare.compare([str(tmp_path / "*")])[0].comparisons
    assert c["call"] == "similar" and c["tolerance"]["val"] > 0.05


def test_partial_and_broken_runs_are_shown_not_fatal(tmp_path):
    fake_run(tmp_path, "ok", {"model": {"depth": 1}}, 0.9, 0.85)
    fake_run(tmp_path, "killed", {"model": {"depth": 2}}, 0.8, 0.7, summary=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("model: [unclosed\n")
    result = runner.invoke(app, ["compare", str(tmp_path / "*"), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "no summary.json" in result.output and "config.yaml unreadable" in result.output
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Incomplete runs" in md and "unfinished" in md
    data = json.loads(runner.invoke(app, ["compare", str(tmp_path / "ok"), str(tmp_path / "killed"), "--json", "--out", str(tmp_path / "c2")]).output)
    assert data["differing_keys"] == ["model.depth"]
    killed = next(g for g in data["groups"] if g["values"] == {"model.depth": 2})
    # a killed run is listed with its status, never averaged in as a result
    assert killed["val_accuracy"]["mean"] is None and killed["status"] == ["unfinished"]
    assert killed["epochs_run"] == [3]


def test_compare_bad_input(tmp_path):
    result = runner.invoke(app, ["compare", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not found" in result.output
    fake_run(tmp_path, "x", {}, 0.9, 0.8)
    result = runner.invoke(app, ["compare", str(tmp_path / "x"), "--metric", "f1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "'f1' is not one of" in " ".join(result.output.split())


def test_keys_that_vary_together_count_as_one_axis(tmp_path):
    fake_run(tmp_path, "sgd", {"optimizer": {"name": "sgd", "lr": 0.01}}, 0.70, 0.69)
    fake_run(tmp_path, "momentum", {"optimizer": {"name": "momentum", "lr": 0.01}}, 0.85, 0.84)
    fake_run(tmp_path, "adam", {"optimizer": {"name": "adam", "lr": 0.001}}, 0.90, 0.88)
    comp, _ = compare.compare([str(tmp_path / "*")])
    assert set(comp.keys) == {"optimizer.name", "optimizer.lr"}
    texts = sorted(c["text"].split(":")[0] for c in comp.comparisons)
    assert texts == ["optimizer.name=momentum, optimizer.lr=0.01 vs optimizer.name=adam, optimizer.lr=0.001",
                     "optimizer.name=sgd, optimizer.lr=0.01 vs optimizer.name=adam, optimizer.lr=0.001"]
    assert {c["call"] for c in comp.comparisons} == {"failed-to-train"}


def test_compare_shows_a_shared_reference_as_a_row(tmp_path):
    ref = {"model": "linear", "train_accuracy": 0.84, "val_accuracy": 0.81, "epochs": 10}
    for name, depth, acc in (("d20", 20, 0.83), ("d56", 56, 0.64)):
        run = fake_run(tmp_path, name, {"model": {"depth": depth}}, acc, acc - 0.02)
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "reference": ref}))
    comp, _ = compare.compare([str(tmp_path / "*")])
    assert comp.reference == ref
    header, rows = compare.table_rows(comp)
    assert rows[-1][0] == "linear reference" and "0.8400" in rows[-1] and len(rows[-1]) == len(header)
    # a run with another reference (other examples): no shared row
    other = fake_run(tmp_path, "other", {"model": {"depth": 2}}, 0.9, 0.9)
    summary = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**summary, "reference": {**ref, "train_accuracy": 0.9}}))
    assert compare.compare([str(tmp_path / "*")])[0].reference is None


def test_orphaned_members_are_listed_never_averaged_in(tmp_path):
    sweep_dir = tmp_path / "s"
    a = fake_run(sweep_dir, "m0", {"model": {"depth": 1}}, 0.9, 0.85)
    fake_run(sweep_dir, "m1", {"model": {"depth": 2}}, 0.9, 0.86)
    fake_run(sweep_dir, "m0-killed", {"model": {"depth": 1}}, 0.5, 0.4)  # superseded by a resume
    manifest = {"members": [{"index": 0, "dir": "m0", "status": "completed"}, {"index": 1, "dir": "m1", "status": "completed"}]}
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest))
    comp, _ = compare.compare([str(sweep_dir)])
    assert [p.name for p in comp.orphans] == ["m0-killed"] and len(comp.records) == 2
    group = next(g for g in comp.groups if g.values == {"model.depth": 1})
    assert [r.path for r in group.runs] == [a] and group.stat("val_accuracy")[0] == pytest.approx(0.85)
    result = runner.invoke(app, ["compare", str(sweep_dir)])
    assert "m0-killed: not in its sweep's manifest" in " ".join(result.output.split())


def test_a_tuned_sweeps_unchosen_trials_are_neither_compared_nor_orphans_and_its_manifest_is_read_once(tmp_path, monkeypatch):
    from dnnlab import runs

    sweep_dir = tmp_path / "s"
    fake_run(sweep_dir, "m0", {"model": {"depth": 1}, "optimizer": {"lr": 0.01}}, 0.9, 0.85)
    fake_run(sweep_dir, "m0-lr0.1", {"model": {"depth": 1}, "optimizer": {"lr": 0.1}}, 0.5, 0.4)  # a trial not chosen
    fake_run(sweep_dir, "m1", {"model": {"depth": 2}, "optimizer": {"lr": 0.01}}, 0.9, 0.86)
    fake_run(sweep_dir, "m1-copy", {"model": {"depth": 2}, "optimizer": {"lr": 0.01}}, 0.2, 0.1)
    tune = {"key": "optimizer.lr", "values": [0.01, 0.1], "metric": "val_loss", "points": []}
    trial = lambda chosen: {"trial": True, "chosen": chosen}  # noqa: E731
    (sweep_dir / "sweep.json").write_text(json.dumps({"tune": tune, "members": [
        {"index": 0, "dir": "m0", "status": "completed", "tune": trial(True)},
        {"index": 1, "dir": "m0-lr0.1", "status": "completed", "tune": trial(False)},
        {"index": 2, "dir": "m1", "status": "completed", "tune": trial(True)},
    ]}))
    reads = []
    read_manifest = runs.read_manifest
    monkeypatch.setattr(runs, "read_manifest", lambda folder: reads.append(folder) or read_manifest(folder))
    comp, sweeps = compare.compare([str(sweep_dir)])
    assert sorted(r.label for r in comp.records) == ["m0", "m1"] and [p.name for p in comp.orphans] == ["m1-copy"]
    assert comp.tuning == [tune] and sweeps == [sweep_dir] and reads == [sweep_dir]


def test_a_sweep_of_more_than_10000_members_needs_yes(tmp_path):
    lrs = ",".join(str(0.001 + i * 1e-5) for i in range(101))
    widths = ",".join(str(8 + i) for i in range(100))
    args = ["sweep", "configs/quickstart.yaml", "--grid", f"optimizer.lr={lrs}", "--grid", f"model.width={widths}", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "10,100 members" in text and "--yes" in text
    assert list(tmp_path.iterdir()) == []
