"""Data parallelism (`train.devices`) and multi-process runs (`dnnlab run --distributed`).

JAX fixes its device count when it starts, so the multi-device checks run in subprocesses
with JAX_NUM_CPU_DEVICES: one with 4 devices that trains each model on 1 and on 4 devices,
and two pairs of processes with 2 devices each (CPU collectives over gloo).

Tolerance: every loss of every epoch (initial, running, train, val, test over 3 epochs) of a
4-device run is within 1e-4 relative of the 1-device run's, and accuracies differ by less than
one example. XLA sums a split batch in another order, so bit-identity is not expected.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnnlab.train import distributed
from dnnlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
REL_TOL = 1e-4
LOSSES = ("train_loss", "val_loss", "test_loss", "running_loss")
ACCURACIES = ("train_accuracy", "val_accuracy", "test_accuracy")
TINY = """\
name: tiny
data: {dataset: digits, batch_size: 64, train_size: 512, validation_split: 0.0}
model: {arch: mlp, depth: 2, width: 16}
optimizer: {name: adam, lr: 0.01}
train: {epochs: 3}
diagnosis: {reference: none, probe_size: 128}
logging: {tensorboard: false}
"""
LONG = TINY.replace("epochs: 3", "epochs: 5000").replace("name: tiny", "name: long").replace(
    "probe_size: 128", "instruments: false"
)

MODELS = {  # besides TINY's mlp (with the instruments: the probe batch is split too)
    "cnn": {"arch": "cnn", "channels": [4], "depth": 1, "width": 8},
    "resnet": {"arch": "resnet", "blocks": 1, "norm": "batch"},
}


def train_models(tiny: Path, devices: int, order: tuple[str, ...] = ("mlp", *MODELS)) -> dict:
    """TINY's mlp, a cnn and a resnet with batch norm, trained on `devices` devices:
    {"<model>/<devices>": {history, device, devices, status}}."""
    from dnnlab import config, data, train

    mlp = config.load_config(tiny)
    ds = data.load(mlp.data, seed=0)
    result = {}
    for name in order:
        raw = mlp.model_dump(mode="json")
        raw["train"]["devices"] = devices
        if name in MODELS:
            raw["model"], raw["diagnosis"]["instruments"] = MODELS[name], False
        r = train.fit(config.validate(raw), ds, progress=name == "mlp")
        result[f"{name}/{devices}"] = {key: r.summary[key] for key in ("device", "devices", "status")}
        result[f"{name}/{devices}"]["history"] = r.history
    return result


# Runs with JAX_NUM_CPU_DEVICES=4: the models on 4 devices, and the CLI's refusals there.
FOUR_DEVICES = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import jax
    from typer.testing import CliRunner
    from dnnlab.cli import app
    from tests.test_devices import train_models

    out, tiny = Path(sys.argv[1]), sys.argv[2]
    result = {"devices": len(jax.devices()), **train_models(Path(tiny), 4)}
    runner = CliRunner()
    def cli(*args):
        r = runner.invoke(app, ["run", tiny, "--out", str(out), "--quiet", *args])
        return {"code": r.exit_code, "output": r.output}
    result["odd_batch"] = cli("--set", "data.batch_size=50")
    result["vmap_seeds"] = cli("--set", "train.seeds=2", "--set", "train.seed_mode=vmap")
    result["refused_folders"] = sorted(p.name for p in out.iterdir()) if out.exists() else []
    print("RESULT" + json.dumps(result))
""")


# Runs with JAX_NUM_CPU_DEVICES=2 in one cache folder: 1 device, 2 devices, 1 device again (its
# programs now come from the store), and 2 devices alone in a cache of its own. Each run's
# programs are looked up as a new process would (nothing reused in memory).
LAYOUTS = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from typer.testing import CliRunner
    from dnnlab import train
    from dnnlab.cli import app

    tmp, result = Path(sys.argv[1]), {}
    for cache, devices, tag in (("a", 1, "a1"), ("a", 2, "a2"), ("a", 1, "a1-again"), ("b", 2, "b2")):
        os.environ["DNNLAB_CACHE"] = str(tmp / cache)
        train.clear_programs()
        r = CliRunner().invoke(app, ["run", "configs/quickstart.yaml", "--out", str(tmp / tag), "--quiet",
                                     "--set", "train.epochs=2", "--set", f"train.devices={devices}"])
        folders = list((tmp / tag).glob("*/metrics.jsonl"))
        lines = folders[0].read_text().splitlines() if folders else []
        metrics = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]
        result[tag] = {"code": r.exit_code, "output": r.output[-1500:], "metrics": metrics}
    print("RESULT" + json.dumps(result))
""")


def test_programs_of_one_layout_are_never_served_to_another(tmp_path):
    """The program store keys a program by the device layout it was compiled for and loads it
    onto those devices: in a process with 2 devices, a 1-device run after a 2-device run and
    after a 1-device run (its programs loaded from the store) gets the numbers of the 1-device run
    alone, and the 2-device run after the 1-device one those of a 2-device run alone."""
    proc = subprocess.run([sys.executable, "-c", LAYOUTS, str(tmp_path)], cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=400)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT"):])
    for tag, r in result.items():
        assert r["code"] == 0 and len(r["metrics"]) == 3, (tag, r["output"])
    assert result["a1-again"]["metrics"] == result["a1"]["metrics"]
    assert result["a2"]["metrics"] == result["b2"]["metrics"]


def _free_ports(n: int) -> list[int]:
    """`n` different ports nothing listens on (held open together while they are picked)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "PYTHONPATH": str(ROOT), **extra}
    env.pop("XLA_FLAGS", None)
    return env


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _worst(a: list[dict], b: list[dict]) -> tuple[float, float]:
    """(largest relative loss difference, largest accuracy difference) over matching epochs."""
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    rel = max(abs(x[k] - y[k]) / abs(x[k]) for x, y in zip(a, b) for k in LOSSES if x.get(k) is not None)
    acc = max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in ACCURACIES if x.get(k) is not None)
    return rel, acc


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """Every multi-device run at once (they compile on both cores): the models on 4 devices (a
    subprocess) and on 1 (this process), a 2-process run of TINY, and a 2-process run of LONG
    whose process 1 is killed once it trains. Returns (results of the models, [(returncode,
    stdout, stderr)] of TINY's processes 0 and 1, their --out folder, the killed run's record)."""
    tmp = tmp_path_factory.mktemp("devices")
    (tmp / "tiny.yaml").write_text(TINY)
    (tmp / "long.yaml").write_text(LONG)
    four = subprocess.Popen(
        [sys.executable, "-c", FOUR_DEVICES, str(tmp / "runs4"), str(tmp / "tiny.yaml")],
        env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    port, other_port = _free_ports(2)
    pair = [_launch(tmp / "tiny.yaml", tmp / "runs2", port, i) for i in (0, 1)]
    doomed = [_launch(tmp / "long.yaml", tmp / "killed", other_port, i, DNNLAB_PEER_TIMEOUT="3") for i in (0, 1)]
    with ThreadPoolExecutor(1) as pool:
        killed = pool.submit(_kill_when_training, doomed, tmp / "killed")
        try:
            # the other way round: a model's parameter initialization, the same program on 1 and
            # on 4 devices, is compiled by whichever comes first, read from the compile cache by the other
            one = train_models(tmp / "tiny.yaml", 1, order=("resnet", "cnn", "mlp"))
            stdout, stderr = four.communicate(timeout=240)
            ran = [_finish(p, timeout=180) for p in pair]
        finally:
            for p in (four, *pair):
                p.kill()
        record = killed.result(timeout=300)
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT")), None)
    assert four.returncode == 0 and line, stdout[-2000:] + stderr[-3000:]
    return {**json.loads(line[len("RESULT"):]), **one}, ran, tmp / "runs2", record


def _kill_when_training(procs: list[subprocess.Popen], out: Path) -> dict:
    """SIGKILL process 1 once the run has written two epochs; then wait for process 0:
    {"code", "err", "waited" (s from the kill to its end), "out"} or {"problem"}."""
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            found = list(out.glob("*/metrics.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 3:
                break
            if procs[0].poll() is not None or procs[1].poll() is not None:
                return {"problem": f"a process ended before training: {[_finish(p, 5) for p in procs]}"}
            time.sleep(0.2)
        else:
            return {"problem": "the 2-process run did not start training within 150 s"}
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code, _, err = _finish(procs[0], timeout=60)
        return {"code": code, "err": err, "waited": time.monotonic() - killed, "out": out}
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet"])
def test_four_devices_match_one(four, model):
    result = four[0]
    assert result["devices"] == 4
    one, many = result[f"{model}/1"], result[f"{model}/4"]
    assert (one["device"], one["devices"]) == ("cpu", 1)
    assert (many["device"], many["devices"]) == ("cpu x4", 4)
    assert one["status"] == many["status"] == "completed"
    assert len(one["history"]) == 4  # epoch 0 and 3 epochs
    rel, acc = _worst(one["history"], many["history"])
    assert rel < REL_TOL, f"{model}: a loss differs by {rel:.2e} relative"
    assert acc < 1 / 512  # less than one example
    # it trained: the loss fell (a run that did nothing would match trivially)
    assert many["history"][-1]["train_loss"] < 0.9 * many["history"][0]["train_loss"]
    if model == "mlp":  # the instruments, on the probe batch split over the devices
        for key in ("grad_rms", "dead_fraction"):
            a, b = one["history"][-1][key], many["history"][-1][key]
            assert a == pytest.approx(b, rel=1e-3, abs=1e-6), key


def test_batch_not_divisible_by_devices_is_refused(four):
    result = four[0]
    odd = result["odd_batch"]
    assert odd["code"] == 2
    assert "data.batch_size: 50 does not divide by the 4 devices" in odd["output"]
    assert "48 or 52" in odd["output"]
    vmap = result["vmap_seeds"]
    assert vmap["code"] == 2 and "train.seed_mode: vmap" in vmap["output"] and "4 (train.devices)" in vmap["output"]
    assert result["refused_folders"] == []  # nothing was written for either


def test_more_devices_than_the_machine_has_is_refused(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    args = ["run", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "runs"), "--set", "train.devices=64"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2
    assert "train.devices: 64, but this machine has" in r.output and "JAX_NUM_CPU_DEVICES=64" in r.output
    assert not (tmp_path / "runs").exists()


def _launch(config: Path, out: Path, port: int, index: int, **env: str) -> subprocess.Popen:
    """Process `index` of a 2-process run, 2 CPU devices each; its output goes to files beside
    `out` (a pipe nobody reads could fill and block it)."""
    logs = [open(out.parent / f"{out.name}.{index}.{stream}", "w+") for stream in ("out", "err")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnnlab", "run", str(config), "--out", str(out), "--distributed",
         "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(index)],
        env=_env(2, **env), stdout=logs[0], stderr=logs[1], text=True,
    )
    proc.logs = logs  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """(returncode, stdout, stderr) once `proc` ends (killed after `timeout` s)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        proc.kill()
        proc.wait()
    texts = []
    for log in proc.logs:  # type: ignore[attr-defined]
        log.seek(0)
        texts.append(log.read())
        log.close()
    return proc.returncode, texts[0], texts[1]


def test_two_processes_match_one_process_with_four_devices(four):
    result, ran, out, _ = four
    assert [code for code, _, _ in ran] == [0, 0], ran[0][2][-2000:] + ran[1][2][-2000:]
    assert ran[1][1:] == ("", ""), "process 1 printed"  # only process 0 prints
    assert "completed: 3 epochs" in ran[0][1]
    folders = list(out.iterdir())
    assert len(folders) == 1  # only process 0 wrote
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert (summary["device"], summary["devices"], summary["processes"]) == ("cpu x4", 4, 2)
    rel, acc = _worst(result["mlp/4"]["history"], _metrics(folders[0]))
    assert rel < REL_TOL and acc < 1 / 512


def test_a_killed_peer_ends_the_other_with_an_error(four):
    record = four[3]
    assert "problem" not in record, record.get("problem")
    err = record["err"]
    assert record["code"] == 1, err[-3000:]
    assert "error: lost process 1 of 2: no sign of life for 3 s" in err, err[-3000:]
    assert record["waited"] < 30, f"process 0 took {record['waited']:.1f} s to notice"
    summary = json.loads(next(record["out"].glob("*/summary.json")).read_text())
    assert summary["status"] == "failed" and "lost process 1" in summary["reason"]
    assert summary["epochs_run"] >= 2


def test_distributed_settings_come_from_flags_then_the_environment(monkeypatch):
    monkeypatch.setenv("DNNLAB_COORDINATOR", "node01:1234")
    monkeypatch.setenv("DNNLAB_NUM_PROCESSES", "4")
    monkeypatch.setenv("DNNLAB_PROCESS_ID", "3")
    assert distributed.settings(None, None, None) == ("node01:1234", 4, 3)
    assert distributed.settings("head:99", 2, 1) == ("head:99", 2, 1)
    for key in ("DNNLAB_COORDINATOR", "DNNLAB_NUM_PROCESSES", "DNNLAB_PROCESS_ID"):
        monkeypatch.delenv(key)
    assert distributed.settings(None, None, None) == (None, None, None)  # left to JAX's detection
    monkeypatch.setenv("DNNLAB_NUM_PROCESSES", "two")
    with pytest.raises(distributed.DeviceError, match="DNNLAB_NUM_PROCESSES='two'"):
        distributed.settings(None, None, None)
    monkeypatch.delenv("DNNLAB_NUM_PROCESSES")
    with pytest.raises(distributed.DeviceError, match="not HOST:PORT"):
        distributed.settings("node01", 2, 0)
    with pytest.raises(distributed.DeviceError, match="--process-id 2: must be 0 to 1"):
        distributed.settings("node01:1", 2, 2)


def test_process_flags_without_distributed_are_refused(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    r = CliRunner().invoke(app, ["run", str(tmp_path / "tiny.yaml"), "--process-id", "1"])
    assert r.exit_code == 2 and "--process-id configure a distributed run: add --distributed" in r.output


def test_a_sweep_member_gets_the_memory_and_device_checks_of_run(tmp_path, monkeypatch):
    """A member is held to the machine as `dnnlab run` is: refused before its folder exists."""
    from dnnlab.config import sizing

    (tmp_path / "tiny.yaml").write_text(TINY)
    out = tmp_path / "sweeps"
    r = CliRunner().invoke(app, ["sweep", str(tmp_path / "tiny.yaml"), "--out", str(out), "--grid", "train.devices=64"])
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    (member,) = json.loads((folder / "sweep.json").read_text())["members"]
    assert member["status"] == "failed" and "train.devices: 64, but this machine has" in member["error"], r.output
    monkeypatch.setattr(sizing, "machine_memory_bytes", lambda: 1 << 30)
    args = ["--set", "model.depth=4", "--grid", "model.width=8192"]
    r = CliRunner().invoke(app, ["sweep", str(tmp_path / "tiny.yaml"), "--out", str(out), *args])
    (folder,) = [p for p in out.iterdir() if p.is_dir() and p != folder]
    (member,) = json.loads((folder / "sweep.json").read_text())["members"]
    assert member["status"] == "failed" and "over this machine's 1.0 GiB of memory" in member["error"], r.output
    assert [p.name for p in folder.iterdir() if p.is_dir()] == []  # no member folder was made
