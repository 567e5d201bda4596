"""Faults on real processes and damaged run folders: what is written, what is said, the exit code.

Signals go to `python -m dnnlab` subprocesses training the digits; damaged folders are made by
hand from a short run. Nothing here may end in a traceback or an "unexpected" error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dnnlab import runs, sweep
from dnnlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
LONG = ["--set", "train.epochs=400", "--set", "train.early_stopping.enabled=false", "--set", "diagnosis.reference=none"]


def start(tmp_path, *args):
    env = {**os.environ, "DNNLAB_CACHE": str(tmp_path / "cache")}
    return subprocess.Popen([sys.executable, "-m", "dnnlab", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(folder: Path, n: int, timeout: float = 60.0) -> Path:
    """The first metrics.jsonl under `folder` once it holds epoch `n`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.rglob("metrics.jsonl"):
            try:
                if len(path.read_text().splitlines()) > n:
                    return path.parent
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"no epoch {n} under {folder} within {timeout} s")


@pytest.mark.parametrize("signals, code", [([signal.SIGTERM], 143), ([signal.SIGINT, signal.SIGINT], 130)])
def test_a_signal_mid_run_writes_an_interrupted_summary(tmp_path, signals, code):
    proc = start(tmp_path, "run", "configs/quickstart.yaml", "--out", str(tmp_path / "runs"), "--quiet", *LONG)
    run = wait_for_epochs(tmp_path / "runs", 2)
    for s in signals:  # a second Ctrl-C during the first one's cleanup must not crash it
        proc.send_signal(s)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "unexpected" not in err and "interrupted" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] >= 2
    assert summary["epochs_run"] == len(runs.read_metrics(run)) - 1 and (run / "last.npz").exists()


def test_ctrl_c_stops_a_whole_sweep_and_says_how_to_resume(tmp_path):
    proc = start(tmp_path, "sweep", "configs/quickstart.yaml", "--grid", "model.depth=1,2,3", "--out", str(tmp_path / "s"), "--quiet", *LONG)
    wait_for_epochs(tmp_path / "s", 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "--resume" in err, err
    (folder,) = (tmp_path / "s").iterdir()
    manifest = json.loads((folder / "sweep.json").read_text())
    assert [m["status"] for m in manifest["members"]] == ["interrupted", "pending", "pending"]
    assert not (folder / sweep.LOCK).exists()
    # --resume needs no grid: sweep.json has it; a different grid is refused
    job = sweep.Sweep.resume(folder, sweep.resume_plan(folder, manifest["base"], [], None))
    assert [m["status"] for m in job.pending()] == ["interrupted", "pending", "pending"]
    with pytest.raises(sweep.SweepError, match="differs"):
        sweep.Sweep.resume(folder, sweep.resume_plan(folder, manifest["base"], ["model.depth=1,2"], None))


def test_a_second_resume_of_a_running_sweep_is_refused_and_a_stale_lock_taken_over(tmp_path):
    job = sweep.Sweep.create(tmp_path, "x", "x.yaml", {"train": {"epochs": 1}}, {"model.depth": [1]}, 1)
    lock = job.path / sweep.LOCK
    lock.write_text(f"{os.getppid()}\n")  # a live process
    with pytest.raises(sweep.SweepError, match=f"process {os.getppid()} is running this sweep"):
        sweep.run(job)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout)
    with sweep._Lock(job.path):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A short finished run with dropout (so that evaluate applies), to damage in copies."""
    out = tmp_path_factory.mktemp("finished")
    result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(out), "--quiet", "--set", "train.epochs=3",
                                 "--set", "model.dropout=0.2", "--set", "diagnosis.reference=none",
                                 "--keep-state"])  # its copies resume as if killed: they need the state
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    return run


def damaged(finished, tmp_path):
    copy = tmp_path / finished.name
    shutil.copytree(finished, copy)
    return copy


def test_a_bad_line_in_metrics_is_named_never_dropped(finished, tmp_path):
    run = damaged(finished, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + ["{garbage"] + lines[2:]) + "\n")
    result = runner.invoke(app, ["diagnose", str(run)])
    assert result.exit_code == 2 and "line 3" in result.output and "not JSON" in result.output
    record = json.loads(lines[1])
    (run / "metrics.jsonl").write_text("\n".join([lines[0], json.dumps({**record, "train_loss": "high"})] + lines[2:]) + "\n")
    result = runner.invoke(app, ["diagnose", str(run)])
    assert result.exit_code == 2 and "train_loss is 'high', not a number" in " ".join(result.output.split())
    cmp = runner.invoke(app, ["compare", str(run), "--out", str(tmp_path / "c")])
    assert cmp.exit_code == 0 and "metrics.jsonl unreadable" in cmp.output


@pytest.mark.parametrize("field, value", [("status", 5), ("epochs_run", "3"), ("final", "x"), ("restored_best", "yes")])
def test_wrong_typed_summary_fields_are_bad_input(finished, tmp_path, field, value):
    run = damaged(finished, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, field: value}))
    for command in (["diagnose", str(run)], ["evaluate", str(run), "--mc-dropout", "2"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and f"`{field}`" in result.output, (command, result.output)


@pytest.mark.parametrize("damage", ["truncated", "wrong-shape", "missing-entry"])
def test_bad_checkpoints_are_bad_input(finished, tmp_path, damage):
    run = damaged(finished, tmp_path)
    path = run / "last.npz"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        arrays = runs.load_checkpoint(path)
        if damage == "wrong-shape":
            arrays["out.w"] = np.zeros((3, 3), np.float32)
        else:
            del arrays["out.b"]
        np.savez(path, **arrays)
    result = runner.invoke(app, ["evaluate", str(run), "--mc-dropout", "2", "--checkpoint", "last"])
    assert result.exit_code == 2 and "cannot load the checkpoint" in result.output and "unexpected" not in result.output


def test_files_are_never_written_through_a_symlink(finished, tmp_path):
    """`diagnose --write` replaces a symlinked plot or report by a file of its own: the
    files the links pointed at, outside the run folder, are left as they were."""
    run = damaged(finished, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("curves.png", "report.md"):
        (outside / name).write_text("not yours")
        (run / name).unlink()
        (run / name).symlink_to(outside / name)
    result = runner.invoke(app, ["diagnose", str(run), "--write"])
    assert result.exit_code == 0, result.output
    for name in ("curves.png", "report.md"):
        assert (outside / name).read_text() == "not yours" and not (run / name).is_symlink(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and json.loads((run / "summary.json").read_text())["status"]
    assert not list(run.glob(".*.tmp"))


def test_text_from_data_is_shown_literally_and_kept_exact(tmp_path):
    """Class names that are Rich markup or terminal control codes: `data inspect`, `run` and
    `evaluate` show them as the text they are (escapes for the control codes, never obeyed);
    summary.json keeps them exact."""
    names = ["[/]", "[bold red]x[/]", "esc\x1b]0;pwned\x07"]
    rows = ["a,b,label"] + [f"{i % 5},{(i * 3) % 7},{names[i % 3]}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"name: t\ndata: {{dataset: csv, path: {tmp_path / 't.csv'}, validation_split: 0.2}}\n"
                   "model: {depth: 1, width: 8, dropout: 0.2}\ntrain: {epochs: 1}\ndiagnosis: {reference: none}\n")
    inspect = runner.invoke(app, ["data", "inspect", str(cfg)])
    assert inspect.exit_code == 0, inspect.output
    ran = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs")])
    assert ran.exit_code == 0, ran.output
    (run,) = (tmp_path / "runs").iterdir()
    evaluated = runner.invoke(app, ["evaluate", str(run), "--mc-dropout", "2"])
    assert evaluated.exit_code == 0, evaluated.output
    for result in (inspect, evaluated):
        assert "[/]" in result.output and "[bold red]x[/]" in result.output, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output and "esc\\x1b]0;pwned\\x07" in result.output
    assert "\x1b" not in ran.output
    assert sorted(json.loads((run / "summary.json").read_text())["data"]["classes"]) == sorted(names)


def test_printed_commands_paste_as_the_words_they_are(tmp_path):
    """A run folder under a path with a space and a `$(...)`: report.md's commands, split as a
    shell splits them, give that path as one word (and run nothing)."""
    import shlex

    out = tmp_path / "a b" / "$(touch pwned)"
    result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(out), "--quiet", "--set", "train.epochs=2",
                                 "--set", "optimizer.lr=0.00001", "--set", "diagnosis.reference=none"])
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    report = (run / "report.md").read_text()
    fix = next(line for line in report.splitlines() if "dnnlab fix" in line).split("`")[1]
    assert shlex.split(fix) == ["dnnlab", "fix", str(run)]
    first = report.split("```bash\n")[1].split("\n")[0]
    assert shlex.split(first)[:3] == ["dnnlab", "run", "configs/quickstart.yaml"] and shlex.split(first)[3] == "--set"


def test_a_killed_run_gets_a_provisional_verdict_and_an_unfinished_status(finished, tmp_path):
    run = damaged(finished, tmp_path)
    (run / "summary.json").unlink()
    result = runner.invoke(app, ["diagnose", str(run), "--json"])
    d = json.loads(result.output)
    assert result.exit_code == 0 and d["provisional"] is True and "never finished" in d["warnings"][0]
    assert runner.invoke(app, ["diagnose", str(run), "--write"]).exit_code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "unfinished" and summary["epochs_run"] == 3
    assert "Status **unfinished** after 3 epochs" in (run / "report.md").read_text()
    comp = json.loads(runner.invoke(app, ["compare", str(run), "--json", "--out", str(tmp_path / "c")]).output)
    assert comp["groups"][0]["status"] == ["unfinished"] and comp["groups"][0]["val_accuracy"]["mean"] is None


def test_a_killed_multi_seed_run_diagnoses_the_seeds_that_exist(tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(out), "--quiet", "--seeds", "2",
                                 "--set", "train.epochs=2", "--set", "diagnosis.reference=none"])
    assert result.exit_code == 0
    (folder,) = out.iterdir()
    # as a kill -9 leaves it: the manifest still says running, the seeds have no summary
    manifest = json.loads((folder / "seeds.json").read_text())
    for m in manifest["members"]:
        m["status"] = "pending"
        (folder / m["dir"] / "summary.json").unlink()
    (folder / "seeds.json").write_text(json.dumps({**manifest, "status": "running"}))
    (folder / "summary.json").unlink()
    result = runner.invoke(app, ["diagnose", str(folder), "--json"])
    d = json.loads(result.output)
    assert result.exit_code == 0 and sorted(d) == ["seed-0", "seed-1"] and all(x["provisional"] for x in d.values())


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp_path), "--quiet",
                                     "--set", "train.epochs=1", "--set", "diagnosis.reference=none"])
    finally:
        os.umask(old)
    assert result.exit_code == 0
    (run,) = tmp_path.iterdir()
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if p.is_file()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "last.npz", "report.md", "curves.png"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


def test_the_stub_summary_of_a_run_that_wrote_none_has_the_keys_in_their_order():
    # the bytes of a failed run's summary.json: name, status, reason, then the epochs after epoch 0
    assert json.dumps(runs.stub_summary("q", "failed", history=[{"epoch": 0}, {"epoch": 1}, {"epoch": 2}], reason="disk full")) == (
        '{"name": "q", "status": "failed", "reason": "disk full", "epochs_run": 2}'
    )
    assert json.dumps(runs.stub_summary("q", "interrupted", history=[])) == '{"name": "q", "status": "interrupted", "epochs_run": 0}'
    assert [runs.epochs_run([{}] * n) for n in range(4)] == [0, 0, 1, 2]


def test_a_full_disk_is_a_failed_run_with_its_reason(tmp_path, monkeypatch):
    import errno

    real = runs.RunDir.write

    def write(self, epoch, metrics):
        if epoch == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, epoch, metrics)

    monkeypatch.setattr(runs.RunDir, "write", write)
    result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp_path), "--quiet",
                                 "--set", "train.epochs=4", "--set", "diagnosis.reference=none"])
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["reason"] and summary["epochs_run"] == 1


def test_a_cache_folder_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path, monkeypatch):
    from dnnlab import train
    from dnnlab.train import stored

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DNNLAB_CACHE", str(blocker / "cache"))
    result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp_path / "runs"), "--quiet", "--set", "train.epochs=2"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert said.count(f"warning: the cache folder {blocker / 'cache'} cannot be written") == 1, said
    assert "set DNNLAB_CACHE to a writable folder" in said and "UserWarning" not in said
    # the run is whole and diagnosed with its reference, which was fitted but not kept
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["reference"]["train_accuracy"] > 0.5
    assert (run / "report.md").exists() and (run / "curves.png").exists()
    assert train.use_compile_cache() is None and stored.folder() is None
    # a command that does not train says nothing of it
    assert "cache folder" not in runner.invoke(app, ["validate", "configs/quickstart.yaml"]).output


def test_the_cache_folder_is_made_private_and_a_shared_one_keeps_no_programs(tmp_path, monkeypatch):
    """The cache holds executable programs: dnnlab creates it 0700; one that the group (or
    anyone) can write is said once, and no compiled program is loaded from it or kept there."""
    from dnnlab import train
    from dnnlab.train import stored

    monkeypatch.setenv("DNNLAB_CACHE", str(tmp_path / "new" / "cache"))
    assert runs.cache_problem() is None and (tmp_path / "new" / "cache").stat().st_mode & 0o777 == 0o700
    assert runs.cache_exposure() is None and stored.folder() is not None
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    monkeypatch.setenv("DNNLAB_CACHE", str(shared))
    result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp_path / "runs"), "--quiet",
                                 "--set", "train.epochs=1", "--set", "diagnosis.reference=none"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and said.count(f"warning: the cache folder {shared} is not private (its group can write it)") == 1, said
    assert not (shared / "programs").exists() and not (shared / "xla").exists()
    assert stored.folder() is None and train.use_compile_cache() is None


def test_the_writer_thread_keeps_the_order_and_raises_a_failure_at_the_next_call():
    """runs.Background: the calls reach the writers in order; a write that fails stops every
    later one and is raised in the caller's thread by its next call (the training loop)."""
    import errno
    import threading

    seen = []

    class Slow(runs.Writer):
        def write(self, epoch, metrics):
            assert threading.current_thread().name == "dnnlab-writer"
            time.sleep(0.01)
            if epoch == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            seen.append(("write", epoch, metrics["loss"]))

        def checkpoint(self, tag, arrays):
            seen.append(("checkpoint", tag, float(arrays["w"][0])))

        def finish(self, summary):
            seen.append(("finish", summary["status"]))

    files = runs.Background(Slow())
    metrics = {"loss": 1.0}
    files.write(1, metrics)
    metrics["loss"] = 9.0  # the caller's dict may change after the call: the writer saw a copy
    files.checkpoint("last", {"w": np.ones(2)})
    files.write(2, {"loss": 0.5})
    files.finish({"status": "completed"})
    assert seen == [("write", 1, 1.0), ("checkpoint", "last", 1.0), ("write", 2, 0.5), ("finish", "completed")]
    with pytest.raises(OSError, match="No space"):
        files.write(3, {"loss": 0.1})
        files.checkpoint("last", {"w": np.zeros(2)})  # skipped behind the failing write, or refused
        files.drain()
    files.close()
    assert seen[4:] == [] and not files.thread.is_alive()


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_killed_run_resumes_to_the_uninterrupted_result_bit_for_bit(tmp_path, early_stopping):
    """SIGKILL at a random epoch, `run --resume`: every metric of every epoch, the final and best
    weights, the best epoch and the status equal those of a run that was never stopped."""
    import random

    # batch 64: epochs slow enough (~23 steps) that the kill lands before the run ends
    settings = ["--set", "train.epochs=40", "--set", "data.batch_size=64", "--set", "model.dropout=0.3", "--set", "diagnosis.reference=none",
                "--set", f"train.early_stopping.enabled={str(early_stopping).lower()}", "--set", "train.early_stopping.patience=6"]
    full = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp_path / "full"), "--quiet", *settings])
    assert full.exit_code == 0
    (reference,) = (tmp_path / "full").iterdir()
    epochs = json.loads((reference / "summary.json").read_text())["epochs_run"]
    kill_at = random.Random().randint(2, max(2, epochs // 2))  # the first half: the kill lands mid-run
    proc = start(tmp_path, "run", "configs/quickstart.yaml", "--out", str(tmp_path / "cut"), "--quiet", *settings)
    run = wait_for_epochs(tmp_path / "cut", kill_at)
    proc.kill()
    proc.communicate(timeout=30)
    assert not (run / "summary.json").exists()
    resumed = runner.invoke(app, ["run", "--resume", str(run), "--quiet"])
    assert resumed.exit_code == 0, (kill_at, resumed.output)

    def records(folder):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(folder)]

    assert records(run) == records(reference), kill_at
    for tag in ("last", "best"):
        a, b = runs.load_checkpoint(reference / f"{tag}.npz"), runs.load_checkpoint(run / f"{tag}.npz")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), (tag, kill_at)
    sa, sb = (json.loads((f / "summary.json").read_text()) for f in (reference, run))
    assert [sa[k] for k in ("status", "best_epoch", "epochs_run", "restored_best")] == [sb[k] for k in ("status", "best_epoch", "epochs_run", "restored_best")]
    # a finished run says so; a changed config is refused, naming the key; more epochs are allowed
    again = runner.invoke(app, ["run", "--resume", str(run)])
    assert again.exit_code == 0 and "nothing to resume" in again.output
    changed = runner.invoke(app, ["run", "--resume", str(run), "--set", "optimizer.lr=0.01"])
    assert changed.exit_code == 2 and "optimizer.lr (0.001 -> 0.01)" in " ".join(changed.output.split())


def test_a_damaged_state_falls_back_to_the_one_before_or_is_refused(finished, tmp_path):
    """A state.npz with a NaN (or float64 numbers): the run continues from state.prev.npz, to the
    records of the run that was never stopped; both damaged: exit 2 naming the array. evaluate
    refuses weights with a NaN."""
    run = damaged(finished, tmp_path)
    before = [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(run)]
    (run / "summary.json").unlink()  # as a run killed after its last epoch
    arrays = runs.load_checkpoint(run / "state.npz")
    name = next(k for k, v in arrays.items() if k.startswith("state.") and v.dtype == np.float32)
    for damage in (np.nan, "float64"):
        shutil.copy(finished / "state.prev.npz", run / "state.prev.npz")
        bad = arrays[name].astype(np.float64) if damage == "float64" else np.full_like(arrays[name], np.nan)
        np.savez(run / "state.npz", **{**arrays, name: bad})
        result = runner.invoke(app, ["run", "--resume", str(run), "--quiet"])
        said = " ".join(result.output.split())
        assert result.exit_code == 0 and f"continued from state.prev.npz (epoch {len(before) - 2})" in said and name in said, said
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(run)] == before
        (run / "summary.json").unlink()
    for f in ("state.npz", "state.prev.npz"):
        np.savez(run / f, **{**arrays, name: np.full_like(arrays[name], np.nan)})
    result = runner.invoke(app, ["run", "--resume", str(run), "--quiet"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and f"array {name} holds a NaN or an infinity" in said and "unexpected" not in said, said
    weights = runs.load_checkpoint(run / "last.npz")
    np.savez(run / "last.npz", **{k: np.full_like(v, np.nan) for k, v in weights.items()})
    result = runner.invoke(app, ["evaluate", str(run), "--mc-dropout", "2", "--checkpoint", "last"])
    assert result.exit_code == 2 and "holds a NaN or an infinity" in result.output, result.output


def test_a_resume_of_a_run_in_training_is_refused_and_one_stopped_before_its_first_epoch_starts_again(finished, tmp_path):
    run = damaged(finished, tmp_path)
    before = [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(run)]
    (run / "summary.json").unlink()
    (run / runs.RUN_LOCK).write_text(f"{os.getppid()}\n")  # a live process trains in it
    result = runner.invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 2 and f"process {os.getppid()} is training this run" in " ".join(result.output.split())
    (run / runs.RUN_LOCK).unlink()
    # stopped before its first epoch: no state, epoch 0 at most; a stale temp file of a kill
    for name in ("state.npz", "state.prev.npz", "last.npz", "best.npz"):
        (run / name).unlink(missing_ok=True)
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    (run / "summary.json").write_text(json.dumps({"name": "quickstart", "status": "interrupted", "epochs_run": 0}))
    (run / ".metrics.jsonl.abc.tmp").write_text("half")
    result = runner.invoke(app, ["run", "--resume", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(run)] == before
    assert json.loads((run / "summary.json").read_text())["status"] == "completed" and not list(run.glob(".*.tmp"))


def test_a_resumed_run_holds_every_epoch_once_in_tensorboard(finished, tmp_path):
    """A kill can cut the event file short of epochs that metrics.jsonl and the state hold: on
    resume the scalars are written again from metrics.jsonl, the histograms carried over."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    from dnnlab import tracking

    run = damaged(finished, tmp_path)
    (run / "summary.json").unlink()
    (events,) = (run / tracking.TB_DIR).glob("events.out.tfevents.*")
    data, pos, cut = events.read_bytes(), 0, None
    while pos + 12 <= len(data):  # TFRecord framing: length, its CRC, the event, its CRC
        (length,) = struct.unpack_from("<Q", data, pos)
        event = Event.FromString(data[pos + 12:pos + 12 + length])
        if cut is None and event.step >= 2 and event.HasField("summary"):
            cut = pos
        pos += 16 + length
    def steps() -> dict[tuple[str, str], list[int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for path in (run / tracking.TB_DIR).glob("events.out.tfevents.*"):
            for event in tracking._read_events(path):
                for value in event.summary.value:
                    if not value.tag.startswith(tracking.REPORT_TAGS):
                        out.setdefault((value.tag, value.WhichOneof("value")), []).append(event.step)
        return {k: sorted(v) for k, v in out.items()}

    whole = steps()
    events.write_bytes(data[:cut])
    assert runner.invoke(app, ["run", "--resume", str(run), "--quiet"]).exit_code == 0
    assert steps() == whole and whole[("loss/train", "simple_value")] == [0, 1, 2, 3]


def test_compare_never_writes_into_a_run_folder_and_names_what_it_cannot_read(finished, tmp_path):
    run = damaged(finished, tmp_path)
    curves = (run / "curves.png").read_bytes()
    result = runner.invoke(app, ["compare", str(run), "--out", str(run)])
    assert result.exit_code == 2 and "is a run folder" in result.output and (run / "curves.png").read_bytes() == curves
    assert not (run / "compare.md").exists()
    other = damaged(finished, tmp_path / "b")
    (other / "config.yaml").write_text("- a\n- b\n")
    result = runner.invoke(app, ["compare", str(run), str(other), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0 and "config.yaml is not a mapping (a YAML list)" in " ".join(result.output.split()), result.output
    lines = (run / "metrics.jsonl").read_text().splitlines()
    for edited in (lines[:2] + lines[1:], lines[:1] + lines[2:]):  # a duplicated, a missing epoch
        (run / "metrics.jsonl").write_text("\n".join(edited) + "\n")
        result = runner.invoke(app, ["diagnose", str(run)])
        assert result.exit_code == 2 and "a duplicated or missing epoch" in " ".join(result.output.split()), result.output


def test_resume_without_a_state_is_bad_input(finished, tmp_path):
    run = damaged(finished, tmp_path)
    (run / "summary.json").unlink()
    for name in ("state.npz", "state.prev.npz"):
        (run / name).unlink(missing_ok=True)
    result = runner.invoke(app, ["run", "--resume", str(run)])
    assert result.exit_code == 2 and "nothing to resume from" in result.output


def test_sweep_resume_continues_an_interrupted_member_from_its_state(tmp_path):
    args = ["--grid", "model.depth=1,2", "--out", str(tmp_path / "s"), "--quiet", "--set", "train.epochs=40",
            "--set", "train.early_stopping.enabled=false", "--set", "diagnosis.reference=none"]
    proc = start(tmp_path, "sweep", "configs/quickstart.yaml", *args)
    member = wait_for_epochs(tmp_path / "s", 3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    (folder,) = (tmp_path / "s").iterdir()
    before = len(runs.read_metrics(member))
    result = runner.invoke(app, ["sweep", "configs/quickstart.yaml", "--resume", str(folder), "--quiet",
                                 "--set", "train.epochs=40", "--set", "train.early_stopping.enabled=false", "--set", "diagnosis.reference=none"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((folder / "sweep.json").read_text())
    assert [m["status"] for m in manifest["members"]] == ["completed", "completed"]
    # the interrupted member went on in its own folder: no second folder, all 40 epochs
    assert manifest["members"][0]["dir"] == member.name and 3 < before <= 41
    assert len(runs.read_metrics(member)) == 41
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(m["dir"] for m in manifest["members"])


def test_two_quick_ctrl_c_during_the_first_compile_end_cleanly(tmp_path):
    proc = start(tmp_path, "run", "configs/quickstart.yaml", "--out", str(tmp_path / "runs"), "--quiet", *LONG)
    deadline = time.monotonic() + 60
    while not any((tmp_path / "runs").glob("*/config.yaml")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the run folder exists: the first programs are compiling
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    for leak in ("Traceback", "Exception ignored", "Warning", "unexpected"):
        assert leak not in err, err
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


def test_a_stop_signal_at_any_moment_ends_the_run_with_its_code_and_summary(tmp_path):
    """SIGTERM or SIGINT at a spread of moments from process start (imports, config, data, JAX's
    import, the first compilation, training) and a second one during the shutdown: every process
    ends with 143 or 130 within a bounded time, says interrupted, and a run folder, if it was made,
    holds an interrupted summary of its epochs on disk."""
    spread = [(0.2, signal.SIGTERM), (0.5, signal.SIGINT), (0.9, signal.SIGTERM), (1.4, signal.SIGINT),
              (2.0, signal.SIGTERM), (3.0, signal.SIGINT)]
    for wave in (spread[0::2], spread[1::2]):  # three processes at a time: a few seconds each
        procs = []
        for offset, signum in wave:
            out = tmp_path / f"at-{offset}"
            procs.append((offset, signum, out, time.monotonic(), start(tmp_path, "run", "configs/quickstart.yaml", "--out", str(out), "--quiet", *LONG)))
        for offset, signum, out, t0, proc in procs:
            time.sleep(max(0.0, t0 + offset - time.monotonic()))
            proc.send_signal(signum)
        time.sleep(1.0)
        for offset, signum, out, t0, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)  # during the shutdown: must not abort it
        for offset, signum, out, t0, proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 128 + signum, (offset, signum, proc.returncode, err)
            assert "interrupted" in err and "Traceback" not in err and "Exception ignored" not in err, (offset, err)
            for run in out.glob("*/") if out.exists() else ():
                summary = json.loads((run / "summary.json").read_text())
                assert summary["status"] == "interrupted" and summary["epochs_run"] == len(runs.read_metrics(run)) - 1, (offset, summary)


def test_a_stop_that_no_stop_point_takes_ends_the_process_after_the_grace(tmp_path):
    """The watchdog: a process that never reaches a stop point (here, a loop of sleeps) ends
    STOP_GRACE after the signal with its code, after its last words."""
    code = (
        "import sys, time\n"
        "from dnnlab import interrupt\n"
        "interrupt.STOP_GRACE = 0.5\n"
        "interrupt.install()\n"
        f"words = lambda: open({str(tmp_path / 'words')!r}, 'w').write('said')\n"
        "with interrupt.last_words(words):\n"
        "    print('ready', flush=True)\n"
        "    for _ in range(600):\n"
        "        time.sleep(0.1)\n"
        "sys.exit(5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "no stopping point within 0.5 s" in err, err
    assert 0.4 < time.monotonic() - t0 < 10 and (tmp_path / "words").read_text() == "said"


# ---------------------------------------------------------------- a run tied to its inputs


def test_a_resumed_or_fixed_run_is_held_to_its_config_and_data(tmp_path, monkeypatch):
    """run --resume and fix: the data are found where the run found them from any folder; a hand
    edit of config.yaml (but for more epochs) or changed data is refused with exit 2, naming what
    differs and the command that trains afresh."""
    rows = ["a,b,y"] + [f"{i % 7},{(i * 5) % 11},{i % 3}" for i in range(60)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.yaml").write_text("name: t\ndata: {dataset: csv, path: data/t.csv}\nmodel: {depth: 1, width: 8}\n"
                                     "train: {epochs: 2, keep_state: true}\ndiagnosis: {reference: none}\nlogging: {tensorboard: false}\n")
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["run", "t.yaml", "--out", "runs", "--quiet"]).exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    run = run.resolve()
    inputs = json.loads((run / "inputs.json").read_text())
    assert inputs["data"]["files"][0]["path"] == str(tmp_path / "data" / "t.csv") and len(inputs["config_sha256"]) == 64
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    grown = runner.invoke(app, ["run", "--resume", str(run), "--quiet", "--set", "train.epochs=3"])
    assert grown.exit_code == 0 and len(runs.read_metrics(run)) == 4, grown.output
    text = (run / "config.yaml").read_text()
    for edit, said in (("seed: 0", "seed: 7"), ("epochs: 3", "epochs: 1")):
        (run / "config.yaml").write_text(text.replace(edit, said))
        for command in (["run", "--resume", str(run), "--set", "train.epochs=4"], ["fix", str(run), "--out", str(tmp_path / "fixes")]):
            result = runner.invoke(app, command)
            out = " ".join(result.output.split())
            key = edit.split(":")[0]
            assert result.exit_code == 2 and f"{key} (" in out and f"dnnlab run {run / 'config.yaml'} --out {run.parent}" in out, (command, out)
    (run / "config.yaml").write_text(text)
    (tmp_path / "data" / "t.csv").write_text("\n".join(rows[:1] + [r.replace(",", ",1", 1) for r in rows[1:]]) + "\n")
    for command in (["run", "--resume", str(run), "--set", "train.epochs=4"], ["fix", str(run), "--out", str(tmp_path / "fixes")]):
        result = runner.invoke(app, command)
        out = " ".join(result.output.split())
        assert result.exit_code == 2 and "the data differ from those the run started with: data.path" in out, (command, out)
    assert len(runs.read_metrics(run)) == 4 and not (tmp_path / "fixes").exists()


def test_a_cache_entry_of_the_wrong_shape_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLAB_CACHE", str(tmp_path / "cache"))
    args = ["run", "configs/quickstart.yaml", "--out", str(tmp_path / "runs"), "--quiet", "--set", "train.epochs=2"]
    assert runner.invoke(app, args).exit_code == 0
    (entry,) = (tmp_path / "cache" / "reference").iterdir()
    cached = json.loads(entry.read_text())
    seen = set((tmp_path / "runs").iterdir())
    for bad in ({"train_accuracy": "high"}, {"epochs": None}, {"val_accuracy": 7.0}):
        entry.write_text(json.dumps({**cached, "reference": {**cached["reference"], **bad}}))
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (bad, result.output)
        (new,) = set((tmp_path / "runs").iterdir()) - seen
        seen.add(new)
        summary = json.loads((new / "summary.json").read_text())
        assert summary["reference"]["cached"] is False and summary["reference"]["train_accuracy"] == cached["reference"]["train_accuracy"]
        assert json.loads(entry.read_text()) == {**cached, "reference": {**cached["reference"], "seconds": json.loads(entry.read_text())["reference"]["seconds"]}}


def test_ray_and_mlflow_addresses_are_checked_before_anything_trains(tmp_path, monkeypatch):
    """--ray at a server that is not Ray (an HTTP server, as the dashboard's port is) gives up in
    bounded time with exit 2; --mlflow with a store MLflow refuses (a plain folder, an unknown
    scheme) is exit 2 before any training. Nothing is written."""
    import socketserver
    import threading

    class Http(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(1024)
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    server = socketserver.TCPServer(("127.0.0.1", 0), Http)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        result = runner.invoke(app, ["sweep", "configs/quickstart.yaml", "--grid", "model.depth=1,2", "--ray",
                                     f"127.0.0.1:{server.server_address[1]}", "--out", str(tmp_path / "s")])
        assert result.exit_code == 2 and "not a Ray cluster" in " ".join(result.output.split()), result.output
        assert time.monotonic() - t0 < 60 and not (tmp_path / "s").exists()
    finally:
        server.shutdown()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for uri in (str(tmp_path / "mlruns"), "bogus://x"):
        result = runner.invoke(app, ["run", "configs/quickstart.yaml", "--mlflow", uri, "--out", str(tmp_path / "r"), "--quiet"])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and "MLflow cannot use it as a tracking store" in said and "unexpected" not in said, said
        assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- data in the type it is used in


def _data_cfg(**data):
    from dnnlab.config import validate

    return validate({"data": data}).data


def test_a_value_beyond_float32_is_named_with_its_line_and_column(tmp_path):
    from dnnlab import data

    rows = ["a,b,label"] + [f"{i},{1e39 if i == 4 else i},{i % 2}" for i in range(12)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(data.DataError, match=r"column 1 \('b'\) holds 1e\+39 at line 6, beyond float32's range"):
        data.load(_data_cfg(dataset="csv", path=str(tmp_path / "t.csv")), 0)
    x = np.ones((12, 3))
    x[5, 2] = -1e300
    np.savez(tmp_path / "t.npz", x=x, y=np.arange(12) % 2)
    with pytest.raises(data.DataError, match=r"example 5, value 2 holds -1e\+300, beyond float32's range"):
        data.load(_data_cfg(dataset="npz", path=str(tmp_path / "t.npz")), 0)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"data: {{dataset: csv, path: {tmp_path / 't.csv'}}}\n")
    result = runner.invoke(app, ["data", "inspect", str(cfg)])
    assert result.exit_code == 2 and "line 6" in result.output, result.output


def test_labels_are_compared_as_what_they_are_and_folder_names_are_names(tmp_path):
    from PIL import Image

    from dnnlab import data

    big = 2**53
    np.savez(tmp_path / "big.npz", x=np.arange(12, dtype=np.float32)[:, None], y=np.asarray([big, big + 1] * 6, np.int64))
    ds = data.load(_data_cfg(dataset="npz", path=str(tmp_path / "big.npz"), validation_split=0.0), 0)
    assert ds.classes == (str(big), str(big + 1)) and ds.num_classes == 2
    for names, order in ((["1", "01", "2"], None), (["inf", "Infinity", "x"], None), (["10", "9", "100"], ("9", "10", "100"))):
        root = tmp_path / "-".join(names)
        for name in names:
            (root / name).mkdir(parents=True)
            for k in range(3):
                Image.fromarray(np.full((4, 4), 40 * k, np.uint8)).save(root / name / f"{k}.png")
        ds = data.load(_data_cfg(dataset="folder", path=str(root), validation_split=0.0), 0)
        assert sorted(ds.classes) == sorted(names) and ds.num_classes == 3, ds.classes
        if order:
            assert ds.classes == order


def test_odd_data_files_get_their_own_messages(tmp_path):
    """A line of 20,000 tab-separated columns is read; a test file with another separator than the
    training file's is read; an .npy under an .npz name, and a device, are named for what they are."""
    from dnnlab import data

    wide = ["\t".join([*(str((i * j) % 7) for j in range(20_000)), str(i % 2)]) for i in range(8)]
    (tmp_path / "wide.tsv").write_text("\n".join(wide) + "\n")
    ds = data.load(_data_cfg(dataset="csv", path=str(tmp_path / "wide.tsv"), validation_split=0.0), 0)
    assert ds.input_dim == 20_000
    (tmp_path / "train.csv").write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(10)))
    (tmp_path / "test.csv").write_text("a;b;y\n" + "".join(f"{i};{i * 3};{i % 2}\n" for i in range(6)))
    ds = data.load(_data_cfg(dataset="csv", path=str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"), validation_split=0.0), 0)
    assert len(ds.test) == 6 and list(ds.test.y) == [0, 1] * 3
    np.save(tmp_path / "single.npy", np.ones((4, 2)))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(data.DataError, match=r"holds a single array \(an .npy file\), not an npz archive"):
        data.load(_data_cfg(dataset="npz", path=str(tmp_path / "single.npz")), 0)
    with pytest.raises(data.DataError, match=r"/dev/zero is not a regular file \(a device, a pipe or a socket\)"):
        data.load(_data_cfg(dataset="csv", path="/dev/zero"), 0)


def test_a_validation_split_that_leaves_classes_without_training_examples_is_a_warning(tmp_path):
    result = runner.invoke(app, ["data", "inspect", "configs/quickstart.yaml", "--set", "data.validation_split=0.999"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "warning: the training split holds 1 examples" in said and "classes have none" in said, said
    assert "warning" not in runner.invoke(app, ["data", "inspect", "configs/quickstart.yaml"]).output


# ---------------------------------------------------------------- a generated config corpus


_SECTIONS = {
    "data": ["dataset", "path", "validation_split", "train_size", "batch_size", "normalize", "split_seed"],
    "model": ["arch", "depth", "width", "hidden", "activation", "dropout", "input_dropout", "channels", "kernel", "pool", "blocks", "norm", "residual", "init"],
    "optimizer": ["name", "lr", "momentum", "schedule", "clip_norm", "eps", "step_epochs"],
    "regularization": ["l1", "l2", "weight_decay"],
    "train": ["epochs", "seeds", "loop", "stack", "unroll", "early_stopping", "divergence_factor"],
    "diagnosis": ["reference", "reference_margin", "probe_size", "window"],
}
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["relu", "adam", "digits", "mlp", "cnn", "1e-3", "-1", ".inf", "[1, 2"]),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_configs = st.dictionaries(
    st.sampled_from([*_SECTIONS, "name", "seed", "sweep", "bogus"]),
    st.one_of(_values, st.sampled_from(list(_SECTIONS)).flatmap(lambda s: st.dictionaries(st.sampled_from(_SECTIONS[s] + ["typo"]), _values, max_size=4))),
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=_configs)
def test_any_generated_config_is_valid_or_a_clean_exit_2(tmp_path, raw):
    import yaml

    path = tmp_path / "generated.yaml"
    try:
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (raw, repr(result.exception))
    assert result.exit_code in (0, 2), (raw, result.exit_code, result.output)
    assert "unexpected" not in result.output and "Traceback" not in result.output, (raw, result.output)
    if result.exit_code == 2:
        assert result.output.strip().startswith("error:") or "error:" in result.output, result.output


def test_a_killed_multi_seed_run_resumes_seed_by_seed(tmp_path):
    """Sequential seeds (the CPU's choice for this width): the killed seed continues from its
    state, the seed that never started runs; each equals its own run, bit for bit."""
    settings = ["--seeds", "2", "--set", "train.epochs=30", "--set", "train.early_stopping.enabled=false",
                "--set", "diagnosis.reference=none", "--set", "train.seed_mode=sequential"]
    full = runner.invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp_path / "full"), "--quiet", *settings])
    assert full.exit_code == 0
    (reference,) = (tmp_path / "full").iterdir()
    proc = start(tmp_path, "run", "configs/quickstart.yaml", "--out", str(tmp_path / "cut"), "--quiet", *settings)
    (folder,) = [wait_for_epochs(tmp_path / "cut", 5).parent]
    proc.kill()
    proc.communicate(timeout=30)
    assert not (folder / "seed-1" / "summary.json").exists()
    result = runner.invoke(app, ["run", "--resume", str(folder), "--quiet"])
    assert result.exit_code == 0, result.output
    for seed in ("seed-0", "seed-1"):
        a = [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(reference / seed)]
        b = [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(folder / seed)]
        assert a == b and all(r["seed"] == int(seed[-1]) for r in b), seed
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["aggregated_seeds"] == [0, 1]
    assert summary["mean"] == json.loads((reference / "summary.json").read_text())["mean"]
