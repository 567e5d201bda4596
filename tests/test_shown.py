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
