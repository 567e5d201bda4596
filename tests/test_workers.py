"""A sweep's members on worker processes (`--workers N`) and as Ray tasks (`--ray`): the same
metrics as a sequential sweep, the same sweep.json, Ctrl-C and --resume, a crashed worker.

Tolerance: a worker pinned to fewer cores than the sequential run may let XLA split its sums
differently, so metrics are compared within 1e-5 relative (and bit for bit where the worker
has the same cores as the sequential run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from dnnlab import runs, sweep

from dnnlab.sweep import workers
from dnnlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# the tiny digits MLP of test_sweep_compare: in a whole test session its programs are compiled already
TINY = {
    "name": "tiny", "seed": 0,
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"hidden": [16]}, "optimizer": {"lr": 0.003}, "train": {"epochs": 3}, "diagnosis": {"reference": "none"},
}
RTOL = 1e-5


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def make_sweep(parent: Path, seeds: int = 4) -> sweep.Sweep:
    p = sweep.plan(TINY, [], seeds)
    return sweep.Sweep.create(parent, "tiny", "tiny.yaml", p.base, p.grid, p.seeds, p.variants)


def metrics(job: sweep.Sweep, member: int | None = None) -> np.ndarray:
    """Every number the members (or one member) wrote to metrics.jsonl but the timings, in order."""
    out = []
    for m in job.members if member is None else [job.members[member]]:
        assert m["status"] == "completed", m
        for row in runs.read_metrics(job.path / m["dir"]):
            out += [v for k in sorted(row) if k != "seconds" for v in np.ravel(row[k]) if v is not None]
    return np.asarray(out, dtype=float)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> sweep.Sweep:
    job = make_sweep(tmp_path_factory.mktemp("sequential"))
    sweep.run(job)
    return job


def test_core_shares_split_the_cores_and_give_each_worker_at_least_one():
    assert workers.core_shares([0, 1], 2) == [[0], [1]]
    assert workers.core_shares([0, 1, 2, 3, 4, 5, 6, 7], 3) == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert workers.core_shares([4, 5], 3) == [[4], [4], [5]]  # more workers than cores: they share
    assert workers.core_shares([0, 1, 2], 1) == [[0, 1, 2]]


class FakeProcess:
    """What `Pool` needs of a Popen: it records the command and environment, and has ended."""

    started: list[tuple[list[str], dict[str, str]]] = []

    def __init__(self, args, env, **_):
        self.started.append((args, env))
        self.stdin, self.stdout, self.stderr, self.pid = None, iter(()), iter(()), 0

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0


def test_with_accelerators_each_worker_sees_its_own_device(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "accelerators", lambda: ("cuda", ["3", "5"]))
    monkeypatch.setattr(workers.subprocess, "Popen", FakeProcess)
    told = []
    pool = workers.Pool(tmp_path, 2, told.append)
    for slot in range(2):
        pool._start(slot)
    envs = [env for _, env in FakeProcess.started[-2:]]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5"] and not told
    assert all("--cores" not in args for args, _ in FakeProcess.started[-2:])  # the device does the work
    assert all("XLA_PYTHON_CLIENT_PREALLOCATE" not in e for e in envs)
    assert [pool.placement(s)["device"] for s in range(2)] == ["cuda:3", "cuda:5"]

    shared = workers.Pool(tmp_path, 3, told.append)  # more workers than devices: they share, and say so
    shared._start(2)
    env = FakeProcess.started[-1][1]
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert told == ["--workers 3 on 2 cuda device(s): workers share devices"]

    monkeypatch.setattr(workers, "accelerators", lambda: ("tpu", ["0"]))
    with pytest.raises(sweep.SweepError, match="not on tpu"):
        workers.Pool(tmp_path, 2)
    with pytest.raises(sweep.SweepError, match="at least 1"):
        workers.Pool(tmp_path, 0)


def test_two_workers_give_the_metrics_of_a_sequential_sweep(tmp_path, sequential):
    job = make_sweep(tmp_path)
    sweep.run(job, workers=2)
    shares = workers.core_shares(sorted(os.sched_getaffinity(0)), 2)
    # each worker takes the next member when it is free: both ran at least one, and a worker's
    # later members reuse its compiled programs, so the split need not be two and two
    assert {m["worker"]["slot"] for m in job.members} == {0, 1}
    assert all(m["worker"]["cores"] == shares[m["worker"]["slot"]] for m in job.members)
    assert len({m["worker"]["pid"] for m in job.members}) == 2  # one process per worker, for all its members
    np.testing.assert_allclose(metrics(job), metrics(sequential), rtol=RTOL, atol=1e-7)
    assert not (job.path / sweep.LOCK).exists()
    # sweep.json is a sequential sweep's: the same members, folders and outcomes
    assert sorted(m["dir"] for m in job.members) == sorted(p.name for p in job.path.iterdir() if p.is_dir())
    assert [m["status"] for m in job.members] == ["completed"] * 4


def test_a_ray_sweep_gives_the_sequential_metrics(tmp_path, sequential):
    import ray  # the test extra installs it: this test runs in CI
    job = make_sweep(tmp_path)
    try:
        sweep.run(job, ray="local", workers=2)  # a local cluster of 2 CPUs, shut down at the end
    finally:
        if ray.is_initialized():
            ray.shutdown()
            pytest.fail("the sweep left its local Ray cluster running")
    assert all(m["worker"]["pid"] != os.getpid() for m in job.members)
    np.testing.assert_allclose(metrics(job), metrics(sequential), rtol=RTOL, atol=1e-7)
    result = runner.invoke(app, ["compare", str(job.path), "--json"])
    assert result.exit_code == 0, result.output
    (group,) = json.loads(result.stdout)["groups"]  # the four seeds of one configuration
    assert sorted(Path(r).name for r in group["runs"]) == sorted(m["dir"] for m in job.members)


def test_without_ray_the_option_names_the_install_command_and_writes_nothing(tmp_path, monkeypatch, tiny_yaml):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    result = runner.invoke(app, ["sweep", str(tiny_yaml), "--seeds", "2", "--out", str(tmp_path / "s"), "--ray"])
    assert result.exit_code == 2
    assert "pip install -e '.[ray]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_a_ray_address_where_nothing_answers_is_bad_input_and_writes_nothing(tmp_path, tiny_yaml):
    result = runner.invoke(app, ["sweep", str(tiny_yaml), "--seeds", "2", "--out", str(tmp_path / "s"), "--ray", "127.0.0.1:1"])
    assert result.exit_code == 2 and "--ray 127.0.0.1:1: no Ray cluster answers there" in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "args, address",
    [(["c.yaml", "--ray"], "local"), (["--ray", "c.yaml"], "local"), (["c.yaml", "--ray", "--quiet"], "local"),
     (["c.yaml", "--ray", "10.0.0.1:6379"], "10.0.0.1:6379"), (["c.yaml"], None)],
)
def test_ray_takes_an_optional_address(args, address):
    command = typer.main.get_command(app).commands["sweep"]
    ctx = command.make_context("sweep", list(args))
    assert ctx.params["ray"] == address and str(ctx.params["config"]) == "c.yaml"


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dnnlab", *args], cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def epochs_of(job_parent: Path, at_least: int) -> list[Path]:
    return [p.parent for p in job_parent.glob("*/*/metrics.jsonl") if len(p.read_text().splitlines()) > at_least]


def test_ctrl_c_stops_every_worker_and_resume_finishes_their_members(tmp_path, tiny_yaml):
    epochs = 150  # long enough that both members are still training when Ctrl-C comes
    options = ["--quiet", "--workers", "2", "--set", f"train.epochs={epochs}", "--set", "train.early_stopping.enabled=false"]
    proc = start(tmp_path, "sweep", str(tiny_yaml), "--seeds", "2", "--out", str(tmp_path / "s"), *options)
    try:
        wait_for(lambda: len(epochs_of(tmp_path / "s", 1)) == 2, "two members at epoch 1")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err and "--resume" in err and "--workers 2" in err, err
    (folder,) = (tmp_path / "s").iterdir()
    job = sweep.Sweep.open(folder)
    statuses = [m["status"] for m in job.members]
    # the member that had just reached epoch 1 was still training; the other one may have finished
    assert "interrupted" in statuses and set(statuses) <= {"interrupted", "completed"}, statuses
    assert not (folder / sweep.LOCK).exists()
    for m in job.members:  # each running member stopped at an epoch's end and wrote its state
        summary = runs.read_summary(folder / m["dir"])
        # a finished member drops its resume state (train.keep_state is off), an interrupted one keeps it
        assert summary["status"] == m["status"] and (folder / m["dir"] / runs.STATE).exists() == (m["status"] == "interrupted")
        assert summary["epochs_run"] == epochs if m["status"] == "completed" else 1 <= summary["epochs_run"] < epochs
    for m in job.members:
        assert not workers_alive(m["worker"]["pid"])
    before = [m["dir"] for m in job.members]

    result = runner.invoke(app, ["sweep", str(tiny_yaml), "--resume", str(folder), *options])
    assert result.exit_code == 0, result.output
    job = sweep.Sweep.open(folder)
    assert [m["status"] for m in job.members] == ["completed"] * 2
    assert [m["dir"] for m in job.members] == before  # continued in their own folders
    assert all(len(runs.read_metrics(folder / m["dir"])) == epochs + 1 for m in job.members)


def workers_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_that_dies_fails_its_member_and_the_next_worker_gives_the_sequential_metrics(tmp_path, sequential, tiny_yaml):
    # the sequential sweep's first two members, on one worker with every core of this process
    proc = start(tmp_path, "sweep", str(tiny_yaml), "--seeds", "2", "--out", str(tmp_path / "s"), "--quiet", "--workers", "1")
    try:
        folder = wait_for(lambda: next((p.parent for p in (tmp_path / "s").glob("*/sweep.json")), None), "the sweep folder")
        # the worker dies as soon as it has the first member, long before that member could finish
        pid = wait_for(lambda: sweep.Sweep.open(folder).members[0].get("worker", {}).get("pid"), "its worker in sweep.json")
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1, err  # one member of two failed: so did the sweep
    job = sweep.Sweep.open(folder)
    first, second = job.members
    assert first["status"] == "failed" and "killed by signal 9" in first["error"], first
    assert second["status"] == "completed" and second["worker"]["pid"] != pid  # a new worker took over
    assert second["worker"]["cores"] == sorted(os.sched_getaffinity(0))
    assert "1 member of 2 failed" in err
    # the same cores as the sequential run: bit for bit
    np.testing.assert_array_equal(metrics(job, 1), metrics(sequential, 1))
