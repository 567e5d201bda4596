"""One experiment end to end: data -> run folder -> fit -> diagnosis and report.

`run` is what the CLI's `run` and the sweep call: it loads nothing itself, trains one seed or
several, and turns every known failure into an `ExperimentError` that carries its exit code,
so the CLI only parses, calls, prints and exits.
"""

from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from dnnlab import distributed, interrupt, runs
from dnnlab.config import Config, data_seed, dump_yaml, training_loop
from dnnlab.data import Dataset, DataError
from dnnlab.diagnose import Diagnosis

from dnnlab.runs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, shell_command

if TYPE_CHECKING:
    from dnnlab.reference import Pending


class ExperimentError(Exception):
    """A known failure: `str()` is the message for the user, `code` the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def load_data(cfg: Config) -> Dataset:
    """The config's dataset, checked against its model; ExperimentError when it cannot be used."""
    from dnnlab import data

    from dnnlab.config import ConfigError, check_size

    try:
        ds = data.load(cfg.data, data_seed(cfg))
        check_compatible(cfg, ds)
        check_size(cfg, ds.input_shape, ds.num_classes)  # refuse what this machine's memory cannot hold
    except (DataError, ConfigError) as exc:
        raise ExperimentError(str(exc)) from None
    except KeyboardInterrupt:
        raise ExperimentError("interrupted while loading the data; nothing was written", EXIT_INTERRUPTED) from None
    return ds


def check_compatible(cfg: Config, ds: Dataset) -> None:
    """Raise DataError when the model cannot take the dataset's inputs, or `train.class_weight`
    names a class the data do not have (before any JAX work)."""
    if isinstance(cfg.train.class_weight, dict):
        import numpy as np

        from dnnlab.baselines import class_weights

        try:
            class_weights(cfg.train.class_weight, np.bincount(ds.train.y, minlength=ds.num_classes).tolist(), ds.classes)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    if cfg.model.arch not in ("cnn", "resnet"):
        return
    if len(ds.input_shape) != 3:
        raise DataError(
            f"model.arch={cfg.model.arch} needs images; {ds.name} gives flat vectors of {ds.input_dim} features"
        )
    if cfg.model.arch == "resnet":
        return
    h, w = ds.input_shape[:2]
    for i, _ in enumerate(cfg.model.channels, 1):
        if cfg.model.pool == "max":
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise DataError(
                f"model.channels: {len(cfg.model.channels)} conv blocks with 2x2 max pooling shrink the "
                f"{ds.input_shape[0]}x{ds.input_shape[1]} images of {ds.name} to nothing at block {i}; "
                f"use at most {i - 1} blocks or model.pool=none"
            )


@dataclass(frozen=True)
class Shown:
    """How a run is shown while it trains: the live writers (the console), steps within an
    epoch, the config's name for the report's commands, and a hook told the new folder."""

    writers: Sequence[runs.Writer] = ()
    progress: bool = False
    config_name: str = "config.yaml"
    announce: Optional[Callable[[Path], None]] = None


@dataclass
class Outcome:
    run_dir: Path
    summary: dict[str, Any]
    diagnosis: Diagnosis
    problems: list[str]  # non-fatal: plots that could not be drawn
    pending: Optional[Callable[[], list[str]]] = None  # draws the plots, when `complete` is called

    def complete(self) -> "Outcome":
        """Draw the plots that were left for after the verdict; the run folder is then whole."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.problems += pending()
        return self


@dataclass
class SeedsOutcome:
    run_dir: Path
    summary: dict[str, Any]  # the aggregate: members, mean, std
    outcomes: list[Outcome]  # one per seed that ran, in seed order


@contextmanager
def _known_failures(out: Path, interrupted: str) -> Iterator[None]:
    """Map the failures a run can meet to ExperimentError with their exit codes."""
    try:
        yield
    except (DataError, distributed.DeviceError, runs.StateError) as exc:
        raise ExperimentError(str(exc), getattr(exc, "code", EXIT_BAD_INPUT)) from None
    except OSError as exc:
        # a full disk is a failed run (exit 1), an unusable --out is bad input (exit 2)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise ExperimentError(f"cannot write the run folder under {out}: {exc}", EXIT_FAILED if full else EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        raise ExperimentError(interrupted, EXIT_INTERRUPTED) from None


def run(cfg: Config, ds: Dataset, out: Path, shown: Optional["Shown"] = None) -> "Outcome | SeedsOutcome | dict[str, Any]":
    """Train `cfg` (one seed, or `train.seeds` of them) under `out`, diagnose and report it.

    Raises ExperimentError (bad data, an unwritable folder, a device setting that does not fit,
    Ctrl-C) with the exit code. A single run's plots are left for `Outcome.complete`, after the
    verdict is shown. In a process other than 0 of a multi-process run, only trains (`follow`)
    and returns the summary.
    """
    check_devices(cfg)
    if not distributed.is_writer():
        with _known_failures(out, "interrupted"), interrupt.deferred():
            return follow(cfg, ds)
    from dnnlab.report import preload_matplotlib

    preload_matplotlib()
    if cfg.train.seeds > 1:
        with _known_failures(out, "interrupted; the finished epochs are in the seeds' folders"), interrupt.deferred():
            return execute_seeds(cfg, ds, out, shown)
    with _known_failures(out, "interrupted; the finished epochs are in the run folder"), interrupt.deferred():
        return execute(cfg, ds, out, shown)


def execute(cfg: Config, ds: Dataset, out: Path, shown: Optional["Shown"] = None) -> Outcome:
    """Train `cfg` on `ds` in a new run folder under `out`, then diagnose and report it.

    Ctrl-C during training ends the run with status `interrupted` (and returns); Ctrl-C
    elsewhere writes an interrupted summary if none exists and re-raises. OSError from creating
    the folder propagates.
    """
    shown = shown or Shown()
    check_compatible(cfg, ds)
    _stop_before("before the run started; nothing was written")
    run_dir = runs.new_run_dir(out, cfg.name)
    with run_lock(run_dir):
        run_writer = runs.RunDir(run_dir, dump_yaml(cfg))
        record_inputs(run_dir, cfg, ds)
        if shown.announce is not None:
            shown.announce(run_dir)
        return _train_and_report(cfg, ds, run_dir, run_writer, shown)


def _stop_before(what: str) -> None:
    """A stop signal received so far ends the run here, before it changes any file: ExperimentError
    (exit 130) saying `what`."""
    try:
        interrupt.stop_point()
    except KeyboardInterrupt:
        raise ExperimentError(f"interrupted {what}", EXIT_INTERRUPTED) from None


def _interrupted_summary(cfg: Config, run_dir: Path, run_writer: runs.Writer) -> None:
    """The summary of a run stopped before it wrote one: interrupted, after the epochs on disk."""
    if not (run_dir / runs.SUMMARY).exists():
        done = runs.read_metrics(run_dir)
        run_writer.finish({"name": cfg.name, "status": "interrupted", "epochs_run": max(len(done) - 1, 0)})


def _train_and_report(
    cfg: Config, ds: Dataset, run_dir: Path, run_writer: runs.Writer, shown: Shown, resume: Any = None
) -> Outcome:
    """fit, the reference, the diagnosis and report.md (the plots left for `Outcome.complete`).

    A failure while writing or a Ctrl-C leaves a summary that says so (failed, interrupted); so
    does a stop that the watchdog had to carry out (`interrupt.last_words`).
    """
    with interrupt.last_words(partial(_interrupted_summary, cfg, run_dir, run_writer)):
        return _train_and_report_(cfg, ds, run_dir, run_writer, shown, resume)


def _train_and_report_(
    cfg: Config, ds: Dataset, run_dir: Path, run_writer: runs.Writer, shown: Shown, resume: Any = None
) -> Outcome:
    from dnnlab import train  # imports JAX
    from dnnlab.tracking import open_board

    board = open_board(cfg, run_dir, resume)  # RUN_DIR/tb/, unless logging.tensorboard is off
    # the files are written by a thread of their own, overlapping the next epoch's training
    files = runs.Background(run_writer, board)
    distributed.on_peer_lost(partial(_mark_failed, cfg, run_dir, run_writer, files))
    with reference_beside(cfg, ds) as beside:  # the linear reference trains in a thread meanwhile
        try:
            result = train.fit(cfg, ds, runs.MultiWriter(files, *shown.writers), progress=shown.progress, resume=resume)
            files.close()
            _training_over([result.summary])
        except OSError as exc:
            files.close()
            if board is not None:
                board.close()
            # the disk filled up (or the folder vanished) mid-run: say so in the summary if it can be written
            try:
                done = runs.read_metrics(run_dir)
                run_writer.finish({"name": cfg.name, "status": "failed", "reason": str(exc), "epochs_run": max(len(done) - 1, 0)})
            except (OSError, ValueError):
                pass
            raise
        except KeyboardInterrupt:
            files.close()
            if board is not None:
                board.close()
            _interrupted_summary(cfg, run_dir, run_writer)
            raise
        summary, interrupted = with_reference(cfg, ds, result.summary, beside)
    from dnnlab.report import draw_plots, finalize

    diagnosis, problems = finalize(run_dir, cfg, result.history, summary, config_name=shown.config_name, draw=False)
    if board is not None:
        board.report(summary, diagnosis)  # hparams with the kept metrics, and the verdict as text
    pending = partial(draw_plots, run_dir, cfg, result.history, {**summary, "diagnosis": diagnosis.to_dict()}, diagnosis, shown.config_name)
    outcome = Outcome(run_dir, summary, diagnosis, problems, pending)
    if interrupted:
        outcome.complete()
        raise KeyboardInterrupt
    return outcome


def reference_beside(cfg: Config, ds: Dataset):
    """The linear reference computed in a thread while the run trains (`reference.background`);
    in a multi-process run it is computed after the training, on process 0's own devices."""
    from dnnlab.reference import background

    return background(cfg, ds, enabled=distributed.process_count() == 1)


def check_devices(cfg: Config) -> None:
    """Raise ExperimentError (exit 2) when `train.devices` does not fit this machine, the batch
    or the seed mode: before any folder is made."""
    try:
        count = distributed.resolve_devices(cfg)
    except distributed.DeviceError as exc:
        raise ExperimentError(str(exc), exc.code) from None
    if count > 1 and cfg.train.seeds > 1 and cfg.train.seed_mode == "vmap":
        raise ExperimentError(
            f"train.seed_mode: vmap trains its seeds on one device; this run has {count} (train.devices): set "
            "train.seed_mode to sequential or auto (the seeds then run one after another, each over every device), "
            "or train.devices to 1"
        )


def follow(cfg: Config, ds: Dataset) -> dict[str, Any]:
    """A process other than 0 of a multi-process run: the same training as process 0 (every
    collective needs every process), with nothing written or shown. Returns the summary of its
    last seed (the status decides the exit code)."""
    from dnnlab import train  # imports JAX

    if cfg.train.seeds > 1:
        writers = [runs.Writer() for _ in range(cfg.train.seeds)]
        results = train.fit_seeds(cfg, ds, writers, progress=False, mode=seeds_mode(cfg))
        summaries = [r.summary for r in results]
    else:
        summaries = [train.fit(cfg, ds, runs.Writer(), progress=False).summary]
    _training_over(summaries, cfg.train.seeds)
    return summaries[-1] if summaries else {"status": "interrupted"}


def _training_over(summaries: list[dict[str, Any]], expected: int = 1) -> None:
    """Tell the other processes of a multi-process run that this one trained to the end (they
    stop watching it); an interrupted one says nothing, so that they find it lost instead of
    waiting in the collectives it left."""
    if len(summaries) == expected and all(s.get("status") != "interrupted" for s in summaries):
        distributed.finished()


def _mark_failed(cfg: Config, run_dir: Path, run_writer: runs.Writer, files: runs.Background, message: str) -> None:
    """The summary of a run that lost one of its processes (called by the watch thread), after
    the epochs already queued are written."""
    files.close()
    done = runs.read_metrics(run_dir)
    run_writer.finish({"name": cfg.name, "status": "failed", "reason": message, "epochs_run": max(len(done) - 1, 0)})


def with_reference(
    cfg: Config, ds: Dataset, summary: dict[str, Any], pending: Optional["Pending"] = None
) -> tuple[dict[str, Any], bool]:
    """(`summary` with the linear reference's result, whether Ctrl-C stopped the reference).

    Only a run that trained gets one; an interrupted reference is left out, never half-used.
    `pending`: the reference already being computed beside the run (`reference_beside`).
    """
    if summary.get("status") not in runs.FINISHED or cfg.diagnosis.reference == "none":
        return summary, False
    from dnnlab.reference import fit_reference

    try:
        if pending is not None:
            reference = pending.result(interrupt.stop_point)
        else:
            with distributed.alone():  # process 0's own devices: the other processes are done
                reference = fit_reference(cfg, ds)
    except KeyboardInterrupt:
        return summary, True
    if reference is None or reference.get("status") != "completed":
        return summary, reference is not None and reference.get("status") == "interrupted"
    return {**summary, "reference": {k: v for k, v in reference.items() if k != "status"}}, False


RESUMABLE_CHANGES = ("train.epochs",)  # what --set may change when a run is resumed


# ---------------------------------------------------------------- what a run started with


def run_lock(run_dir: Path) -> runs.FolderLock:
    """The lock a process holds on a run folder while it trains in it: a second `run --resume`
    of the folder is refused (ExperimentError) while that process lives."""
    def busy(pid: int) -> ExperimentError:
        return ExperimentError(
            f"{run_dir}: process {pid} is training this run ({runs.RUN_LOCK}); wait for it or stop it" if pid
            else f"{run_dir / runs.RUN_LOCK}: cannot take the lock"
        )

    return runs.FolderLock(run_dir, runs.RUN_LOCK, busy)


def record_inputs(run_dir: Path, cfg: Config, ds: Dataset, found: Optional[Any] = None) -> None:
    """inputs.json: the resolved config and the fingerprint of the data (`data.fingerprint`), as
    found at `found` (a DataConfig; default cfg.data)."""
    from dnnlab.data import fingerprint

    runs.write_inputs(run_dir, cfg.model_dump(mode="json"), fingerprint(found or cfg.data, ds))


def located(cfg: Config, inputs: Optional[dict[str, Any]]) -> Config:
    """`cfg` with data.path and data.test_path as the run recorded them (absolute), where they
    still exist: a run is continued, fixed or evaluated on its data from any folder."""
    found = {f["key"].removeprefix("data."): f["path"] for f in (inputs or {}).get("data", {}).get("files", [])}
    update = {key: path for key, path in found.items() if key in ("path", "test_path") and Path(path).exists()}
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)}) if update else cfg


def _afresh(run_dir: Path) -> str:
    return shell_command("dnnlab", "run", Path(run_dir) / runs.CONFIG, "--out", Path(run_dir).parent)


def check_config(run_dir: Path, saved: Config, inputs: Optional[dict[str, Any]]) -> None:
    """ExperimentError (exit 2) when the run's config.yaml is no longer the config it started
    with (inputs.json): only train.epochs may have grown, and logging (output only) changed."""
    if inputs is None:
        return  # a folder made before runs recorded their inputs
    now = saved.model_dump(mode="json")
    if runs.config_digest(now) == inputs["config_sha256"]:
        return
    from dnnlab.compare import flatten

    old, new = flatten(inputs["config"]), flatten(now)
    changed = sorted(
        k for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and not k.startswith("logging.")
        and not (k == "train.epochs" and isinstance(new.get(k), int) and isinstance(old.get(k), int) and new[k] > old[k])
    )
    if changed:
        raise ExperimentError(
            f"{run_dir / runs.CONFIG} is not the config the run started with ({runs.INPUTS}): "
            f"{', '.join(f'{k} ({old.get(k)!r} -> {new.get(k)!r})' for k in changed)}; a run continues with its own "
            f"config (only train.epochs may grow): undo the edit, or train the edited config afresh: {_afresh(run_dir)}"
        )


def _files_changed(inputs: dict[str, Any]) -> list[str]:
    """The recorded data files whose size or modification time differ now (or that are gone)."""
    out = []
    for f in inputs["data"]["files"]:
        path = Path(f["path"])
        if "size" not in f:
            continue  # a folder: the digest decides
        if not path.is_file():
            out.append(f"{f['key']} {path} is gone")
            continue
        stat = path.stat()
        if stat.st_size != f.get("size") or stat.st_mtime_ns != f.get("mtime_ns"):
            out.append(f"{f['key']} {path} changed ({f.get('size')} -> {stat.st_size} bytes, modified since the run started)")
    return out


def check_data(run_dir: Path, ds: Dataset, inputs: Optional[dict[str, Any]]) -> None:
    """ExperimentError (exit 2) when `ds` is not the data the run started with: the digests of
    the loaded arrays differ (inputs.json)."""
    if inputs is None or ds.digest == inputs["data"]["digest"]:
        return
    what = "; ".join(_files_changed(inputs)) or f"its arrays are not those the run trained on ({ds.source})"
    raise ExperimentError(
        f"{run_dir}: the data differ from those the run started with: {what}; a run continues on its own data: "
        f"restore them, or train afresh on these: {_afresh(run_dir)}"
    )


def check_inputs(run_dir: Path) -> Optional[dict[str, Any]]:
    """`check_config` and the data of a finished run without training it (for `fix`): when a
    recorded file's size or modification time changed, the data are loaded and their digest
    compared. Returns the inputs (None for a folder without them); raises ExperimentError."""
    from dnnlab.config import ConfigError

    try:
        _, saved, _ = runs.load_run(run_dir)
        inputs = runs.read_inputs(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise ExperimentError(str(exc)) from None
    check_config(run_dir, saved, inputs)
    if inputs is not None and _files_changed(inputs):
        check_data(run_dir, load_data(located(saved, inputs)), inputs)
    return inputs


def resume(run_dir: Path, overrides: Sequence[str] = (), shown: Optional[Shown] = None, config_file: Optional[Path] = None) -> Optional[Outcome]:
    """Continue the run in `run_dir` from its last saved epoch, in the same folder.

    metrics.jsonl is cut back to the saved epoch; the result equals a run that was never stopped
    (bit for bit on one machine). `overrides` may only extend train.epochs; a `config_file`
    (with the overrides) must resolve to the run's config, and the run's config.yaml and data
    must be those it started with (inputs.json; the data are found at their recorded absolute
    path). A run stopped before its first epoch starts again. Returns None when the run had
    already finished (nothing to do). Raises ExperimentError with the exit code.
    """
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).exists():
        raise ExperimentError(f"{run_dir}: not a run folder (no {runs.CONFIG})")
    with _known_failures(run_dir, "interrupted before the run was resumed; nothing was changed"), run_lock(run_dir):
        return _resume(run_dir, overrides, shown, config_file)


def _resume(run_dir: Path, overrides: Sequence[str], shown: Optional[Shown], config_file: Optional[Path]) -> Optional[Outcome]:
    from dnnlab.compare import flatten
    from dnnlab.config import ConfigError, load_config

    shown = shown or Shown()
    try:
        history, saved, summary = runs.load_run(run_dir)
        cfg = load_config(config_file or run_dir / runs.CONFIG, list(overrides))
        inputs = runs.read_inputs(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise ExperimentError(str(exc)) from None
    if saved.train.seeds > 1:
        raise ExperimentError(f"{run_dir}: a multi-seed folder: `dnnlab run --resume` resumes it seed by seed")
    check_config(run_dir, saved, inputs)
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
    finished = summary.get("status") in ("completed", "stopped_early", "diverged")
    if finished and (cfg.train.epochs == saved.train.epochs or summary.get("status") != "completed"):
        return None  # stopped early or diverged runs stay so, whatever the budget
    from dnnlab import train  # imports JAX

    state, problems = None, []
    no_state = not (run_dir / runs.STATE).exists() and not (run_dir / runs.STATE_PREV).exists()
    if not (no_state and len(history) <= 1):  # else stopped before its first epoch: it starts again
        try:
            arrays, _, passed = runs.read_state(run_dir)
            state = train.Resume.from_arrays(arrays, history)
        except ValueError as exc:
            raise ExperimentError(f"{run_dir}: {exc}" if not str(exc).startswith(str(run_dir)) else str(exc)) from None
        problems = [f"{p}: continued from {runs.STATE_PREV} (epoch {state.epoch})" for p in passed]
    ds = load_data(located(cfg, inputs))
    check_data(run_dir, ds, inputs)
    check_devices(cfg)
    _stop_before("before the run was resumed; nothing was changed")
    if cfg.train.epochs != saved.train.epochs:
        runs.atomic_write_text(run_dir / runs.CONFIG, dump_yaml(cfg))
        if inputs is not None:
            runs.write_inputs(run_dir, cfg.model_dump(mode="json"), inputs["data"])
    if inputs is None:
        record_inputs(run_dir, cfg, ds)  # from now on the folder is tied to these
    with _known_failures(run_dir, "interrupted; the finished epochs are in the run folder, resume it again"), interrupt.deferred():
        run_writer: runs.Writer = runs.RunDir(run_dir, "", history=state.history if state is not None else [])
        if (run_dir.parent / runs.SEEDS_MANIFEST).exists():
            run_writer = _SeedTag(run_writer, cfg.seed)  # a seed of a multi-seed folder keeps its tag
        if shown.announce is not None:
            shown.announce(run_dir)
        outcome = _train_and_report(cfg, ds, run_dir, run_writer, shown, resume=state)
    outcome.problems += problems
    return outcome


def execute_seeds(cfg: Config, ds: Dataset, out: Path, shown: Optional["Shown"] = None) -> SeedsOutcome:
    """Train the `train.seeds` copies of `cfg` (seed, seed + 1, ...) in one run folder.

    The folder holds the config, `seeds.json` (the members, as a sweep's manifest, so that
    `dnnlab compare` reads it), summary.json with the mean and std over seeds, and one ordinary
    run folder per seed (`seed-<s>/`: metrics.jsonl with a `seed` field, checkpoints, report).
    The live writers (`shown.writers`, the console) follow the first seed.
    """
    shown = shown or Shown()
    check_compatible(cfg, ds)
    t0 = time.perf_counter()
    _stop_before("before the run started; nothing was written")
    run_dir = runs.new_run_dir(out, cfg.name)
    with run_lock(run_dir):
        return _execute_seeds(cfg, ds, run_dir, shown, t0)


def _execute_seeds(cfg: Config, ds: Dataset, run_dir: Path, shown: Shown, t0: float) -> SeedsOutcome:
    from dnnlab import train  # imports JAX
    from dnnlab.report import finalize
    from dnnlab.tracking import open_board

    runs.atomic_write_text(run_dir / runs.CONFIG, dump_yaml(cfg))
    record_inputs(run_dir, cfg, ds)
    if shown.announce is not None:
        shown.announce(run_dir)
    cfgs = train.seed_configs(cfg)
    mode = seeds_mode(cfg)
    members = [
        {"index": i, "params": {"seed": c.seed}, "overrides": [f"seed={c.seed}"], "dir": f"seed-{c.seed}", "status": "pending"}
        for i, c in enumerate(cfgs)
    ]

    def write_manifest(status: str) -> None:
        runs.write_manifest(run_dir, runs.SEEDS_MANIFEST, {"kind": "seeds", "status": status, "seed_mode": mode, "members": members})

    write_manifest("running")
    seed_writers, boards, files = [], [], []
    for i, c in enumerate(cfgs):
        (run_dir / f"seed-{c.seed}").mkdir()
        member_writer = _SeedTag(runs.RunDir(run_dir / f"seed-{c.seed}", dump_yaml(c)), c.seed)
        record_inputs(run_dir / f"seed-{c.seed}", c, ds)
        boards.append(open_board(c, run_dir / f"seed-{c.seed}"))  # seed-<s>/tb/, unless logging.tensorboard is off
        # each seed's files written by a thread of their own (see `_train_and_report`)
        files.append(runs.Background(member_writer, boards[-1]))
        seed_writers.append(runs.MultiWriter(files[-1], *(shown.writers if i == 0 else ())))
    # the seeds share their split, so one reference (trained beside them) serves every seed
    with reference_beside(cfgs[0], ds) as beside:
        try:
            try:
                results = train.fit_seeds(cfg, ds, seed_writers, progress=shown.progress, mode=mode)
            finally:
                for f in files:
                    f.close()
            _training_over([r.summary for r in results], len(cfgs))
        except KeyboardInterrupt:
            for board in boards:
                if board is not None:
                    board.close()
            for m in members:
                if m["status"] == "pending":
                    m["status"] = "interrupted"
            write_manifest("interrupted")
            raise
        outcomes = []
        interrupted = False
        for c, result, member, board in zip(cfgs, results, members, boards):
            seed_dir = run_dir / member["dir"]
            summary, stopped = with_reference(c, ds, result.summary, beside) if not interrupted else (result.summary, False)
            interrupted = interrupted or stopped
            diagnosis, problems = finalize(seed_dir, c, result.history, summary, config_name=shown.config_name)
            if board is not None:
                board.report(summary, diagnosis)
            outcomes.append(Outcome(seed_dir, summary, diagnosis, problems))
            member.update(status=result.summary["status"], verdict=diagnosis.verdict)
    for board in boards[len(results):]:
        if board is not None:
            board.close()
    for member in members[len(results):]:
        member["status"] = "not-run"
    summary = _seeds_summary(cfg, cfgs, members, outcomes, mode, time.perf_counter() - t0)
    status = summary["status"]
    runs.write_summary(run_dir, summary)
    write_manifest(status)
    if interrupted:
        raise KeyboardInterrupt
    return SeedsOutcome(run_dir, summary, outcomes)


def _seeds_summary(
    cfg: Config, cfgs: list[Config], members: list[dict[str, Any]], outcomes: list[Outcome], mode: str, seconds: float
) -> dict[str, Any]:
    """A multi-seed folder's summary.json: the members, and the mean and std over those that finished."""
    statuses = [o.summary["status"] for o in outcomes]
    status = next((s for s in ("interrupted", "failed", "diverged") if s in statuses), "completed")
    if len(outcomes) < len(cfgs):
        status = "interrupted"
    summaries = [o.summary for o in outcomes]
    mean, std = {}, {}
    for key in runs.METRICS + runs.CLASS_METRICS:
        m, s, count = runs.seed_stats(summaries, key)
        if count:
            mean[key], std[key] = m, s
    return {
        "name": cfg.name,
        "status": status,
        "seeds": [c.seed for c in cfgs],
        "seed_mode": mode,
        "members": [
            {"seed": c.seed, "dir": m["dir"], "status": m["status"], "verdict": m.get("verdict"), "kept": runs.kept_metrics(o.summary)}
            for c, m, o in zip(cfgs, members, outcomes)
        ],
        "mean": mean,
        "std": std,
        "aggregated_seeds": [s["seed"] for s in summaries if s["status"] in runs.FINISHED],
        "verdicts": sorted({o.diagnosis.verdict for o in outcomes}),
        "wall_seconds": seconds,
    }


def finished_outcome(folder: Path) -> Optional[Outcome]:
    """The Outcome of a run folder that finished (completed, stopped early or diverged), read
    back from disk; None for any other folder."""
    from dnnlab.config import ConfigError
    from dnnlab.diagnose import diagnose

    try:
        if (runs.read_summary(folder) or {}).get("status") not in ("completed", "stopped_early", "diverged"):
            return None
        history, cfg, summary = runs.load_run(folder)
    except (ConfigError, ValueError, OSError):
        return None
    return Outcome(Path(folder), summary, diagnose(history, cfg, summary), [])


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
    from dnnlab.config import ConfigError, load_config

    try:
        found = runs.read_manifest(run_dir)
        saved = load_config(run_dir / runs.CONFIG)
        cfg = load_config(run_dir / runs.CONFIG, list(overrides))
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
    if [m.get("dir") for m in members] != [f"seed-{c.seed}" for c in cfgs]:
        raise ExperimentError(f"{run_dir}/{runs.SEEDS_MANIFEST}: its members are not the config's seeds")
    t0 = time.perf_counter()
    ds = load_data(located(cfg, inputs))
    check_data(run_dir, ds, inputs)
    if overrides:  # train.epochs grew (resume refuses any other change): the folder's config says so
        runs.atomic_write_text(run_dir / runs.CONFIG, dump_yaml(cfg))
        if inputs is not None:
            runs.write_inputs(run_dir, cfg.model_dump(mode="json"), inputs["data"])
    outcomes = []
    for i, (c, member) in enumerate(zip(cfgs, members)):
        folder = run_dir / member["dir"]
        seed_shown = Shown(shown.writers if i == 0 else (), shown.progress, shown.config_name)
        outcome = None
        if (folder / runs.STATE).exists() or (folder / runs.STATE_PREV).exists():
            outcome = resume(folder, overrides, seed_shown)
        if outcome is None:
            outcome = finished_outcome(folder)  # finished: kept as it is
        if outcome is None:  # never started: train it now, in its folder
            writer = _SeedTag(runs.RunDir(folder, dump_yaml(c)), c.seed)
            record_inputs(folder, c, ds, located(c, inputs).data)
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


# ---------------------------------------------------------------- the seed policy

VMAP_MAX_WIDTH_CPU = 128  # bench/seeds.py: vmapped seeds beat sequential runs on 2 CPU cores up to about this width


def seeds_mode(cfg: Config, platform: Optional[str] = None) -> str:
    """vmap or sequential for a multi-seed run (`train.seed_mode`; docs/speed.md)."""
    if cfg.train.seeds < 2:
        return "sequential"
    if training_loop(cfg) != "scan":
        return "sequential"  # the per-step loop (convolutional nets) is not vmapped
    if cfg.train.seed_mode != "auto":
        return cfg.train.seed_mode
    if platform is None:
        import jax

        platform = jax.default_backend()
        if distributed.resolve_devices(cfg) > 1:
            return "sequential"  # each seed's batches are split over the devices (train.devices)
    if platform != "cpu":
        return "vmap"
    # on the CPU one model of this size already fills the cores; vmapping only pays for small nets
    return "vmap" if max(cfg.model.layer_widths or (0,)) <= VMAP_MAX_WIDTH_CPU else "sequential"


class _SeedTag(runs.Writer):
    """A run folder writer that adds `seed` to every metrics line."""

    def __init__(self, inner: runs.RunDir, seed: int) -> None:
        self.inner, self.seed = inner, seed

    def start(self, info: dict[str, Any]) -> None:
        self.inner.start(info)

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.inner.write(epoch, {"seed": self.seed, **metrics})

    def checkpoint(self, tag: str, arrays: dict[str, Any]) -> None:
        self.inner.checkpoint(tag, arrays)

    def state(self, arrays: dict[str, Any]) -> None:
        self.inner.state(arrays)

    def finish(self, summary: dict[str, Any]) -> None:
        self.inner.finish({**summary, "seed": self.seed})
