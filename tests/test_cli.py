"""The command line through Typer's CliRunner: exit codes, messages, run folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnnlab import runs
from dnnlab.cli import app

runner = CliRunner()
TINY = textwrap.dedent(
    """\
    name: tiny
    data: {dataset: digits, batch_size: 64}
    model: {hidden: [32]}
    optimizer: {name: adam, lr: 0.003}
    train: {epochs: 3}
    """
)


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    # CliRunner keeps an uncaught exception in result.exception: only clean exits are allowed
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def run_dirs(out):
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def test_run_writes_the_run_folder_and_prints_its_path(tiny, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", tiny, "--out", out, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(out)
    assert run.name.startswith("tiny-") and len(run.name.split("-")[-1]) == 4
    assert str(run) in result.output.replace("\n", "")
    assert {"config.yaml", "metrics.jsonl", "summary.json", "best.npz", "last.npz"} <= {p.name for p in run.iterdir()}
    summary = json.loads((run / "summary.json").read_text())
    for key in ("status", "epochs_run", "best_epoch", "final", "best", "wall_seconds", "params", "versions", "device"):
        assert key in summary
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert set(summary["versions"]) == {"jax", "optax", "dnnlab"}
    assert "epochs: 2" in (run / "config.yaml").read_text()  # the resolved config, overrides applied
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    arrays = runs.load_checkpoint(run / "last.npz")
    assert arrays["hidden.0.w"].shape == (64, 32) and arrays["out.b"].shape == (10,)


def test_quiet_prints_only_the_summary_line(tiny, tmp_path):
    result = invoke("run", tiny, "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 0
    text = result.output.replace("\n", "")
    assert text.startswith("completed: 3 epochs, train acc") and "parameters" not in text


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.activaton=relu", "model.activaton: unknown key; did you mean model.activation?"),
        ("optimizer.lr=0", "optimizer.lr: must be greater than 0 (got 0)"),
        ("model.dropout=1.5", "model.dropout: must be less than 1 (got 1.5)"),
        ("model.maxout_pieces=1", "model.maxout_pieces: must be greater than or equal to 2"),
        ("model.activation=swish", "'swish' is not one of: sigmoid, tanh, relu"),
        ("optimizer.name=lbfgs", "'lbfgs' is not one of: sgd, momentum"),
        ("model.depth=3", "both hidden and depth are given"),
        ("train.early_stopping.monitor=val_f1", "'val_f1' is not one of: val_loss, val_accuracy"),
        ("novalue", "expected KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_with_the_key_and_no_run_folder(tiny, tmp_path, override, message):
    out = tmp_path / "r"
    result = invoke("run", tiny, "--out", out, "--set", override)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert run_dirs(out) == []


def test_missing_and_malformed_config_files(tmp_path):
    result = invoke("run", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "nope.yaml: config file not found" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  depth: [1, 2\n")
    result = invoke("validate", bad)
    assert result.exit_code == 2 and "malformed YAML at line" in result.output


def test_missing_dataset_exits_2_naming_the_places_and_the_command(tiny, tmp_path, isolated_home, monkeypatch):
    monkeypatch.setattr("dnnlab.data.builtin.candidate_locations", lambda name, path=None: [tmp_path / "empty"])
    out = tmp_path / "r"
    result = invoke("run", tiny, "--out", out, "--set", "data.dataset=fashion-mnist")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "dataset 'fashion-mnist' not found" in text and "dnnlab data download fashion-mnist" in text
    assert run_dirs(out) == []


def test_ctrl_c_exits_130_and_keeps_the_finished_epochs(tiny, tmp_path, monkeypatch):
    original = runs.RunDir.write

    def write_then_interrupt(self, epoch, metrics):
        original(self, epoch, metrics)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.RunDir, "write", write_then_interrupt)
    result = invoke("run", tiny, "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 130
    (run,) = run_dirs(tmp_path / "r")
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    # the epoch being written when Ctrl-C came is kept, and the weights of the epoch before it
    assert [r["epoch"] for r in runs.read_metrics(run)] == [0, 1, 2] and (run / "last.npz").exists()


def test_ctrl_c_while_loading_data_exits_130(tiny, tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("dnnlab.data.load", interrupted)
    result = invoke("run", tiny, "--out", tmp_path / "r")
    assert result.exit_code == 130 and "interrupted" in result.output


def test_validate_schema_and_data_list(tiny):
    result = invoke("validate", tiny, "--set", "model.activation=prelu")
    assert result.exit_code == 0 and "activation: prelu" in result.output and "is a valid config" in result.output
    result = invoke("schema")
    schema = json.loads(result.output)
    assert "model" in schema["properties"]
    result = invoke("data", "list")
    assert result.exit_code == 0 and "digits" in result.output and "fashion-mnist" in result.output
    result = invoke("data", "download", "cifar100")
    assert result.exit_code == 2 and "no download for 'cifar100'" in result.output


def test_two_run_folders_in_the_same_second_differ(tmp_path):
    a = runs.new_run_dir(tmp_path, "x", now=0)
    b = runs.new_run_dir(tmp_path, "x", now=0)
    assert a != b and a.name[:-4] == b.name[:-4]


def test_a_run_folders_config_is_written_and_read_back_without_jax(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from dnnlab import config, runs
        cfg = config.load_config("configs/quickstart.yaml", ["train.epochs=7", "model.hidden=[8, 8]"])
        runs.write_config({str(tmp_path)!r}, cfg)
        assert runs.read_config({str(tmp_path)!r}) == cfg
        assert runs.read_config({str(tmp_path)!r}, ["train.epochs=9"]).train.epochs == 9
        assert runs.read_raw_config({str(tmp_path)!r}) == cfg.model_dump(mode="json")
        print("jax" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_commands_that_do_not_train_never_import_jax(tiny):
    code = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from dnnlab.cli import app
        r = CliRunner()
        for args in (["--help"], ["validate", {str(tiny)!r}], ["schema"], ["data", "list"]):
            res = r.invoke(app, args)
            assert res.exit_code == 0, (args, res.output)
        print("jax" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_evaluate_mc_dropout_against_weight_scaling(tiny, tmp_path):
    out = tmp_path / "r"
    assert invoke("run", tiny, "--out", out, "--quiet", "--set", "model.dropout=0.5", "--set", "train.epochs=6").exit_code == 0
    (run,) = run_dirs(out)
    result = invoke("evaluate", run, "--mc-dropout", "8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["k"] for r in data["mc"]] == [1, 2, 4, 8] and data["checkpoint"] == "last.npz"
    summary = json.loads((run / "summary.json").read_text())
    assert data["weight_scaling"]["accuracy"] == pytest.approx(summary["final"]["test_accuracy"], abs=1e-6)
    assert data["mc"][-1]["accuracy"] > 0.8
    # averaging 8 masks gives a lower test loss than a single mask
    assert data["mc"][-1]["loss"] < data["mc"][0]["loss"]
    table = invoke("evaluate", run, "--mc-dropout", "2")
    assert "weight scaling" in table.output and "MC dropout, K = 2" in table.output


def test_evaluate_rejects_a_model_without_dropout(tiny, tmp_path):
    out = tmp_path / "r"
    invoke("run", tiny, "--out", out, "--quiet", "--set", "train.epochs=1")
    (run,) = run_dirs(out)
    result = invoke("evaluate", run)
    assert result.exit_code == 2 and "has no dropout" in result.output
    assert invoke("evaluate", run, "--mc-dropout", "0").exit_code == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "data.validation_split=0.0001"], "holds no example"),
        (["--set", "seed=-1"], "seed: must be greater than or equal to 0"),
        (["--set", "model.arch=cnn", "--set", "model.channels=[4,4,4,4]", "--set", "model.hidden=null"], "shrink the 8x8 images of digits to nothing at block 4"),
    ],
)
def test_more_bad_input_exits_2(tiny, tmp_path, args, message):
    result = invoke("run", tiny, "--out", tmp_path / "r", "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert run_dirs(tmp_path / "r") == []


def test_broken_run_folders_get_messages_not_tracebacks(tiny, tmp_path):
    out = tmp_path / "r"
    invoke("run", tiny, "--out", out, "--quiet", "--set", "train.epochs=1")
    (run,) = run_dirs(out)
    (run / "summary.json").write_text("[1, 2]")
    result = invoke("diagnose", run)
    assert result.exit_code == 2 and "expected a JSON object" in result.output
    assert invoke("evaluate", run).exit_code == 2
    (run / "metrics.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    cmp = invoke("compare", run, "--out", tmp_path / "c")
    assert cmp.exit_code == 0 and "summary.json unreadable" in cmp.output
    (run / "config.yaml").write_text("model: {depth: abc}\n")
    result = invoke("diagnose", run)
    assert result.exit_code == 2 and "model.depth" in result.output
    assert invoke("compare", run, "--out", "/dev/null/x").exit_code == 2


def test_bad_sweep_sections_and_metric_exit_2_before_training(tiny, tmp_path):
    for args, message in [
        (["--set", "sweep=3"], "sweep: expected a section"),
        (["--set", "sweep.seeds=abc", "--grid", "train.epochs=1"], "sweep.seeds: must be a valid integer"),
        (["--set", "sweep.grid=[1]"], "sweep.grid"),
        (["--grid", "train.epochs=1,2", "--metric", "f1"], "'f1' is not one of 'train_loss'"),
    ]:
        result = invoke("sweep", tiny, "--out", tmp_path / "s", *args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
    assert run_dirs(tmp_path / "s") == []


@pytest.mark.parametrize("entry", ["console script", "python -m"])
def test_no_traceback_through_the_entry_points(tmp_path, entry):
    exe = shutil.which("dnnlab", path=str(Path(sys.executable).parent)) or shutil.which("dnnlab")
    command = [exe] if entry == "console script" else [sys.executable, "-m", "dnnlab"]
    assert command[0], "the dnnlab console script is not installed (pip install -e .)"
    out = subprocess.run([*command, "run", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert out.returncode == 2 and "config file not found" in out.stderr and "Traceback" not in out.stderr


def test_the_verdict_is_written_before_the_plots_and_complete_draws_them(tiny, tmp_path):
    from dnnlab import config, experiment

    cfg = config.load_config(tiny, ["train.epochs=2", "diagnosis.reference=none"])
    outcome = experiment.execute(cfg, experiment.load_data(cfg), tmp_path / "r")
    report = (outcome.run_dir / "report.md").read_text()
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert summary["diagnosis"]["verdict"] == outcome.diagnosis.verdict and "](curves.png)" not in report
    assert not (outcome.run_dir / "curves.png").exists()
    assert outcome.complete() is outcome and outcome.pending is None
    assert (outcome.run_dir / "curves.png").stat().st_size > 5000
    assert "](curves.png)" in (outcome.run_dir / "report.md").read_text()


def test_options_set_but_not_honoured_are_warned_by_run_validate_and_sweep(tiny, tmp_path):
    result = invoke("validate", tiny, "--set", "model.channels=[8]")
    assert result.exit_code == 0 and "warning: model.channels: [8] is ignored" in " ".join(result.output.split())
    result = invoke("run", tiny, "--out", tmp_path / "r", "--quiet", "--set", "train.epochs=1", "--set", "train.seed_mode=vmap")
    assert result.exit_code == 0 and "warning: train.seed_mode: vmap is ignored" in " ".join(result.output.split())
    assert "warning" not in invoke("validate", tiny).output


def test_version_prints_the_installed_version_without_importing_jax():
    from importlib.metadata import version

    code = textwrap.dedent(
        """
        import sys
        from typer.testing import CliRunner
        from dnnlab.cli import app
        res = CliRunner().invoke(app, ["--version"])
        print(res.exit_code, "jax" in sys.modules, "dnnlab.config" in sys.modules)
        print(res.output.strip())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["0 False False", f"dnnlab {version('dnnlab')}"]


@pytest.mark.parametrize(
    "args, hint",
    [
        (["validate", "{tiny}", "model.depth=8"], "did you mean --set model.depth=8?"),
        (["run", "{tiny}", "--quiet", "model.depth=8", "train.epochs=1"], "did you mean --set model.depth=8 --set train.epochs=1?"),
        (["sweep", "{tiny}", "model.activation=relu,tanh"], "did you mean --grid model.activation=relu,tanh?"),
        (["check", "{tiny}", "data.missing=drop"], "did you mean --set data.missing=drop?"),
    ],
)
def test_a_hydra_style_override_is_a_usage_error_that_names_set(tiny, tmp_path, args, hint):
    out = ["--out", tmp_path / "r"] if args[0] in ("run", "sweep") else []
    result = invoke(*(a.format(tiny=tiny) for a in args), *out)
    assert result.exit_code == 2
    assert hint in " ".join(result.output.replace("│", " ").split()), result.output
    assert run_dirs(tmp_path / "r") == []


def test_an_extra_argument_that_is_no_override_gets_no_hint(tiny):
    from dnnlab.commands.common import extra_arguments_message

    result = invoke("validate", tiny, "other.yaml")
    assert result.exit_code == 2 and "unexpected extra argument" in result.output and "did you mean" not in result.output
    assert extra_arguments_message(["a b=1"]) == "Got unexpected extra argument (a b=1)"
    assert extra_arguments_message(["x", "m.hidden=[512, 256]"]) == (
        "Got unexpected extra arguments (x m.hidden=[512, 256]); did you mean --set 'm.hidden=[512, 256]'?"
    )


@pytest.mark.parametrize("command", ["diagnose", "evaluate", "predict", "export", "fix"])
def test_a_run_folder_that_does_not_exist_says_so(tmp_path, command):
    missing = tmp_path / "runs" / "nonexistent"
    extra = {"predict": ["--split", "test"], "export": ["--out", str(tmp_path / "m.onnx")]}.get(command, [])
    result = invoke(command, missing, *extra)
    assert result.exit_code == 2 and f"{missing} does not exist" in " ".join(result.output.split()), result.output
    assert "no config.yaml" not in result.output


def test_check_fails_real_inputs_that_do_not_beat_zeroed_ones_by_the_margin():
    from dnnlab.smoke import INPUTS_MARGIN, inputs_check

    assert INPUTS_MARGIN == 0.01
    same = inputs_check(2.207, 2.207)
    assert not same.ok and "must be at least 1% lower, under 2.185" in same.detail and "ignores the input" in same.detail
    assert not inputs_check(2.200, 2.207).ok  # 0.3% lower is within the noise
    assert inputs_check(0.05, 2.207).ok
    assert not inputs_check(float("nan"), 2.207).ok


def test_a_finished_run_keeps_its_kept_and_last_weights_and_drops_its_resume_state_unless_asked(tiny, tmp_path):
    out = tmp_path / "r"
    assert invoke("run", tiny, "--out", out, "--quiet", "--set", "train.epochs=1").exit_code == 0
    (run,) = run_dirs(out)
    assert (run / "best.npz").exists() and (run / "last.npz").exists()
    assert not (run / runs.STATE).exists() and not (run / runs.STATE_PREV).exists()
    longer = invoke("run", "--resume", run, "--quiet", "--set", "train.epochs=2")
    said = " ".join(longer.output.split())
    assert longer.exit_code == 2 and "kept no resume state" in said and "--keep-state" in said, said
    assert len(runs.read_metrics(run)) == 2  # nothing changed
    kept = tmp_path / "k"
    assert invoke("run", tiny, "--out", kept, "--quiet", "--set", "train.epochs=1", "--keep-state").exit_code == 0
    (run,) = run_dirs(kept)
    assert (run / runs.STATE).exists() and "keep_state: true" in (run / runs.CONFIG).read_text()
    assert invoke("run", "--resume", run, "--quiet", "--set", "train.epochs=2").exit_code == 0
    assert len(runs.read_metrics(run)) == 3 and (run / runs.STATE).exists()


def test_the_commands_that_train_and_only_they_check_the_cache_folder_first(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DNNLAB_CACHE", str(blocker / "cache"))
    said = {}
    for name in ("run", "diagnose", "check", "lr-find", "sweep", "compare", "evaluate", "fix", "predict", "export",
                 "validate", "schema", "data"):
        result = invoke(name, "--help")
        assert result.exit_code == 0, result.output
        said[name] = "cache folder" in result.output
    assert [name for name, warned in said.items() if warned] == ["run", "check", "lr-find", "sweep", "fix"]
