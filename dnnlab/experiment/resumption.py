"""Continuing a run, or a multi-seed folder, in place from its last saved epoch, as if it had
never stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from dnnlab import interrupt, runs
from dnnlab.config import Config
from dnnlab.experiment.inputs import (
    check_config,
    check_data,
    located,
    record_inputs,
    run_lock,
)
from dnnlab.experiment.load import ExperimentError, check_devices, load_data
from dnnlab.experiment.start import (
    SeedsOutcome,
    Shown,
    _known_failures,
    _seeds_summary,
    _SeedTag,
    _stop_before,
    _train_and_report,
    finished_outcome,
    seed_folder,
    seed_writer,
)

if TYPE_CHECKING:
    from dnnlab.experiment.start import Outcome


RESUMABLE_CHANGES = ("train.epochs", "train.keep_state")  # what --set may change when a run is resumed


def resume(
    run_dir: Path, overrides: Sequence[str] = (), shown: Optional[Shown] = None, config_file: Optional[Path] = None,
) -> Optional[Outcome | SeedsOutcome]:
    """Continue the run in `run_dir` from its last saved epoch, in the same folder; a multi-seed
    folder (seeds.json) is continued seed by seed (`resume_seeds`; `config_file` is not read).

    metrics.jsonl is cut back to the saved epoch; the result equals a run that was never stopped
    (bit for bit on one machine). `overrides` may only extend train.epochs; a `config_file`
    (with the overrides) must resolve to the run's config, and the run's config.yaml and data
    must be those it started with (inputs.json; the data are found at their recorded absolute
    path). A run stopped before its first epoch starts again. Returns None when the run had
    already finished (nothing to do). Raises ExperimentError with the exit code.
    """
    run_dir = Path(run_dir)
    if (run_dir / runs.SEEDS_MANIFEST).exists():
        return resume_seeds(run_dir, overrides, shown)
    problem = runs.run_folder_problem(run_dir)
    if problem is not None:
        raise ExperimentError(problem)
    with _known_failures(run_dir, "interrupted before the run was resumed; nothing was changed"), run_lock(run_dir):
        return _resume(run_dir, overrides, shown, config_file)


def _resume(run_dir: Path, overrides: Sequence[str], shown: Optional[Shown], config_file: Optional[Path]) -> Optional[Outcome]:
    from dnnlab.config import ConfigError, load_config

    shown = shown or Shown()
    try:
        history, saved, summary = runs.load_run(run_dir)
        cfg = load_config(config_file, list(overrides)) if config_file is not None else runs.read_config(run_dir, overrides)
        inputs = runs.read_inputs(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise ExperimentError(str(exc)) from None
    if saved.train.seeds > 1:
        raise ExperimentError(f"{run_dir}: a multi-seed folder: `dnnlab run --resume` resumes it seed by seed")
    check_config(run_dir, saved, inputs)
    _check_resumable(run_dir, saved, cfg)
    finished = summary.get("status") in ("completed", "stopped_early", "diverged")
    if finished and (cfg.train.epochs == saved.train.epochs or summary.get("status") != "completed"):
        return None  # stopped early or diverged runs stay so, whatever the budget
    state, problems = _saved_state(run_dir, history, summary, finished)
    ds = load_data(located(cfg, inputs))
    check_data(run_dir, ds, inputs)
    check_devices(cfg)
    _stop_before("before the run was resumed; nothing was changed")
    if cfg.train.epochs != saved.train.epochs:
        _grown(run_dir, cfg, inputs)
    if inputs is None:
        record_inputs(run_dir, cfg, ds)  # from now on the folder is tied to these
    elif not (run_dir / runs.PREPROCESSING).exists() and ds.preprocessing:
        runs.write_preprocessing(run_dir, ds.preprocessing)  # a folder from before runs kept it: the same data (checked)
    with _known_failures(run_dir, "interrupted; the finished epochs are in the run folder, resume it again"), interrupt.deferred():
        run_writer: runs.Writer = runs.RunDir(
            run_dir, history=state.history if state is not None else [], keep_state=cfg.train.keep_state,
        )
        if (run_dir.parent / runs.SEEDS_MANIFEST).exists():
            run_writer = _SeedTag(run_writer, cfg.seed)  # a seed of a multi-seed folder keeps its tag
        if shown.announce is not None:
            shown.announce(run_dir)
        outcome = _train_and_report(cfg, ds, run_dir, run_writer, shown, resume=state)
    outcome.problems += problems
    return outcome


def _check_resumable(run_dir: Path, saved: Config, cfg: Config) -> None:
    """Refuses a config that differs from the run's but in RESUMABLE_CHANGES (and output only), or
    fewer epochs than the run's."""
    from dnnlab.config import flatten

    old, new = flatten(saved.model_dump(mode="json")), flatten(cfg.model_dump(mode="json"))
    changed = sorted(
        k for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES and not k.startswith("logging.")  # output only
    )
    if changed:
        raise ExperimentError(
            f"{run_dir}: the config differs from the run's in {', '.join(f'{k} ({old.get(k)!r} -> {new.get(k)!r})' for k in changed)}; "
            f"a resumed run keeps its config (only {', '.join(RESUMABLE_CHANGES)} may grow); start a new run instead"
        )
    if cfg.train.epochs < saved.train.epochs:
        raise ExperimentError(f"train.epochs: {cfg.train.epochs} is fewer than the run's {saved.train.epochs}; it may only grow")


def _saved_state(run_dir: Path, history: list[dict[str, Any]], summary: dict[str, Any], finished: bool) -> tuple[Any, list[str]]:
    """The run's saved state to continue from (None: stopped before its first epoch, it starts
    again) and the problems met reading it (a state continued from the previous one)."""
    from dnnlab import train  # imports JAX

    state, problems = None, []
    no_state = not runs.has_state(run_dir)
    if finished and no_state:
        raise ExperimentError(_no_state_kept(run_dir, summary.get("status")))
    if not (no_state and len(history) <= 1):  # else stopped before its first epoch: it starts again
        try:
            arrays, _, passed = runs.read_state(run_dir)
            state = train.Resume.from_arrays(arrays, history)
        except ValueError as exc:
            raise ExperimentError(f"{run_dir}: {exc}" if not str(exc).startswith(str(run_dir)) else str(exc)) from None
        problems = [f"{p}: continued from {runs.STATE_PREV} (epoch {state.epoch})" for p in passed]
    return state, problems


def _grown(run_dir: Path, cfg: Config, inputs: Optional[dict[str, Any]]) -> None:
    """A run (or a multi-seed folder) resumed with more epochs: its config.yaml, and the config
    inputs.json holds it to, say so (its data stay those it started with)."""
    runs.write_config(run_dir, cfg)
    if inputs is not None:
        runs.write_inputs(run_dir, cfg.model_dump(mode="json"), inputs["data"])


def _no_state_kept(run_dir: Path, status: object) -> str:
    """Why a finished run cannot be trained longer, and what to do."""
    return (
        f"{run_dir}: the run {status} and kept no resume state ({runs.STATE}: dropped when a run finishes, unless "
        f"--keep-state or train.keep_state: true), so it cannot be trained longer; train it again with more epochs "
        f"({runs.shell_command('dnnlab', 'run', run_dir / runs.CONFIG, *runs.set_words(['train.epochs=N']), '--keep-state')})"
    )


def resume_seeds(run_dir: Path, overrides: Sequence[str] = (), shown: Optional[Shown] = None) -> Optional[SeedsOutcome]:
    """Continue a multi-seed folder: finished seeds are kept, seeds with a saved state continue
    from it (one after another, whatever the original seed_mode: a vmapped run's resumed seeds
    equal it within float tolerance, not bit for bit), seeds that never started run now. The
    folder's config.yaml and data must be those it started with (inputs.json), as in `resume`."""
    shown = shown or Shown()
    run_dir = Path(run_dir)
    with _known_failures(run_dir, "interrupted before the run was resumed; nothing was changed"), run_lock(run_dir):
        return _resume_seeds(run_dir, overrides, shown)


def _resume_seeds(run_dir: Path, overrides: Sequence[str], shown: Shown) -> Optional[SeedsOutcome]:
    from dnnlab import train
    from dnnlab.config import ConfigError

    try:
        found = runs.read_manifest(run_dir)
        saved = runs.read_config(run_dir)
        cfg = runs.read_config(run_dir, overrides)
        summary = runs.read_summary(run_dir) or {}
        inputs = runs.read_inputs(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise ExperimentError(str(exc)) from None
    check_config(run_dir, saved, inputs)
    if found is None or found[0] != runs.SEEDS_MANIFEST:
        raise ExperimentError(f"{run_dir}: not a multi-seed folder (no {runs.SEEDS_MANIFEST})")
    if summary.get("status") == "completed" and not overrides:
        return None
    members = found[1]["members"]
    cfgs = train.seed_configs(cfg)
    if [m.get("dir") for m in members] != [seed_folder(c) for c in cfgs]:
        raise ExperimentError(f"{run_dir}/{runs.SEEDS_MANIFEST}: its members are not the config's seeds")
    for member in members if cfg.train.epochs > saved.train.epochs else ():  # a seed to train longer needs its state
        folder = run_dir / member["dir"]
        try:
            status = (runs.read_summary(folder) or {}).get("status")
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None
        if status == "completed" and not runs.has_state(folder):
            raise ExperimentError(_no_state_kept(folder, status))
    t0 = time.perf_counter()
    ds = load_data(located(cfg, inputs))
    check_data(run_dir, ds, inputs)
    if overrides:  # train.epochs grew (resume refuses any other change): the folder's config says so
        _grown(run_dir, cfg, inputs)
    outcomes = []
    for i, (c, member) in enumerate(zip(cfgs, members)):
        folder = run_dir / member["dir"]
        seed_shown = Shown(shown.writers_of_seed(i, c.seed), shown.progress, shown.config_name)
        outcome = None
        if runs.has_state(folder):
            outcome = resume(folder, overrides, seed_shown)
        if outcome is None:
            outcome = finished_outcome(folder)  # finished: kept as it is
        if outcome is None:  # never started: train it now, in its folder
            writer = seed_writer(folder, c, ds, located(c, inputs).data)
            with _known_failures(run_dir, "interrupted; resume the folder again"), interrupt.deferred():
                outcome = _train_and_report(c, ds, folder, writer, seed_shown)
        outcome.complete()
        outcomes.append(outcome)
        member.update(status=outcome.summary["status"], verdict=outcome.diagnosis.verdict)
        if outcome.summary["status"] == "interrupted":
            break  # a stop ends the resume, as it ends a run of the seeds: the next seeds keep their state
    aggregate = _seeds_summary(cfg, cfgs, members, outcomes, "sequential (resumed)", time.perf_counter() - t0)
    runs.write_summary(run_dir, aggregate)
    runs.write_manifest(run_dir, runs.SEEDS_MANIFEST, {**found[1], "status": aggregate["status"], "members": members})
    return SeedsOutcome(run_dir, aggregate, outcomes)
