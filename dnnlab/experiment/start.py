"""A new experiment: its run folder, one seed or several, the linear reference beside the
training, the diagnosis and the report.
"""

from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from dnnlab import interrupt, runs
from dnnlab.config import Config, training_loop
from dnnlab.data import DataError, Dataset
from dnnlab.diagnose import Diagnosis
from dnnlab.runs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED
from dnnlab.train import distributed

if TYPE_CHECKING:
    from dnnlab.reference import Pending
from dnnlab.experiment.inputs import record_inputs, run_lock
from dnnlab.experiment.load import ExperimentError, check_compatible, check_devices


@dataclass(frozen=True)
class Shown:
    """How a run is shown while it trains: the live writers (the console), steps within an
    epoch, what the printed commands start from (a config file, or `runs.origin`: the config
    and its overrides, in order; recorded in inputs.json), a hook told the new folder, the
    command line (recorded too), and, for a multi-seed run, each seed's live writers (given the
    seed's index and seed; without it `writers` follow the first seed)."""

    writers: Sequence[runs.Writer] = ()
    progress: bool = False
    config_name: Any = "config.yaml"
    announce: Optional[Callable[[Path], None]] = None
    argv: Sequence[str] = ()
    seed_writers: Optional[Callable[[int, int], Sequence[runs.Writer]]] = None

    def writers_of_seed(self, index: int, seed: int) -> Sequence[runs.Writer]:
        """The live writers of the `index`-th seed of a multi-seed run."""
        if self.seed_writers is not None:
            return self.seed_writers(index, seed)
        return self.writers if index == 0 else ()


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
    with _new_folder(cfg, ds, out) as run_dir:
        run_writer = runs.RunDir(run_dir, cfg, keep_state=cfg.train.keep_state)
        _started(run_dir, cfg, ds, shown)
        return _train_and_report(cfg, ds, run_dir, run_writer, shown)


@contextmanager
def _new_folder(cfg: Config, ds: Dataset, out: Path) -> Iterator[Path]:
    """A new run folder for `cfg` under `out`, locked while the block runs; a stop signal
    received so far ends the run before it is made."""
    check_compatible(cfg, ds)
    _stop_before("before the run started; nothing was written")
    run_dir = runs.new_run_dir(out, cfg.name)
    with run_lock(run_dir):
        yield run_dir


def _started(run_dir: Path, cfg: Config, ds: Dataset, shown: Shown) -> None:
    """A new run folder, its config.yaml written: what it is tied to (inputs.json), then announced."""
    record_inputs(run_dir, cfg, ds, origin=shown.config_name, argv=shown.argv)
    if shown.announce is not None:
        shown.announce(run_dir)


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
        _write_stub(cfg, run_dir, run_writer, "interrupted")


def _write_stub(cfg: Config, run_dir: Path, run_writer: runs.Writer, status: str, reason: Optional[str] = None) -> None:
    """The summary of a run that ended without its own (`runs.stub_summary`), after the epochs on disk."""
    run_writer.finish(runs.stub_summary(cfg.name, status, history=runs.read_metrics(run_dir), reason=reason))


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

    output = _Output.open(cfg, run_dir, run_writer, resume)
    distributed.on_peer_lost(partial(_mark_failed, cfg, run_dir, run_writer, output.files))
    with reference_beside(cfg, ds) as beside:  # the linear reference trains in a thread meanwhile
        try:
            result = train.fit(cfg, ds, output.writer(shown.writers), progress=shown.progress, resume=resume)
            output.files.close()
            _training_over([result.summary])
        except OSError as exc:
            output.close()
            # the disk filled up (or the folder vanished) mid-run: say so in the summary if it can be written
            try:
                _write_stub(cfg, run_dir, run_writer, "failed", str(exc))
            except (OSError, ValueError):
                pass
            raise
        except KeyboardInterrupt:
            output.close()
            _interrupted_summary(cfg, run_dir, run_writer)
            raise
        outcome, interrupted = _report(cfg, ds, run_dir, result, output, shown, beside, draw=False)
    if interrupted:
        outcome.complete()
        raise KeyboardInterrupt
    return outcome


@dataclass
class _Output:
    """Where one seed's epochs go while it trains: its run folder and TensorBoard (`board`, None
    when logging.tensorboard is off), written by a thread of their own (`files`) so that writing
    overlaps the next epoch's training."""

    files: runs.Background
    board: Any

    @classmethod
    def open(cls, cfg: Config, run_dir: Path, run_writer: runs.Writer, resume: Any = None) -> _Output:
        from dnnlab.tracking import open_board

        board = open_board(cfg, run_dir, resume)  # RUN_DIR/tb/, unless logging.tensorboard is off
        return cls(runs.Background(run_writer, board), board)

    def writer(self, live: Sequence[runs.Writer]) -> runs.Writer:
        """The writer training is given: the files, and `live` (the console) beside them."""
        return runs.MultiWriter(self.files, *live)

    def close_board(self) -> None:
        if self.board is not None:
            self.board.close()

    def close(self) -> None:
        """After a failure: write what is queued, and close TensorBoard."""
        self.files.close()
        self.close_board()


def _report(
    cfg: Config, ds: Dataset, run_dir: Path, result: Any, output: _Output, shown: Shown, beside: Optional[Pending],
    *, reference: bool = True, draw: bool = True,
) -> tuple[Outcome, bool]:
    """A trained seed's linear reference (`with_reference`, unless not `reference`), diagnosis,
    summary.json, report.md and TensorBoard's verdict; the plots drawn now (`draw`) or left for
    `Outcome.complete`. Returns (the Outcome, whether Ctrl-C stopped the reference)."""
    from dnnlab.report import draw_plots, finalize

    summary, stopped = with_reference(cfg, ds, result.summary, beside) if reference else (result.summary, False)
    diagnosis, problems = finalize(run_dir, cfg, result.history, summary, config_name=shown.config_name, draw=draw)
    if output.board is not None:
        output.board.report(summary, diagnosis)  # hparams with the kept metrics, and the verdict as text
    pending = None if draw else partial(
        draw_plots, run_dir, cfg, result.history, {**summary, "diagnosis": diagnosis.to_dict()}, diagnosis, shown.config_name,
    )
    return Outcome(run_dir, summary, diagnosis, problems, pending), stopped


def reference_beside(cfg: Config, ds: Dataset):
    """The linear reference computed in a thread while the run trains (`reference.background`);
    in a multi-process run it is computed after the training, on process 0's own devices."""
    from dnnlab.reference import background

    return background(cfg, ds, enabled=distributed.process_count() == 1)


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
    _write_stub(cfg, run_dir, run_writer, "failed", message)


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


def execute_seeds(cfg: Config, ds: Dataset, out: Path, shown: Optional["Shown"] = None) -> SeedsOutcome:
    """Train the `train.seeds` copies of `cfg` (seed, seed + 1, ...) in one run folder.

    The folder holds the config, `seeds.json` (the members, as a sweep's manifest, so that
    `dnnlab compare` reads it), summary.json with the mean and std over seeds, and one ordinary
    run folder per seed (`seed-<s>/`: metrics.jsonl with a `seed` field, checkpoints, report).
    Each seed's live writers come from `shown.writers_of_seed`.
    """
    shown = shown or Shown()
    t0 = time.perf_counter()
    with _new_folder(cfg, ds, out) as run_dir:
        runs.write_config(run_dir, cfg)
        _started(run_dir, cfg, ds, shown)
        return _execute_seeds(cfg, ds, run_dir, shown, t0)


def _execute_seeds(cfg: Config, ds: Dataset, run_dir: Path, shown: Shown, t0: float) -> SeedsOutcome:
    from dnnlab import train  # imports JAX

    cfgs = train.seed_configs(cfg)
    mode = seeds_mode(cfg)
    members = [
        {"index": i, "params": {"seed": c.seed}, "overrides": [f"seed={c.seed}"], "dir": seed_folder(c), "status": "pending"}
        for i, c in enumerate(cfgs)
    ]

    def write_manifest(status: str) -> None:
        runs.write_manifest(run_dir, runs.SEEDS_MANIFEST, {"kind": "seeds", "status": status, "seed_mode": mode, "members": members})

    write_manifest("running")
    outputs, seed_writers = [], []
    for i, c in enumerate(cfgs):
        (run_dir / seed_folder(c)).mkdir()
        outputs.append(_Output.open(c, run_dir / seed_folder(c), seed_writer(run_dir / seed_folder(c), c, ds)))
        seed_writers.append(outputs[-1].writer(shown.writers_of_seed(i, c.seed)))
    # the seeds share their split, so one reference (trained beside them) serves every seed
    with reference_beside(cfgs[0], ds) as beside:
        try:
            try:
                results = train.fit_seeds(cfg, ds, seed_writers, progress=shown.progress, mode=mode)
            finally:
                for output in outputs:
                    output.files.close()
            _training_over([r.summary for r in results], len(cfgs))
        except KeyboardInterrupt:
            for output in outputs:
                output.close_board()
            for m in members:
                if m["status"] == "pending":
                    m["status"] = "interrupted"
            write_manifest("interrupted")
            raise
        outcomes = []
        interrupted = False
        for c, result, member, output in zip(cfgs, results, members, outputs):
            outcome, stopped = _report(c, ds, run_dir / member["dir"], result, output, shown, beside, reference=not interrupted)
            interrupted = interrupted or stopped
            outcomes.append(outcome)
            member.update(status=result.summary["status"], verdict=outcome.diagnosis.verdict)
    for output in outputs[len(results):]:
        output.close_board()
    for member in members[len(results):]:
        member["status"] = "not-run"
    summary = _seeds_summary(cfg, cfgs, members, outcomes, mode, time.perf_counter() - t0)
    status = summary["status"]
    runs.write_summary(run_dir, summary)
    write_manifest(status)
    if interrupted:
        raise KeyboardInterrupt
    return SeedsOutcome(run_dir, summary, outcomes)


def seed_folder(cfg: Config) -> str:
    """The folder of one seed in a multi-seed folder: seed-<s>."""
    return f"seed-{cfg.seed}"


def seed_writer(folder: Path, cfg: Config, ds: Dataset, found: Optional[Any] = None) -> runs.Writer:
    """The run folder writer of one seed of a multi-seed folder (its metrics tagged with `seed`),
    its config.yaml and inputs.json written (`found`: where the data were found, as in `record_inputs`)."""
    writer = _SeedTag(runs.RunDir(folder, cfg, keep_state=cfg.train.keep_state), cfg.seed)
    record_inputs(folder, cfg, ds, found)
    return writer


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
    for key in runs.METRICS + runs.CLASS_METRICS + runs.REGRESSION_METRICS:
        m, s, count = runs.seed_stats(summaries, key)
        if count:
            mean[key], std[key] = m, s
    return {
        "name": cfg.name,
        "status": status,
        "seeds": [c.seed for c in cfgs],
        "seed_mode": mode,
        "members": [
            {"seed": c.seed, "dir": m["dir"], "status": m["status"], "verdict": m.get("verdict"),
             "epochs_run": o.summary.get("epochs_run"), "kept": runs.kept_metrics(o.summary)}
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
