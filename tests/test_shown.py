"""What people and CI logs see: printed commands that paste right, tables that fit 80 columns,
progress in a pipe, and the messages of small mistakes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from typer.testing import CliRunner

from dnnlab.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args, **kwargs):
    result = runner.invoke(app, [str(a) for a in args], **kwargs)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_the_pasted_try_line_trains_the_run_but_for_the_remedy(tmp_path, monkeypatch):
    """The README's sigmoid example: the `try:` line of report.md (and of the panel) starts from
    the config and every override the run was given, so the config it resolves differs from the
    run's only by the first remedy."""
    from dnnlab.compare import flatten
    from dnnlab.config import load_config

    monkeypatch.chdir(ROOT)  # the README's relative path
    sets = ["model.activation=sigmoid", "model.depth=10", "optimizer.name=sgd", "train.epochs=2"]
    result = invoke("run", "configs/quickstart.yaml", *(w for s in sets for w in ("--set", s)), "--out", tmp_path,
                    env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    first = summary["diagnosis"]["remedies"][0]
    remedy = dict(s.split("=", 1) for s in first.get("sets") or [first["set"]])
    report = (run / "report.md").read_text()
    line = report.split("Try the first one:")[1].split("```bash\n")[1].split("\n")[0]
    assert f"try: {line}" in result.output  # the panel prints the same command
    words = shlex.split(line)
    assert words[:3] == ["dnnlab", "run", "configs/quickstart.yaml"]
    assert words[3::2] == ["--set"] * len(words[3::2])
    pasted = load_config(words[2], words[4::2])
    trained, again = flatten(load_config(run / "config.yaml").model_dump(mode="json")), flatten(pasted.model_dump(mode="json"))
    differ = {k: again[k] for k in trained if trained[k] != again[k]}
    assert differ == {"model.activation": "relu", "optimizer.name": "adam"} == remedy
    # the run folder records the config and the overrides, in order, and the command line
    command = json.loads((run / "inputs.json").read_text())["command"]
    assert command["config"] == "configs/quickstart.yaml" and command["overrides"] == sets
    assert command["argv"][0] == "dnnlab"


EPOCH_LINE = r"^epoch (\d+)/(\d+)  train \d\.\d{4} / \d\.\d{3}  val \d\.\d{4} / \d\.\d{3}  \d+\.\d+s$"
# a small net that fails to train (a remedy, so a try: line); both tests train it: the second
# finds its programs compiled by the first
PIPED_SETS = ["train.epochs=3", "diagnosis.reference=none", "logging.tensorboard=false", "model.activation=sigmoid", "optimizer.name=sgd", "model.width=32"]


def test_a_piped_run_prints_a_line_per_epoch_and_whole_commands(tmp_path):
    """stdout a pipe, as in a CI log: one plain line per epoch (DNNLAB_LOG_EVERY=0: no pacing),
    and the try: command longer than the pipe's 100 columns printed as one line that pastes."""
    import os
    import re
    import subprocess
    import sys

    from dnnlab.console import PIPED_WIDTH

    sets = PIPED_SETS
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"DNNLAB_LOG_EVERY": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "dnnlab", "run", "configs/quickstart.yaml", *(w for s in sets for w in ("--set", s)), "--out", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    epochs = [re.match(EPOCH_LINE, line).groups() for line in lines if line.startswith("epoch ")]
    assert epochs == [("1", "3"), ("2", "3"), ("3", "3")], proc.stdout
    (tried,) = [line for line in lines if line.startswith("try: ")]
    words = shlex.split(tried[len("try: "):])
    assert len(tried) > PIPED_WIDTH and words[:3] == ["dnnlab", "run", "configs/quickstart.yaml"]
    assert words[4:2 * len(sets) + 3:2] == sets  # every override, whole, on the one line


def test_quiet_prints_no_epoch_lines(tmp_path):
    result = invoke("run", ROOT / "configs" / "quickstart.yaml", *(w for s in PIPED_SETS for w in ("--set", s)), "--quiet",
                    "--out", tmp_path, env={"DNNLAB_LOG_EVERY": "0"})
    assert result.exit_code == 0, result.output
    assert "epoch " not in result.output and result.output.count("\n") == 1 and result.output.startswith("completed: 3 epochs")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _plain(every: float, clock: _Clock, prefix: str = "", pace=None):
    import io

    from rich.console import Console

    from dnnlab.console import Pace, PlainWriter

    out = io.StringIO()
    writer = PlainWriter(Console(file=out, width=100), prefix=prefix, header=False, table=False, pace=pace or Pace(every, clock))
    return writer, out


def _record(epoch: int) -> dict:
    return {"train_loss": 1.0 / epoch, "train_accuracy": 0.5, "val_loss": 1.2 / epoch, "val_accuracy": 0.4, "seconds": 0.5}


def _shown(out) -> list[int]:
    import re

    return [int(m.group(1)) for m in re.finditer(r"epoch (\d+)/", out.getvalue())]


def test_plain_lines_at_most_one_every_few_seconds_the_first_and_last_always():
    clock = _Clock()
    writer, out = _plain(2.0, clock)
    writer.start({"epochs": 10})
    for epoch in range(11):  # epoch 0, the model at initialization, is not a line
        clock.now = 0.5 * epoch
        writer.write(epoch, _record(max(epoch, 1)))
    writer.finish({})
    assert _shown(out) == [1, 5, 9, 10]  # every 2 s of epochs of 0.5 s
    # slow epochs: every one; stopped early at 7 of 10: the last epoch run is shown at the end
    writer, out = _plain(2.0, clock)
    writer.start({"epochs": 10})
    for epoch in range(1, 8):
        clock.now = 3.0 * epoch
        writer.write(epoch, _record(epoch))
    assert _shown(out) == [1, 2, 3, 4, 5, 6, 7]
    writer, out = _plain(2.0, clock)
    writer.start({"epochs": 10})
    for epoch in range(1, 8):
        clock.now = 100 + 0.5 * epoch
        writer.write(epoch, _record(epoch))
    assert _shown(out) == [1, 5]
    writer.finish({"status": "stopped_early"})
    assert _shown(out) == [1, 5, 7]
    assert out.getvalue().splitlines()[0] == "epoch 1/10  train 1.0000 / 0.500  val 1.2000 / 0.400  0.50s"


def test_the_seeds_of_a_group_print_the_same_epochs_with_their_names():
    from dnnlab.console import Pace

    clock = _Clock()
    pace = Pace(2.0, clock)
    writers = [_plain(2.0, clock, f"seed {s}", pace) for s in (0, 1)]
    for w, _ in writers:
        w.start({"epochs": 6})
    for epoch in range(1, 7):  # vmapped: every seed's epoch at (nearly) the same time
        for i, (w, _) in enumerate(writers):
            clock.now = 0.9 * epoch + 0.001 * i
            w.write(epoch, _record(epoch))
    assert _shown(writers[0][1]) == _shown(writers[1][1]) == [1, 4, 6]
    assert all(line.startswith("seed 1  epoch ") for line in writers[1][1].getvalue().splitlines())


def test_the_diagnosis_of_seeds_together():
    from dnnlab.diagnose import Diagnosis, across_seeds
    from dnnlab.diagnose.evidence import Remedy

    over = Diagnosis("overfitting", evidence=["val loss rose"], remedies=[Remedy("model.dropout=0.2", "dropout")], warnings=["w1"])
    good = Diagnosis("good-fit", evidence=["fine"], warnings=["w2", "w1"])
    group = across_seeds([(0, good), (1, over), (2, over)])
    assert group.verdict == "overfitting" and [r.set for r in group.remedies] == ["model.dropout=0.2"]
    assert group.evidence == ["2 of 3 seeds: overfitting (seed 0: good-fit); the evidence and remedies are seed 1's", "val loss rose"]
    assert group.warnings == ["w2", "w1"] and not group.provisional
    tie = across_seeds([(3, good), (4, over)])
    assert tie.verdict == "good-fit" and tie.evidence[0].startswith("1 of 2 seeds: good-fit (seed 4: overfitting)")
    assert across_seeds([(0, over), (1, over)]).evidence[0].startswith("all 2 seeds: overfitting")
