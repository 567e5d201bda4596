"""TensorBoard event files and MLflow logging, read back and held against metrics.jsonl and
summary.json: a sweep of two tiny digits members logged to a local sqlite store (shared by the
module), a resumed member, an unreachable tracking server and MLflow missing."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dnnlab import runs, tracking
from dnnlab.cli import app
from dnnlab.config import validate

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # MLflow's own
runner = CliRunner()
BASE = {
    "name": "tiny", "seed": 0,
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"hidden": [16]}, "optimizer": {"lr": 0.003}, "train": {"epochs": 2, "keep_state": True},
    "diagnosis": {"reference": "none"}, "logging": {"histograms_every": 1},
}
SPLITS = {"train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test",
          "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val", "test_accuracy": "accuracy/test",
          "lr": "lr", "running_loss": "running/loss", "running_accuracy": "running/accuracy", "seconds": "time/epoch_seconds"}


def expected_scalars(record: dict) -> dict[str, float]:
    """The names the docs promise, written out for a one-hidden-layer MLP: per-layer lists are
    [layer1, output] for the weight statistics and [layer1] for the unit statistics."""
    out = {}
    for key, value in record.items():
        if key in ("epoch", "seed") or value is None:
            continue
        if key in SPLITS:
            out[SPLITS[key]] = value
        elif isinstance(value, list):
            names = ["layer1", "output"] if len(value) == 2 else ["layer1"]
            assert len(value) == len(names), (key, value)
            out.update({f"instruments/{n}/{key}": v for n, v in zip(names, value)})
        else:
            out[f"instruments/{key}"] = value
    return out


def accumulator(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A sweep of two members (seeds 0 and 1: one shape, compiled once), logged to a sqlite
    MLflow store."""
    root = tmp_path_factory.mktemp("tracking")
    (root / "base.yaml").write_text(yaml.safe_dump(BASE))
    uri = f"sqlite:///{root / 'mlflow.db'}"

    def create_store() -> None:  # MLflow builds a new store's tables in seconds: while the sweep trains
        from mlflow import MlflowClient

        MlflowClient(uri).search_experiments()

    store = threading.Thread(target=create_store)
    store.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow keeps a sqlite store's artifacts under ./mlruns
        try:
            result = runner.invoke(app, ["sweep", str(root / "base.yaml"), "--grid", "seed=0,1",
                                         "--out", str(root / "runs"), "--quiet", "--mlflow", uri])
        finally:
            store.join()
        assert result.exit_code == 0, result.output
        (sweep_dir,) = (root / "runs").iterdir()
        members = runs.member_dirs(sweep_dir, runs.read_manifest(sweep_dir)[1])
        assert len(members) == 2
        yield {"root": root, "uri": uri, "sweep": sweep_dir, "members": members, "output": result.output}


def test_scalar_names_oracle():
    record = {"epoch": 3, "seed": 1, "train_loss": 0.5, "val_accuracy": 0.9, "test_loss": None, "lr": 1e-3,
              "running_loss": 0.6, "grad_rms": [1e-3, 2e-3, 3e-3], "dead_fraction": [0.1, 0.2], "grad_ratio": 0.33}
    assert tracking.scalars(record) == {
        "loss/train": 0.5, "accuracy/val": 0.9, "lr": 1e-3, "running/loss": 0.6,
        "instruments/layer1/grad_rms": 1e-3, "instruments/layer2/grad_rms": 2e-3, "instruments/output/grad_rms": 3e-3,
        "instruments/layer1/dead_fraction": 0.1, "instruments/layer2/dead_fraction": 0.2, "instruments/grad_ratio": 0.33,
    }
    deep = {"grad_rms": [0.0] * 12}
    assert list(tracking.scalars(deep))[:2] == ["instruments/layer01/grad_rms", "instruments/layer02/grad_rms"]
    assert tracking.open_board(validate({**BASE, "logging": {"tensorboard": False}}), Path("unused")) is None


def test_tensorboard_events_equal_metrics_jsonl(logged):
    for member in logged["members"]:
        acc = accumulator(member / tracking.TB_DIR)
        history = runs.read_metrics(member)
        summary = runs.read_summary(member)
        assert [r["epoch"] for r in history] == [0, 1, 2]
        expected: dict[str, list[tuple[int, float]]] = {}
        for record in history:
            for tag, value in expected_scalars(record).items():
                expected.setdefault(tag, []).append((record["epoch"], value))
        tags = [t for t in acc.Tags()["scalars"] if not t.startswith(("hparams/", "kept/"))]
        assert sorted(tags) == sorted(expected) and len(expected) > 20
        # the kept model's balanced accuracy and recall of each class, once, at the last epoch
        kept = tracking.kept_scalars(summary)
        assert "kept/balanced_accuracy/val" in kept and "kept/recall/test/9" in kept
        for tag, value in kept.items():
            (point,) = acc.Scalars(tag)
            assert point.step == 2 and point.value == pytest.approx(value, rel=1e-6)
        for tag, points in expected.items():
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert [s for s, _ in got] == [s for s, _ in points], tag  # every epoch once
            np.testing.assert_allclose([v for _, v in got], [v for _, v in points], rtol=1e-6, err_msg=tag)
        # weight histograms every epoch; the last one is last.npz's
        last = runs.load_checkpoint(member / "last.npz")
        assert sorted(acc.Tags()["histograms"]) == sorted(f"weights/{k}" for k in last)
        for name, array in last.items():
            hist = acc.Histograms(f"weights/{name}")
            assert [h.step for h in hist] == [1, 2]
            h = hist[-1].histogram_value
            assert h.num == array.size and h.min == pytest.approx(array.min()) and h.max == pytest.approx(array.max())
            assert h.sum == pytest.approx(float(array.astype(np.float64).sum()), rel=1e-4, abs=1e-4)
        # the config as hparams, with the kept model's metrics; the verdict as text
        from tensorboard.plugins.hparams import plugin_data_pb2

        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        cfg = yaml.safe_load((member / runs.CONFIG).read_text())
        assert hp["optimizer.lr"].number_value == pytest.approx(0.003)
        assert hp["model.hidden"].string_value == json.dumps(cfg["model"]["hidden"]) and hp["data.dataset"].string_value == "digits"
        # the main settings and what BASE chose (diagnosis.reference); no default threshold, key or output setting
        assert sorted(hp) == sorted([*(k for k in tracking.MAIN_HPARAMS if k not in ("model.depth", "model.width")), "diagnosis.reference", "train.keep_state"])
        kept = runs.kept_metrics(summary)
        for metric in runs.METRICS:
            (point,) = acc.Scalars(f"hparams/{metric}")
            assert point.step == 2 and point.value == pytest.approx(kept[metric], rel=1e-6)
        (text,) = acc.Tensors("diagnosis/text_summary")
        words = text.tensor_proto.string_val[0].decode()
        diagnosis = summary["diagnosis"]
        assert f"**verdict**: {diagnosis['verdict']}" in words
        assert all(s in words for r in diagnosis["remedies"] for s in r["sets"]) and diagnosis["remedies"]


def test_hparams_hold_the_main_settings_the_chosen_ones_and_what_a_sweep_varies(tmp_path):
    raw = validate({**BASE, "data": {**BASE["data"], "x_key": "features"}, "diagnosis": {"window": 4}}).model_dump(mode="json")
    shown = tracking.hparams_of(raw)
    assert shown["diagnosis.window"] == 4 and shown["model.hidden"] == "[16]" and shown["optimizer.name"] == "adam"
    assert "diagnosis.overfit_patience" not in shown and "data.x_key" in shown and "name" not in shown
    assert "logging.histograms_every" not in shown and "data.validation_split" not in shown
    assert tracking.hparams_of(raw, ["data.validation_split"])["data.validation_split"] == 0.1  # a swept default
    assert len(tracking.hparams_of(validate({}).model_dump(mode="json"))) == len(tracking.MAIN_HPARAMS) - 1  # hidden null
    sweep_dir = tmp_path / "s"
    for i, value in enumerate((0.1, 0.2)):
        (sweep_dir / f"m{i}").mkdir(parents=True)
        (sweep_dir / f"m{i}" / runs.CONFIG).write_text("name: x\n")
    members = [{"index": i, "dir": f"m{i}", "params": {"data.validation_split": v, "seed": i}} for i, v in enumerate((0.1, 0.2))]
    (sweep_dir / runs.SWEEP_MANIFEST).write_text(json.dumps({"members": members}))
    assert tracking.varied_keys(sweep_dir / "m0") == ["data.validation_split", "seed"]
    assert tracking.varied_keys(tmp_path / "alone") == []


def test_tensorboard_names_the_members_by_their_folders(logged):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    names = set(EventMultiplexer().AddRunsFromDirectory(str(logged["sweep"].parent)).Runs())
    assert names == {f"{logged['sweep'].name}/{m.name}/tb" for m in logged["members"]}
    assert all(m.name.startswith(("tiny-000-", "tiny-001-")) for m in logged["members"])


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def _check_mlflow_run(client, run, member: Path) -> None:
    history, summary = runs.read_metrics(member), runs.read_summary(member)
    raw = yaml.safe_load((member / runs.CONFIG).read_text())
    assert run.data.params == _flatten({k: v for k, v in raw.items() if k != "sweep"})
    assert run.data.params["model.hidden"] == json.dumps(raw["model"]["hidden"])
    diagnosis = summary["diagnosis"]
    assert run.data.tags["status"] == summary["status"] == "completed"
    assert run.data.tags["verdict"] == diagnosis["verdict"] and run.data.tags["causes"] == ", ".join(diagnosis["causes"])
    assert run.info.status == "FINISHED" and run.info.run_name == member.name
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in history:
        for tag, value in expected_scalars(record).items():
            expected.setdefault(tag, []).append((record["epoch"], value))
    kept = tracking.kept_scalars(summary)
    assert set(run.data.metrics) == set(expected) | set(kept) and kept
    assert all(run.data.metrics[tag] == pytest.approx(value) for tag, value in kept.items())
    for tag in ("loss/val", "accuracy/train", "lr", "instruments/layer1/grad_rms", "instruments/output/weight_norm"):
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag))
        assert [s for s, _ in got] == [s for s, _ in expected[tag]], tag
        np.testing.assert_allclose([v for _, v in got], [v for _, v in expected[tag]], rtol=1e-12, err_msg=tag)
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"report.md", "config.yaml", "summary.json", *(p.name for p in member.glob("*.png"))}
    assert "curves.png" in artifacts


def test_mlflow_sweep_is_a_parent_with_one_child_per_member(logged):
    from mlflow import MlflowClient

    client = MlflowClient(logged["uri"])
    experiment = client.get_experiment_by_name("tiny")
    everything = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in everything if r.data.tags.get("dnnlab.kind") == "sweep"]
    assert parent.info.run_name == logged["sweep"].name
    assert {f.path for f in client.list_artifacts(parent.info.run_id)} >= {"sweep.json", "compare.md"}
    children = {r.info.run_name: r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == sorted(m.name for m in logged["members"]) and len(everything) == 3
    for member in logged["members"]:
        _check_mlflow_run(client, children[member.name], member)
    # the sweep said where it logged, in one line
    assert f"logged to MLflow run {parent.info.run_id} at {logged['uri']}" in logged["output"]
    # logging the same folders again changes nothing: one MLflow run per folder
    again = tracking.log_to_mlflow(logged["uri"], logged["sweep"])
    assert again.problems == [] and again.run_id == parent.info.run_id
    alone = tracking.log_to_mlflow(logged["uri"], logged["members"][1])  # a member alone: its sweep's experiment
    assert alone.problems == [] and alone.run_id == children[logged["members"][1].name].info.run_id
    assert len(client.search_runs([experiment.experiment_id])) == 3


def test_mlflow_fix_folder_tags_its_parent(logged, tmp_path):
    fix_dir = tmp_path / "tiny-fix-sweep"
    shutil.copytree(logged["sweep"], fix_dir)
    manifest = runs.read_manifest(fix_dir)[1]
    manifest["fix"] = {"run": "runs/the-run", "control": [], "verdict": "undertrained", "remedies": []}
    runs.write_manifest(fix_dir, runs.SWEEP_MANIFEST, manifest)
    (fix_dir / "fixed.yaml").write_text("name: tiny\n")
    assert tracking.log_to_mlflow(logged["uri"], fix_dir).problems == []
    from mlflow import MlflowClient

    client = MlflowClient(logged["uri"])
    found = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], filter_string="tags.`dnnlab.kind` = 'fix'")
    (parent,) = found
    assert parent.data.tags["fix.verdict"] == "undertrained" and parent.data.tags["fixed"] == "yes"
    assert "fixed.yaml" in {f.path for f in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["dnnlab.run_dir"] for r in children) == sorted(str(m.resolve()) for m in fix_dir.glob("tiny-0*"))


def test_resume_rewrites_tensorboard_and_logs_the_longer_run(logged, tmp_path):
    member = tmp_path / "resumed"
    shutil.copytree(logged["members"][0], member)
    result = runner.invoke(app, ["run", "--resume", str(member), "--set", "train.epochs=3", "--quiet", "--mlflow", logged["uri"]])
    assert result.exit_code == 0, result.output
    history = runs.read_metrics(member)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert len(list((member / tracking.TB_DIR).glob("events.out.tfevents.*"))) == 1  # the earlier file carried over
    acc = accumulator(member / tracking.TB_DIR)
    for tag in ("loss/train", "accuracy/val", "instruments/layer1/grad_rms"):
        points = [(e.step, e.value) for e in acc.Scalars(tag)]
        want = [(r["epoch"], expected_scalars(r)[tag]) for r in history]
        assert [s for s, _ in points] == [0, 1, 2, 3]
        np.testing.assert_allclose([v for _, v in points], [v for _, v in want], rtol=1e-6)
    assert [h.step for h in acc.Histograms("weights/out.w")] == [1, 2, 3]
    assert [t.step for t in acc.Tensors("diagnosis/text_summary")] == [3]  # the earlier report replaced
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams["train.epochs"].number_value == 3
    from mlflow import MlflowClient

    client = MlflowClient(logged["uri"])
    experiment = client.get_experiment_by_name(runs.load_run(member)[1].name)  # a copy outside its sweep: its own name
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`dnnlab.run_dir` = '{member.resolve()}'")
    _check_mlflow_run(client, run, member)
    assert f"logged to MLflow run {run.info.run_id} at {logged['uri']}" in result.output


def test_unreachable_tracking_server_keeps_the_run(logged, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the refusal itself, without the retries' backoff
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(logged["root"] / "base.yaml"), "--out", str(out), "--quiet",
                                 "--mlflow", "http://127.0.0.1:9"])
    assert result.exit_code == 0, result.output  # the run's own code
    (run_dir,) = out.iterdir()
    assert "warning: MLflow at http://127.0.0.1:9 failed" in result.output
    assert f"not logged: {run_dir} (params, metrics, tags, artifacts)" in result.output
    assert "logged to MLflow run" not in result.output
    assert runs.read_summary(run_dir)["status"] == "completed" and len(runs.read_metrics(run_dir)) == 3
    for name in ("report.md", "curves.png", "last.npz"):
        assert (run_dir / name).exists(), name
    assert accumulator(run_dir / tracking.TB_DIR).Tags()["scalars"]


@pytest.mark.parametrize("how", [["--mlflow", "sqlite:///never.db"], ["--set", "logging.mlflow=sqlite:///never.db"]])
def test_without_mlflow_a_clear_error_before_anything_is_written(logged, tmp_path, monkeypatch, how):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails as if it were not installed
    base = str(logged["root"] / "base.yaml")
    commands = [["run", base, *how], ["sweep", base, "--grid", "model.hidden=[8],[16]", *how]]
    if how[0] == "--mlflow":
        commands.append(["fix", str(logged["members"][0]), *how])
    for command in commands:
        result = runner.invoke(app, [*command, "--out", str(tmp_path / "runs")])
        assert result.exit_code == 2, result.output
        assert "MLflow" in result.output and "pip install -e '.[mlflow]'" in result.output
        assert not (tmp_path / "runs").exists()


def test_tensorboard_is_imported_without_pytorch_or_boto3(tmp_path):
    """tensorboardX imports torch (1.3 s of every run) and boto3 (for s3:// folders) whenever they
    are installed; dnnlab imports tensorboardX with them hidden, and both stay importable
    afterwards. Stand-ins on the path record whether they were imported."""
    import subprocess
    import sys
    import textwrap

    for name in ("torch", "boto3"):
        (tmp_path / f"{name}.py").write_text(f"import builtins\nbuiltins.{name.upper()}_IMPORTED = True\nTensor = object\n")
    code = textwrap.dedent(
        """
        import builtins, sys
        from dnnlab import tracking
        tracking._tensorboardx()
        seen = lambda: [getattr(builtins, f"{n.upper()}_IMPORTED", False) for n in ("torch", "boto3")]
        print(*seen(), "torch" in sys.modules, "boto3" in sys.modules)
        import torch, boto3
        print(*seen())
        """
    )
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[1]}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == ["False", "False", "False", "False", "True", "True"], out
