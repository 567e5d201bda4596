"""`dnnlab lr-find`: the learning-rate range test on a config's own net, data and optimizer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dnnlab.commands.common import (
    ConfigArg,
    SetOpt,
    _escape,
    _fail,
    _load,
    _load_data,
    console,
    err_console,
)
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
)

STOPPED_WORDS = {
    "diverged": "the smoothed loss exceeded 4x its minimum",
    "non-finite": "the loss became non-finite",
    "max": "every step ran; the loss never exceeded 4x its minimum (raise --max to see where it blows up)",
    "interrupted": "interrupted",
}


def lr_find_cmd(
    config: ConfigArg,
    set_: SetOpt = None,
    min_lr: Annotated[float, typer.Option("--min", help="The first step's learning rate")] = 1e-7,
    max_lr: Annotated[float, typer.Option("--max", help="The last step's learning rate")] = 10.0,
    steps: Annotated[int, typer.Option("--steps", help="Steps from --min to --max, one minibatch each")] = 100,
    rule: Annotated[str, typer.Option("--rule", help="How the rate is read off the curve: minimum (a tenth of the rate at the lowest loss) | valley (fastai's) | steepest")] = "minimum",
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of the new lr-find folder")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print lr_find.json")] = False,
) -> None:
    """Find a learning rate: a range test on CONFIG's net, data and optimizer (the rate grows
    geometrically each step; the smoothed loss is read for a suggestion). Writes lr_find.png and lr_find.json."""
    from dnnlab import lr_find, runs

    cfg = _load(config, set_)
    problem = lr_find.check(min_lr, max_lr, steps, rule)
    if problem:
        raise _fail(_escape(problem))
    ds = _load_data(cfg)
    if not as_json:
        console.print(f"range test of {config}: {steps} steps, lr {min_lr:g} -> {max_lr:g} ({cfg.optimizer.name})", markup=False)
    try:
        result = lr_find.range_test(cfg, ds, min_lr=min_lr, max_lr=max_lr, steps=steps, rule=rule)
    except lr_find.LrFindError as exc:
        raise _fail(_escape(str(exc))) from None
    try:
        folder = runs.new_run_dir(out, f"{cfg.name}-lr-find")
        problems = lr_find.write(result, folder, str(config))
    except OSError as exc:
        raise _fail(_escape(f"cannot write the range test under {out}: {exc}"), EXIT_FAILED) from None
    for p in problems:
        err_console.print(f"warning: {p}", markup=False)
    code = EXIT_INTERRUPTED if result.stopped == "interrupted" else EXIT_OK
    lr = result.suggestion
    if as_json:
        sys.stdout.write((folder / "lr_find.json").read_text())
    else:
        for note in result.notes:
            err_console.print(f"note: {note}", markup=False)
        console.print(
            f"{len(result.lrs)} of {steps} steps ({result.epochs:.1f} epochs of {ds.name}'s {len(ds.train):,} training examples "
            f"at batch {result.batch_size}), lr {min_lr:g} -> {result.lrs[-1] if result.lrs else min_lr:.2g}, "
            f"{result.seconds:.1f} s; stopped: {STOPPED_WORDS[result.stopped]}", markup=False,
        )
        if lr is not None:
            others = ", ".join(f"{k} {lr_find.shown(v)}" for k, v in result.suggestions.items() if k != rule and v is not None)
            console.print(f"suggested lr {lr_find.shown(lr)} ({rule}: {lr_find.RULE_WORDS[rule]}); the config's is "
                          f"{cfg.optimizer.lr:g}" + (f"; the other rules: {others}" if others else ""), markup=False)
            console.print(lr_find.set_line(lr), markup=False)
            again = runs.shell_command("dnnlab", "run", config, *runs.set_words([*(set_ or []), f"optimizer.lr={lr_find.shown(lr)}"]))
            console.print(f"run it: {again}", markup=False)
        console.print(f"wrote {folder / 'lr_find.png'} and lr_find.json", markup=False)
    if lr is None:
        err_console.print(
            f"error: {len(result.lrs)} steps before the test stopped: too few to read a rate from; lower --min, raise "
            "--steps, or look at lr_find.png", markup=False,
        )
        raise typer.Exit(code if code != EXIT_OK else EXIT_FAILED)
    raise typer.Exit(code)
