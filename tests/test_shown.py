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



def test_a_remedys_options_paste_as_the_words_they_are():
    """`--set a --set b` is written by one formatter: a value with a space, a quote or a `$(...)`
    pastes back as the override it is, wherever the remedy is printed."""
    from dnnlab import runs
    from dnnlab.console import remedy_options
    from dnnlab.diagnose.evidence import Remedy
    from dnnlab.tracking import diagnosis_markdown

    sets = ["data.path=my data/it's.csv", "name=$(touch x)"]
    line = runs.set_options(sets)
    assert shlex.split(line) == ["--set", sets[0], "--set", sets[1]] == list(runs.set_words(sets))
    assert runs.set_options([]) == "" and runs.set_words(None) == ()
    assert Remedy(sets[0], "why", also=sets[1:]).command == line == remedy_options({"set": sets[0], "sets": sets})
    assert shlex.split(remedy_options({"set": sets[0]})) == ["--set", sets[0]]
    assert f"- `{line}`: why" in diagnosis_markdown({"verdict": "overfitting", "remedies": [{"set": sets[0], "sets": sets, "why": "why"}]})
    assert runs.origin("a b.yaml", sets) == ("a b.yaml", *runs.set_words(sets))

# ---------------------------------------------------------------- tables designed for 80 columns


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_numbers_and_counts_as_a_terminal_table_shows_them():
    from dnnlab import tables

    assert [tables.number(v) for v in (0.96234, 0.9996, 1.0, 12.345, 0.0712, 2.301, 1234.6, None, 7)] == [
        "0.962", "1.00", "1.00", "12.3", "0.0712", "2.30", "1235", "-", "7"]
    assert tables.mean_std(0.9623, 0.0041, 3) == "0.962±.004" and tables.mean_std(0.9623, 0.0041, 1) == "0.962"
    assert tables.mean_std(12.34, 1.5, 2) == "12.3±1.5" and tables.mean_std(None, 0.0, 3) == "-"
    assert tables.change(0.9981, 0.1123) == "0.998 +.886" and tables.change(0.1091, 0.108, noise=True) == "0.109 +.001*"
    assert tables.change(0.5, 0.75) == "0.500 -.250"
    assert [tables.count(1, "member"), tables.count(2, "member"), tables.count(1, "remedy", "remedies"),
            tables.count(3, "remedy", "remedies")] == ["1 member", "2 members", "1 remedy", "3 remedies"]


def test_a_table_folds_what_every_row_shares_and_drops_what_does_not_fit():
    from rich.console import Console

    from dnnlab import tables

    cols = [
        tables.Column("depth", ["10", "10"], keep=True, fold=True, fold_as="model.depth={}"),
        tables.Column("activation", ["sigmoid", "relu"], keep=True, fold=True, fold_as="model.activation={}"),
        tables.Column("val acc", ["0.962±.004", "0.981±.002"], ["0.9620 ± 0.0040", "0.9810 ± 0.0020"], priority=5, right=True),
        tables.Column("a long and unimportant column", ["x" * 30, "y" * 30], priority=0),
        tables.Column("verdict", ["failed-training, good-fit x2", "good-fit x3"], keep=True, wrap=True),
    ]
    shown = tables.render(cols, 60, title="2 configurations", sources=["--json"])
    assert shown.folded == ["model.depth=10"] and shown.dropped == ["a long and unimportant column"]
    console = Console(width=60, record=True)
    for item in shown.renderables:
        console.print(item, soft_wrap=False)
    text = console.export_text()
    assert max(map(len, _lines(text))) <= 60 and "…" not in text
    assert _lines(text)[:2] == ["2 configurations", "all: model.depth=10"]
    assert "failed-training, good-fit x2" in text and "0.962±.004" in text
    assert "not shown at 60 columns: a long and unimportant column; every column and digit: --wide, --json" in " ".join(text.split())
    wide = tables.render(cols, 60, wide=True)
    assert wide.width > 60 and not wide.folded and not wide.dropped


def test_compare_and_sweep_tables_fit_80_columns(tmp_path):
    """A sweep's table at 80 columns (what `dnnlab sweep` ends with): no cell cut, the verdicts
    whole, mean±std in one cell, headers that name their key, the shared values in one line,
    and a line that says what was left out and where to see it; --wide shows every column."""
    from test_sweep_compare import fake_run

    folder = tmp_path / "sweep"
    members = []
    for name in ("sgd", "adam"):
        for epochs in (10, 30):
            for seed in range(3):
                config = {"optimizer": {"name": name, "lr": 0.01}, "train": {"epochs": epochs}, "pretrain": {"epochs": 0},
                          "model": {"activation": "sigmoid", "depth": 10}}
                verdict = "failed-training" if name == "sgd" and seed == 0 else "good-fit"
                run = fake_run(folder, f"{name}-{epochs}-{seed}", config, 0.9 + 0.003 * seed, 0.85 + 0.002 * seed,
                               seed=seed, verdict=verdict, epochs=epochs)
                members.append({"index": len(members), "dir": run.name, "status": "completed"})
    (folder / "sweep.json").write_text(json.dumps({"members": members}))
    result = invoke("compare", folder, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    table = result.output.split("best on")[0]
    assert max(map(len, _lines(table))) <= 80 and "…" not in table
    assert "12 runs, 4 configurations" in table and "all: 3 seeds" in table
    header = next(line for line in _lines(table) if "optimizer.name" in line)
    assert "train.epochs" in header and "verdict" in header  # name and epochs alone are ambiguous
    assert "failed-training, good-fit x2" in " ".join(table.split()) and "good-fit x3" in table
    assert "0.903±.003" in table and "0.9030 ± 0.0030" not in table
    rest = " ".join(table.split()).split("not shown at 80 columns: ")[1]
    assert "epochs run" in rest.split(";")[0] and f"--wide, {folder / 'compare.md'}, --json" in rest
    assert (folder / "compare.md").exists() and "| epochs run |" in (folder / "compare.md").read_text()
    wide = invoke("compare", folder, "--wide", env={"COLUMNS": "80"})
    assert wide.exit_code == 0 and "…" not in wide.output
    header = next(line for line in _lines(wide.output) if "optimizer.name" in line)
    assert all(h in header for h in ("seeds", "test acc", "best val acc (epoch)", "epochs run", "wall s", "verdict"))
    assert "0.9030 ± 0.0030" in wide.output and max(map(len, _lines(wide.output.split("best on")[0]))) > 80


def test_the_fix_table_fits_80_columns_with_every_remedy_and_verdict_whole():
    from types import SimpleNamespace

    from rich.console import Console

    from dnnlab.commands.fix import fix_table
    from dnnlab.sweep.fix import Fix, Result

    def result(sets, verdict, train, val, loss, fixed, words):
        return Result({"sets": sets, "set": sets[0], "why": ""}, [], [verdict], ["completed"], (0.1123, train, 0.01),
                      (0.108, val, 0.02), (2.301, loss), fixed, words)

    job = Fix(Path("runs/quickstart-20261203-140000-ab12"), "failed-training",
              sweep=SimpleNamespace(path=Path("runs/quickstart-fix-sweep-20261203-140500-cd34")))
    job.results = [
        result(["model.activation=relu", "optimizer.name=adam"], "good-fit", 0.9981, 0.9812, 0.0712, True, "trains now"),
        result(["model.norm=batch"], "good-fit", 0.9902, 0.9754, 0.0912, True, "trains now"),
        result(["optimizer.lr=0.3"], "failed-training", 0.1154, 0.1091, 2.2987, False, "no gain on training beyond the noise"),
    ]
    console = Console(width=80, record=True)
    shown = fix_table(job, 80)
    for item in shown.renderables:
        console.print(item, soft_wrap=False)
    text = console.export_text()
    assert max(map(len, _lines(text))) <= 80 and "…" not in text
    words = " ".join(text.split())
    for whole in ("model.activation=relu", "optimizer.name=adam", "model.norm=batch", "optimizer.lr=0.3", "(the run itself)",
                  "yes: trains now", "no: no gain on training beyond the noise", "was failed-training: 3 remedies, measured"):
        assert whole in words, whole
    assert text.count("failed-training") == 3 and text.count("good-fit") == 2
    assert "0.998 +.886" in text and "0.115 +.003*" in text and "*: a change within the noise" in text
    assert shown.dropped and f"every column and digit: --wide, {job.sweep.path / 'compare.md'}, --json" in words
    wide = fix_table(job, 80, wide=True)
    assert wide.width > 80 and not wide.dropped


def test_compare_writes_only_into_the_sweep_it_was_given_or_out(tmp_path, monkeypatch):
    from test_sweep_compare import fake_run

    monkeypatch.chdir(tmp_path)
    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "a", {"model": {"depth": 1}}, 0.9, 0.85)
    fake_run(runs_dir, "b", {"model": {"depth": 2}}, 0.9, 0.86)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = invoke("compare", runs_dir / "a", runs_dir / "b")
    assert result.exit_code == 0 and "wrote" not in result.output and "--out DIR" in result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    one = invoke("compare", runs_dir / "a")
    assert one.exit_code == 0 and "1 run, 1 configuration" in one.output
    out = invoke("compare", runs_dir / "a", runs_dir / "b", "--out", tmp_path / "cmp")
    assert out.exit_code == 0 and (tmp_path / "cmp" / "compare.md").exists()
    assert "2 runs in 2 configurations" in (tmp_path / "cmp" / "compare.md").read_text()


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
