"""The training loop: each seed's records, early stopping, divergence and checkpoints, the
resume state, and `fit` / `fit_seeds`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Optional

import jax
import numpy as np
import optax

from dnnlab import baselines, interrupt, losses, version
from dnnlab.checkpoints import flatten_params, unflatten_params
from dnnlab.config import Config, EarlyStoppingConfig, data_seed
from dnnlab.data import Dataset
from dnnlab.runs import (
    FINISHED,
    METRICS,
    REGRESSION_METRICS,
    StateError,
    Writer,
    epochs_run,
    stub_summary,
)
from dnnlab.train import pretrain
from dnnlab.train.programs import programs_for, use_compile_cache
from dnnlab.train.setup import _setup

if TYPE_CHECKING:
    from dnnlab.train.programs import _Programs
    from dnnlab.train.setup import _Setup
    from dnnlab.train.step import TrainState


class EarlyStopping:
    """Keras semantics: an improvement beats the best by more than min_delta; stop after
    `patience` epochs without one. Also tracks the best epoch when stopping is disabled."""

    def __init__(self, cfg: EarlyStoppingConfig, monitor: Optional[str] = None) -> None:
        self.cfg = cfg
        self.monitor = monitor or cfg.monitor
        self.sign = -1.0 if self.monitor.endswith(("accuracy", "_r2")) else 1.0
        self.best = math.inf  # of sign * value
        self.best_epoch: Optional[int] = None
        self.wait = 0
        self.should_stop = False

    def update(self, epoch: int, value: Optional[float]) -> bool:
        """Record one epoch's monitored value; return True if it is the new best."""
        improved = value is not None and math.isfinite(value) and self.sign * value < self.best - self.cfg.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = self.sign * value, epoch, 0
        else:
            self.wait += 1
            self._decide()
        return improved

    def restore(self, best: float, best_epoch: Optional[int], wait: int) -> None:
        """Continue from a resume state's (best, best epoch, epochs without improvement)."""
        self.best, self.best_epoch, self.wait = best, best_epoch, wait
        self._decide()

    def _decide(self) -> None:
        if self.cfg.enabled and self.wait >= self.cfg.patience:
            self.should_stop = True


@dataclass
class FitResult:
    summary: dict[str, Any]
    params: Any  # the final model (the best epoch's when early stopping restored it)
    history: list[dict[str, Any]]


def _pick(record: Optional[dict[str, Any]], recall: Optional[dict[str, list]] = None) -> Optional[dict[str, Any]]:
    """The six metrics of an epoch's record, and each split's balanced accuracy from its per-class
    recall (`_SeedRecord.recall`)."""
    if record is None:
        return None
    keys = REGRESSION_METRICS if any(k.endswith("_r2") for k in record) else METRICS
    out = {k: record.get(k) for k in keys}
    for split, per_class in (recall or {}).items():
        out[f"{split}_balanced_accuracy"] = baselines.balanced_accuracy(per_class)
    return out


def regression_record(record: dict[str, Any], variance: dict[str, float], std: float) -> dict[str, Any]:
    """A regression record in the target's own units: the evaluation's standardized mean squared
    and absolute errors (`<split>_loss`, `<split>_accuracy` of the programs) become
    `<split>_mse` (loss * std^2), `<split>_mae` (* std) and `<split>_r2` (1 - MSE / the split's
    target variance, which the standardization leaves unchanged); `<split>_loss` stays the
    standardized MSE that training minimizes (about 1 for a net that predicts the mean)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        split, _, what = key.partition("_")
        if what == "accuracy" and split in variance:
            loss = record[f"{split}_loss"]
            out[f"{split}_mse"] = loss * std**2
            out[f"{split}_mae"] = value * std
            var = variance[split]
            out[f"{split}_r2"] = 1.0 - loss / var if var > 0 else math.nan
        elif key != "running_accuracy":
            out[key] = value
    return out


def _is_diverged(record: dict[str, Any], limit: float) -> bool:
    for key in ("running_loss", "train_loss"):
        value = record.get(key)
        if value is not None and (not math.isfinite(value) or value > limit):
            return True
    return False


class _SeedRecord:
    """One seed's host-side bookkeeping: history, early stopping, divergence, checkpoints."""

    def __init__(self, cfg: Config, setup: _Setup, writer: Writer, num_classes: int) -> None:
        self.cfg, self.setup, self.writer, self.num_classes = cfg, setup, writer, num_classes
        self.history: list[dict[str, Any]] = []
        self.stopper = EarlyStopping(cfg.train.early_stopping, setup.monitor)
        self.best_arrays: Optional[dict[str, np.ndarray]] = None
        self.last_arrays: Optional[dict[str, np.ndarray]] = None
        self.status = "completed"
        self.active = True
        self.limit = math.inf
        self.t_start = time.perf_counter()
        self.pretrain: Optional[dict[str, Any]] = None  # the pretraining's record (`pretrain.pretrain`)
        self.recall: dict[int, dict[str, list]] = {}  # epoch -> split -> each class's recall

    def _classes(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        """`record` without the evaluation's per-class sums, which are kept here as each class's
        recall (the kept model's go into summary.json). With class weights each split's loss
        becomes the class-weighted mean; where the classes are watched (`class_aware`), each
        split's balanced accuracy goes into the record."""
        setup, recall = self.setup, {}
        if setup.regression:
            return regression_record(record, setup.target_var, setup.target_std)
        for split in ("train", "val", "test"):
            correct, per_class_loss = record.pop(f"{split}_class_correct", None), record.pop(f"{split}_class_loss", None)
            if correct is None:
                continue
            counts = setup.class_counts[split]
            recall[split] = baselines.class_recall(correct, counts)
            if per_class_loss is not None and setup.weights is not None:
                total = sum(w * n for w, n in zip(setup.weights, counts))
                loss = sum(w * v for w, v in zip(setup.weights, per_class_loss))
                record[f"{split}_loss"] = loss / total if total > 0 else math.nan
            if setup.class_aware:
                record[f"{split}_balanced_accuracy"] = baselines.balanced_accuracy(recall[split])
        self.recall[epoch] = recall
        return record

    def initial(self, record: dict[str, Any]) -> None:
        record = self._classes(0, record)
        self.history.append({"epoch": 0, **record})
        self.writer.write(0, record)
        initial_loss = record["train_loss"]
        self.limit = baselines.divergence_limit(self.cfg.train.divergence_factor, initial_loss, self.num_classes, self.setup.regression)
        if not math.isfinite(initial_loss):
            self.status, self.active = "diverged", False

    def epoch(self, epoch: int, record: dict[str, Any], state: Callable[[], TrainState]) -> None:
        """Record one epoch; `state()` fetches this seed's state when it is needed."""
        record = self._classes(epoch, record)
        self.history.append({"epoch": epoch, **record})
        self.writer.write(epoch, record)
        if _is_diverged(record, self.limit):
            self.status, self.active = "diverged", False
            return
        host = jax.device_get(state())
        arrays = flatten_params(host.params)
        self.last_arrays = arrays
        improved = self.stopper.update(epoch, record.get(self.setup.monitor))
        if improved:
            self.best_arrays = arrays
        if self.stopper.should_stop:
            self.status, self.active = "stopped_early", False
        # what continuing needs, before the checkpoints: a kill between the two leaves a state
        # that `resume` can rewrite them from
        kept_recall = {e: self.recall[e] for e in (0, self.stopper.best_epoch, epoch) if e in self.recall}
        self.writer.state(resume_arrays(epoch, host, self.stopper, self.best_arrays, kept_recall, self.pretrain))
        self.writer.checkpoint("last", arrays)
        if improved:
            self.writer.checkpoint("best", arrays)

    def resume_from(self, resume: "Resume") -> None:
        """Continue after `resume.epoch`: its records, early stopping and best model."""
        self.history = [dict(r) for r in resume.history]
        initial_loss = self.history[0]["train_loss"]
        self.limit = baselines.divergence_limit(self.cfg.train.divergence_factor, initial_loss, self.num_classes, self.setup.regression)
        self.stopper.restore(*resume.early_stopping)
        self.best_arrays = resume.best
        self.last_arrays = resume.last
        self.pretrain = resume.pretrain
        self.recall = dict(resume.recall)
        if self.stopper.should_stop:  # killed after early stopping decided, before the summary
            self.status, self.active = "stopped_early", False
        # the checkpoints as of the state (a kill may have come between the state and them)
        self.writer.checkpoint("last", self.last_arrays)
        if self.best_arrays is not None:
            self.writer.checkpoint("best", self.best_arrays)

    def finish(self, data: Dataset, like: Any) -> FitResult:
        cfg, setup, history, stopper = self.cfg, self.setup, self.history, self.stopper
        status = self.status
        final_params, restored = self._kept_params(like)
        by_epoch = {h["epoch"]: h for h in history}
        last = history[-1] if len(history) > 1 else None
        kept_epoch = stopper.best_epoch if restored else (last["epoch"] if last else None)
        penalty = losses.penalty(self.last_arrays, cfg.regularization) if self.last_arrays is not None else {}
        summary = {
            "name": cfg.name,
            "seed": cfg.seed,
            "status": status,
            "epochs_run": epochs_run(history),
            "best_epoch": stopper.best_epoch,
            "monitor": setup.monitor,
            "restored_best": restored,
            "final": _pick(last, self.recall.get(last["epoch"]) if last else None),
            "best": _pick(by_epoch.get(stopper.best_epoch), self.recall.get(stopper.best_epoch)) if stopper.best_epoch else None,
            "initial": _pick(history[0], self.recall.get(0)) if history else None,
            # the kept model's recall of each class (output i is data.classes[i])
            "per_class": {"epoch": kept_epoch, "recall": self.recall.get(kept_epoch, {})} if kept_epoch else None,
            # the reported losses (train_loss, ...) are class-weighted means when weights are set
            "loss": {"class_weight": cfg.train.class_weight, "class_weights": setup.weights, "weighted": setup.weights is not None},
            **({"penalty": {**penalty, "epoch": history[-1]["epoch"]}} if penalty else {}),
            "wall_seconds": time.perf_counter() - self.t_start,
            "params": setup.info["params"],
            "versions": {"jax": jax.__version__, "optax": optax.__version__, "dnnlab": version.__version__},
            "device": setup.info["device"],
            "devices": setup.devices,
            **({"processes": setup.info["processes"]} if setup.info["processes"] > 1 else {}),
            "loop": setup.loop,
            "stack": setup.info["stack"],
            **({"pretrain": self.pretrain} if self.pretrain is not None else {}),
            "data": self._data_record(data),
        }
        self.writer.finish(summary)
        return FitResult(summary, final_params, history)

    def _kept_params(self, like: Any) -> tuple[Any, bool]:
        """The kept model's parameters (the last, or the best ones restored) of a finished run, and
        whether the best ones were restored."""
        status = self.status
        final_params = None
        if status in FINISHED and self.last_arrays is not None:
            final_params = unflatten_params(like, self.last_arrays)
        restored = False
        es = self.cfg.train.early_stopping
        if es.enabled and es.restore_best and self.best_arrays is not None and status in FINISHED:
            final_params = unflatten_params(like, self.best_arrays)
            restored = self.stopper.best_epoch != self.history[-1]["epoch"]
        return final_params, restored

    def _data_record(self, data: Dataset) -> dict[str, Any]:
        """The summary's data: the splits' sizes, the classes and their counts (or the regression
        targets' statistics), what was dropped."""
        setup = self.setup
        if setup.regression:  # no classes: the targets' statistics instead of the class counts
            task = {"task": "regression", "target": {"mean": setup.target_mean, "std": setup.target_std}}
            classes: dict[str, Any] = {}
        else:
            task = {}
            classes = {
                # the largest class holds more than diagnosis.imbalance_share of the training split
                "imbalanced": baselines.Baselines(tuple(setup.train_counts)).imbalanced(self.cfg.diagnosis.imbalance_share),
                # examples of each class: the training split's (the prior), the evaluated ones
                "class_counts": {
                    **setup.class_counts, "train": setup.train_counts,
                    **({"train_eval": setup.class_counts["train"]} if setup.splits["train"][1] is not setup.y_N else {}),
                },
            }
        return {
            "dataset": data.name, "source": data.source, "train": setup.n,
            "train_eval": int(setup.splits["train"][1].shape[0]),
            "val": len(data.val) if data.val is not None else 0, "test": len(data.test),
            "num_classes": data.num_classes,
            **({"classes": list(data.classes)} if data.classes else {}),  # output i is classes[i]
            # what data.missing: drop left out of each file
            **({"dropped": [d.to_dict() for d in data.dropped]} if data.dropped else {}),
            **task,
            **classes,
        }


def resume_arrays(
    epoch: int, state: TrainState, stopper: EarlyStopping, best: Optional[dict[str, np.ndarray]],
    recall: Optional[dict[int, dict[str, list]]] = None,
    pretrained: Optional[dict[str, Any]] = None,
) -> dict[str, np.ndarray]:
    """state.npz: the train state's leaves (parameters, optimizer state, step), the epoch, early
    stopping's state, the best model and the per-class recall of the epochs a summary may need
    (`recall.<epoch>.<split>`, NaN for a class without examples), as plain arrays, and the
    pretraining's record (JSON text) when the run was pretrained. The RNG keys follow from the seed."""
    out = {f"state.{i:04d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(state))}
    out["epoch"] = np.asarray(epoch)
    out["early_stopping"] = np.asarray([stopper.best, -1 if stopper.best_epoch is None else stopper.best_epoch, stopper.wait], np.float64)
    for name, value in (best or {}).items():
        out[f"best.{name}"] = value
    for e, splits in (recall or {}).items():
        for split, values in splits.items():
            out[f"recall.{e}.{split}"] = np.asarray([math.nan if v is None else v for v in values], np.float64)
    if pretrained is not None:
        out["pretrain"] = np.asarray(json.dumps(pretrained))
    return out


@dataclass
class Resume:
    """Where a run continues: its records up to `epoch`, its state then, and the best model."""

    epoch: int
    history: list[dict[str, Any]]
    leaves: list[np.ndarray]
    early_stopping: tuple[float, Optional[int], int]
    best: Optional[dict[str, np.ndarray]]
    last: dict[str, np.ndarray]
    recall: dict[int, dict[str, list]] = field(default_factory=dict)  # `_SeedRecord.recall` of the epochs kept
    pretrain: Optional[dict[str, Any]] = None  # the pretraining's record, when the run was pretrained

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], history: list[dict[str, Any]]) -> "Resume":
        """Raises ValueError when the arrays are not a state or the records stop before them."""
        try:
            epoch = int(arrays["epoch"])
            best, best_epoch, wait = (float(x) for x in arrays["early_stopping"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a resume state ({type(exc).__name__}: {exc})") from None
        leaves = [arrays[k] for k in sorted(k for k in arrays if k.startswith("state."))]
        kept = [r for r in history if r["epoch"] <= epoch]
        if [r["epoch"] for r in kept] != list(range(epoch + 1)):
            raise ValueError(f"metrics.jsonl does not hold epochs 0..{epoch}, which the state continues")
        best_arrays = {k[len("best."):]: v for k, v in arrays.items() if k.startswith("best.")} or None
        try:
            pretrained = json.loads(str(arrays["pretrain"])) if "pretrain" in arrays else None
        except ValueError as exc:
            raise ValueError(f"not a resume state (its pretraining record: {exc})") from None
        recall: dict[int, dict[str, list]] = {}
        for k, v in arrays.items():
            if k.startswith("recall."):
                _, e, split = k.split(".")
                recall.setdefault(int(e), {})[split] = [None if math.isnan(x) else float(x) for x in v]
        return cls(epoch, kept, leaves, (best, None if best_epoch < 0 else int(best_epoch), int(wait)), best_arrays, {}, recall, pretrained)


def _resumed_state(state: Any, resume: Resume, setup: _Setup) -> Any:
    """The saved state of `resume`, checked leaf by leaf against `state` and placed as it is;
    `resume.last` takes its parameters."""
    treedef = jax.tree_util.tree_structure(state)
    if len(resume.leaves) != treedef.num_leaves:
        raise StateError(f"the resume state holds {len(resume.leaves)} arrays; this model's state has {treedef.num_leaves}")
    for i, (saved, fresh) in enumerate(zip(resume.leaves, jax.tree_util.tree_leaves(state))):
        if saved.shape != fresh.shape or saved.dtype != fresh.dtype:
            raise StateError(
                f"the resume state's array state.{i:04d} is {saved.dtype} of shape {saved.shape}; this model's state "
                f"needs {fresh.dtype} of shape {tuple(fresh.shape)}: the state belongs to another run or config"
            )
    state = jax.tree_util.tree_unflatten(treedef, [setup.put(a) for a in resume.leaves])
    resume.last = flatten_params(jax.device_get(state.params))
    return state


def _train_group(
    recs: list[_SeedRecord], seeds: list[int], programs: _Programs, cfg: Config, setup: _Setup, current: dict[str, Any],
    resume: Optional[Resume] = None,
) -> Any:
    """The training loop: train the seeds of one group (one seed, or N vmapped) to the end.

    Every seed of a vmapped group runs every epoch inside the one program; a seed that stopped
    (early stopping, divergence) is no longer recorded, so its records equal those of its own
    run. Returns the parameters' shapes (for the checkpoints). Ctrl-C marks the active seeds
    interrupted and returns.
    """
    if programs.vmapped:
        state, shuffle_key, dropout_key = programs.init_fn(np.asarray(seeds, np.int32))
    else:
        state, shuffle_key, dropout_key = programs.init_fn(np.int32(seeds[0]))
    if resume is None and setup.pretrain_x is not None:  # model.pretrain: before the first record
        state, pretrained = pretrain.into_state(state, seeds, setup.pretrain_x, cfg, setup.put, programs.vmapped)
        for r, record in zip(recs, pretrained):
            r.pretrain = record
    # the state's buffers are donated: keep the parameters' shapes (of one seed)
    like = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:] if programs.vmapped else a.shape, a.dtype), state.params)
    start = 1
    if resume is not None:  # one seed: the saved state replaces the initial one, the keys stay
        state = _resumed_state(state, resume, setup)
        recs[0].resume_from(resume)
        start = resume.epoch + 1
    try:
        for r in recs:
            r.writer.start({**setup.info, "seeds": len(seeds), "seed_mode": "vmap"} if programs.vmapped else setup.info)
        if resume is None:
            t0 = time.perf_counter()
            fetched = jax.device_get(programs.measure(state))
            seconds = time.perf_counter() - t0
            for r, record in zip(recs, programs.per_seed(fetched, len(seeds))):
                record.update(lr=float(setup.schedule(0)), seconds=seconds)
                r.initial(record)
            interrupt.stop_point()
        for epoch in range(start, cfg.train.epochs + 1):
            if not any(r.active for r in recs):
                break
            current["epoch"] = epoch
            t0 = time.perf_counter()
            state, running = programs.epoch_fn(state, setup.x_N, setup.y_N, shuffle_key, np.int32(epoch), dropout_key)
            fetched = jax.device_get({**running, **programs.measure(state)})
            seconds = time.perf_counter() - t0
            lr = float(setup.schedule(programs.last_step(state)))
            for i, (r, record) in enumerate(zip(recs, programs.per_seed(fetched, len(seeds)))):
                if r.active:
                    record.update(lr=lr, seconds=seconds)
                    r.epoch(epoch, record, partial(programs.seed_state, state, i))
            interrupt.stop_point()
    except KeyboardInterrupt:
        for r in recs:
            if r.active:
                r.status = "interrupted"
    return like


def fit(
    cfg: Config, data: Dataset, writer: Writer = Writer(), *, progress: bool = True, resume: Optional[Resume] = None,
    quick: bool = False,
) -> FitResult:
    """Train `cfg`'s model on `data` (one seed: `cfg.seed`), reporting every epoch to `writer`.

    Args:
        cfg: the validated config.
        data: the loaded dataset (train, optional validation, test).
        writer: receives start, each epoch's metrics, checkpoints and the summary.
        progress: report steps within an epoch to the writer (`_Programs.scan_epoch`: every
            PROGRESS_SECONDS or so; the per-step loop: about 20 times an epoch).
        resume: continue a run from its saved state (`runs` reads it): the records from then
            on equal those of the run that was never stopped, bit for bit on one machine.
        quick: compile for a short fit (QUICK_OPTIONS): the linear reference on small data.
    Returns:
        FitResult; `summary["status"]` is completed, stopped_early, diverged or interrupted.
        Ctrl-C is caught here so that the summary is still written.
    """
    results = _fit(cfg, [cfg], data, [writer], progress=progress, vmapped=False, resume=resume, quick=quick)
    if not results:
        raise KeyboardInterrupt  # before the first record; the writer has an interrupted summary
    return results[0]


def fit_seeds(cfg: Config, data: Dataset, writers: list[Writer], *, mode: str, progress: bool = True) -> list[FitResult]:
    """Train the `train.seeds` copies of `cfg` that differ only in their seed.

    Args:
        writers: one per seed (seed, seed + 1, ...).
        mode: vmap (one compiled program over a leading seed axis: parameters, optimizer state
            and keys) or sequential (one after another, sharing the uploaded data and the
            compiled programs): `experiment.seeds_mode` decides. Both give the same records.
    Returns:
        One FitResult per seed that started, in seed order; after Ctrl-C the seeds that had
        not started are missing.
    """
    return _fit(cfg, seed_configs(cfg), data, writers, progress=progress, vmapped=mode == "vmap")


def _fit(
    cfg: Config, cfgs: list[Config], data: Dataset, writers: list[Writer], *, progress: bool, vmapped: bool,
    resume: Optional[Resume] = None, quick: bool = False,
) -> list[FitResult]:
    """`fit` and `fit_seeds`: one setup and one set of compiled programs for every seed, then
    the training loop over one vmapped group of seeds, or over each seed in turn."""
    use_compile_cache()
    with interrupt.deferred():
        return _fit_deferred(cfg, cfgs, data, writers, progress=progress, vmapped=vmapped, resume=resume, quick=quick)


def _fit_deferred(
    cfg: Config, cfgs: list[Config], data: Dataset, writers: list[Writer], *, progress: bool, vmapped: bool,
    resume: Optional[Resume] = None, quick: bool = False,
) -> list[FitResult]:
    setup = _setup(cfg, data)
    current: dict[str, Any] = {"epoch": 0, "writer": writers[0]}

    def on_step(step: Any) -> None:
        current["writer"].progress(current["epoch"], int(step))

    programs = programs_for(cfg, setup, vmapped=vmapped, quick=quick).bind(cfg, setup, on_step if progress else None)
    try:
        return _fit_groups(cfg, cfgs, data, writers, programs, setup, current, resume)
    finally:
        programs.bind(cfg, None, None)  # kept for a later fit, without this one's data


def _fit_groups(
    cfg: Config, cfgs: list[Config], data: Dataset, writers: list[Writer], programs: _Programs, setup: _Setup,
    current: dict[str, Any], resume: Optional[Resume],
) -> list[FitResult]:
    groups = [list(range(len(cfgs)))] if programs.vmapped else [[i] for i in range(len(cfgs))]
    results: list[FitResult] = []
    for group in groups:
        recs = [_SeedRecord(cfgs[i], setup, writers[i], data.num_classes) for i in group]
        current.update(epoch=0, writer=writers[group[0]])
        try:
            like = _train_group(recs, [cfgs[i].seed for i in group], programs, cfg, setup, current, resume)
        except KeyboardInterrupt:
            # Ctrl-C before this group's first record: its seeds get an interrupted summary
            for r in recs:
                r.writer.finish(stub_summary(r.cfg.name, "interrupted", history=(), seed=r.cfg.seed))
            break
        results += [r.finish(data, like) for r in recs]
        if any(r.status == "interrupted" for r in recs):
            break
    return results


# ---------------------------------------------------------------- several seeds


def seed_configs(cfg: Config) -> list[Config]:
    """The configs of a `train.seeds: N` run: seed, seed + 1, ..., each with seeds 1."""
    train_cfg = cfg.train.model_copy(update={"seeds": 1})
    data_cfg = cfg.data.model_copy(update={"split_seed": data_seed(cfg)})
    return [
        cfg.model_copy(update={"seed": cfg.seed + i, "train": train_cfg, "data": data_cfg}) for i in range(cfg.train.seeds)
    ]
