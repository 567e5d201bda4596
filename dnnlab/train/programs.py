"""The compiled programs of a fit (one seed, or N vmapped), the programs kept for later fits in
the process, the compile options, and JAX's persistent cache.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import jax
import numpy as np

from dnnlab import probes
from dnnlab.config import Config
from dnnlab.optim import hyperparameters
from dnnlab.runs import cache_root, compiled_cache_off
from dnnlab.train import distributed, stored
from dnnlab.train.setup import init_state
from dnnlab.train.step import (
    _folded,
    _measure_all,
    batches,
    chunk_at,
    evaluate_splits,
    indexed_step,
    new_epoch,
    stepwise_epoch,
    stepwise_evaluate,
    train_steps,
)

if TYPE_CHECKING:
    from dnnlab.train.setup import _Setup
    from dnnlab.train.step import TrainState


# a slice of an epoch shown as progress should take about this long (`_Programs.scan_epoch`)
PROGRESS_SECONDS = 0.2


def use_compile_cache() -> Optional[Path]:
    """Keep compiled programs in `<cache>/xla` (JAX's persistent compilation cache), so a rerun
    or a sweep member in a new process loads them instead of compiling; off with
    DNNLAB_NO_COMPILE_CACHE=1, or when the cache folder cannot be written
    (`runs.compiled_cache_off`). Returns the folder, or None when off."""
    from jax.experimental.compilation_cache import compilation_cache

    folder = None if compiled_cache_off() else cache_root() / "xla"
    if jax.config.jax_compilation_cache_dir != (str(folder) if folder else None):
        # a new folder in the same process (tests, benchmarks): JAX's cache object keeps the
        # folder it was first opened on unless it is reset
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", str(folder) if folder else None)
    if folder is not None:
        # every program: a run's are small, and compiling them is most of a small run's time
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


# LLVM's -O1 for a program that runs once (the initialization): its compile takes half the time
# of the default level's, and the numbers are the same bits (no fast-math, so no level may
# reorder floating-point arithmetic; tests/test_train.py compares them)
ONCE_OPTIONS = {"xla_backend_optimization_level": 1}


def on_cpu(options: dict[str, Any]) -> Optional[dict[str, Any]]:
    """`options` (ONCE_OPTIONS, QUICK_OPTIONS) on the CPU, where they were measured; the
    defaults elsewhere."""
    return dict(options) if jax.default_backend() == "cpu" else None


# LLVM's -O0 for a small fit whose result is a yardstick (the linear reference on a small
# dataset): its programs compile in half the time (2.0 s -> 1.0 s for the digits' reference) and
# a small fit runs as fast, but a large one about 2x slower, and the numbers may differ from a
# default compile in their last bits
QUICK_OPTIONS = {"xla_backend_optimization_level": 0}


def _to_python(fetched: dict[str, Any]) -> dict[str, Any]:
    """Scalars to floats, per-layer vectors to lists of floats."""
    return {k: (float(v) if np.ndim(v) == 0 else [float(x) for x in np.ravel(v)]) for k, v in fetched.items()}


class _Programs:
    """The compiled epoch and measurement of a run, for one seed at a time or for N seeds
    vmapped over a leading axis (parameters, optimizer state and keys; the data is shared)."""

    def __init__(self, cfg: Config, setup: _Setup, *, vmapped: bool, quick: bool = False, key: Optional[str] = None) -> None:
        """The programs of `cfg`, bound to `setup`; the epoch reports its steps to the `on_step`
        of the fit it is bound to (`bind`), if any; `quick`: compiled with QUICK_OPTIONS; `key`
        (`program_key`): the programs are kept on disk under it (`stored`), where that is on."""
        model, tx = setup.model, setup.tx
        options = on_cpu(QUICK_OPTIONS) if quick else None
        self.vmapped, self.setup = vmapped, setup
        self.values = _injected(cfg)
        self.on_step: Optional[Callable[[Any], None]] = None
        # several devices: batches split over the mesh (the one-device programs stay as they were)
        shard = None if setup.mesh is None else distributed.constrain(setup.mesh)
        if vmapped and shard is not None:
            raise distributed.DeviceError(
                f"train.seed_mode: vmap runs on one device; this run has {setup.devices} (train.devices): "
                "set train.seed_mode to sequential (or auto), or train.devices to 1"
            )
        # `epoch_fn(state, x_N, y_N, shuffle_base, epoch, dropout_key)`: the epoch's shuffle key is
        # folded from the seed's base key inside the program (an eager fold_in would be two more
        # compilations and a dispatch per epoch)
        evaluate_one = None
        if setup.loop == "scan":
            evaluate_one = self._build_scan(cfg, setup, shard, options, key)
        else:  # the per-step loop (convolutional nets on the CPU); never vmapped
            self._build_stepwise(cfg, setup, shard, options, key)
        init = partial(init_state, model=model, tx=tx)
        self.init_jit = stored.wrap(
            jax.jit(jax.vmap(init, in_axes=(0, None)) if vmapped else init, compiler_options=options or on_cpu(ONCE_OPTIONS)), "init", key
        )
        self.probe_fn = self.measure_fn = None
        if setup.probe is not None:
            self._build_instruments(cfg, setup, shard, options, key, evaluate_one)

    def _build_scan(self, cfg: Config, setup: _Setup, shard: Any, options: Any, key: Optional[str]) -> Callable[..., Any]:
        """The scanned epoch and the evaluation (vmapped over seeds where `vmapped`); returns one seed's evaluation."""
        model, tx, reg = setup.model, setup.tx, cfg.regularization
        steps_fn = partial(train_steps, model=model, tx=tx, reg=reg, batch_size=setup.batch_size, shard=shard)
        evaluate_all = partial(
            evaluate_splits, model=model, chunk=cfg.train.eval_batch_size, shard=shard, multiple=setup.devices,
            num_classes=setup.num_classes, class_loss=setup.weights is not None,
        )
        evaluate_one = evaluate_all  # one seed's (vmapped with the instruments below)
        if self.vmapped:
            steps_fn = jax.vmap(_folded(steps_fn), in_axes=(0, 0, None, None, 0, None, 0, None, None, None))
            evaluate_all = jax.vmap(evaluate_all, in_axes=(0, None))
        else:
            steps_fn = _folded(steps_fn)
        # no host callback inside: a program with one is never kept in the persistent cache
        self.steps_jit = stored.wrap(jax.jit(steps_fn, donate_argnums=(0, 1), compiler_options=options), "epoch", key)
        self.step_seconds: Optional[float] = None
        self.epoch_fn = self.scan_epoch
        self.eval_fn = stored.wrap(jax.jit(evaluate_all, compiler_options=options), "evaluation", key)
        return evaluate_one

    def _build_stepwise(self, cfg: Config, setup: _Setup, shard: Any, options: Any, key: Optional[str]) -> None:
        """The per-step epoch (one compiled step, reporting to `on_step`) and the chunked evaluation."""
        model, tx, reg = setup.model, setup.tx, cfg.regularization
        every = max(1, setup.steps_per_epoch // 20)
        step_jit = stored.wrap(
            jax.jit(partial(indexed_step, model=model, tx=tx, reg=reg, shard=shard), donate_argnums=0, compiler_options=options), "step", key
        )
        n, batch_size = setup.n, setup.batch_size
        batches_jit = stored.wrap(
            jax.jit(lambda base, e: batches(n, batch_size, jax.random.fold_in(base, e)), compiler_options=options), "batches", key
        )
        stepwise = partial(stepwise_epoch, step_fn=step_jit, batches_fn=lambda keys: batches_jit(*keys), on_step=self._step, every=every)
        # the class weights of the fit the programs are bound to (`bind`), read at each call
        self.epoch_fn = lambda state, x_N, y_N, base, e, dropout_key: stepwise(
            state, x_N, y_N, (base, e), dropout_key, class_weights=self.setup.class_weights,
            total_weight=None if self.setup.weights is None else float(np.dot(self.setup.weights, self.setup.train_counts)),
        )
        chunk_jit = jax.jit(
            partial(chunk_at, model=model, shard=shard, num_classes=setup.num_classes, class_loss=setup.weights is not None),
            static_argnames="size", compiler_options=options,
        )
        self.eval_fn = partial(
            stepwise_evaluate, chunk_fn=chunk_jit, chunk=cfg.train.eval_batch_size, multiple=setup.devices
        )

    def _build_instruments(
        self, cfg: Config, setup: _Setup, shard: Any, options: Any, key: Optional[str], evaluate_one: Optional[Callable[..., Any]]
    ) -> None:
        """The probe's instruments: with the scan loop, one program with the evaluation (`measure_fn`); else `probe_fn`."""
        instruments = partial(probes.probe, model=setup.model, tx=setup.tx, reg=cfg.regularization)
        if shard is not None and setup.probe[1].shape[0] % setup.devices == 0:
            whole = instruments  # the probe batch split over the devices, as a training batch
            instruments = lambda p, o, x, y: whole(p, o, shard(x), shard(y))  # noqa: E731
        if setup.loop == "scan":
            # the evaluation and the instruments as one program (one compilation fewer)
            self.eval_fn = None
            measure_all = partial(_measure_all, evaluate_all=evaluate_one, instruments=instruments)
            self.measure_fn = stored.wrap(
                jax.jit(jax.vmap(measure_all, in_axes=(0, 0, None, None, None)) if self.vmapped else measure_all, compiler_options=options),
                "measure", key,
            )
        else:
            self.probe_fn = stored.wrap(
                jax.jit(jax.vmap(instruments, in_axes=(0, 0, None, None)) if self.vmapped else instruments, compiler_options=options), "probe", key
            )

    def bind(self, cfg: Config, setup: Optional[_Setup], on_step: Optional[Callable[[Any], None]]) -> "_Programs":
        """These programs for a fit of `cfg` on `setup` (a config that differs from the one they
        were built for only in injected numbers: `program_key`)."""
        self.setup, self.on_step, self.values = setup, on_step, _injected(cfg)
        return self

    def _step(self, step: Any) -> None:
        if self.on_step is not None:
            self.on_step(step)

    def scan_epoch(self, state: TrainState, x_N: Any, y_N: Any, base: Any, epoch: Any, dropout_key: Any) -> tuple[TrainState, dict]:
        """One epoch of the scan loop: one call of the steps program, or, when the fit shows
        progress in one process, slices of about PROGRESS_SECONDS each, reporting the steps done
        after each (the same program, so the same numbers)."""
        steps = self.setup.steps_per_epoch
        carry = new_epoch(steps, self.setup.batch_size, tuple(state.step.shape))
        if self.on_step is None or distributed.process_count() > 1:
            # several processes make every call together, and only process 0 shows progress:
            # the whole epoch in one call, reported when it ends
            state, _, running = self.steps_jit(
                state, carry, x_N, y_N, base, epoch, dropout_key, np.int32(0), np.int32(steps), self.setup.class_weights
            )
            self._step(steps)
            return state, running
        first = 0
        while first < steps:
            if self.step_seconds is None:  # the first slice: the usual twentieth of an epoch
                size = max(1, steps // 20)
            else:
                size = max(1, min(steps, int(PROGRESS_SECONDS / max(self.step_seconds, 1e-6))))
            size = min(size, steps - first)
            t0 = time.perf_counter()
            state, carry, running = self.steps_jit(
                state, carry, x_N, y_N, base, epoch, dropout_key, np.int32(first), np.int32(first + size), self.setup.class_weights
            )
            jax.block_until_ready(carry)
            if first > 0 or epoch > 1:  # the first slice of a fit may include compiling
                self.step_seconds = (time.perf_counter() - t0) / size
            first += size
            self._step(first)
        return state, running

    def init_fn(self, seeds: Any) -> tuple[TrainState, jax.Array, jax.Array]:
        """The initial state and keys of `seeds` (one, or a vector when vmapped)."""
        if self.setup.mesh is None:
            return self.init_jit(seeds, self.values)
        # the one-device program (compiled once, the same numbers), then the parameters, the
        # optimizer state and the keys placed whole on every device
        return jax.tree_util.tree_map(self.setup.put, jax.device_get(self.init_jit(seeds, self.values)))

    def measure(self, state: TrainState) -> dict[str, Any]:
        """Evaluation-mode metrics of every split, and the instruments when they are on."""
        if self.measure_fn is not None:
            return self.measure_fn(state.params, state.opt_state, self.setup.splits, *self.setup.probe)
        out = self.eval_fn(state.params, self.setup.splits)
        if self.probe_fn is not None:
            out = {**out, **self.probe_fn(state.params, state.opt_state, *self.setup.probe)}
        return out

    def per_seed(self, fetched: dict[str, Any], n_seeds: int) -> list[dict[str, Any]]:
        if not self.vmapped:
            return [_to_python(fetched)]
        return [_to_python({k: v[i] for k, v in fetched.items()}) for i in range(n_seeds)]

    def seed_state(self, state: TrainState, i: int) -> TrainState:
        return jax.tree_util.tree_map(lambda a: a[i], state) if self.vmapped else state

    def last_step(self, state: TrainState) -> int:
        return int(state.step[0] if self.vmapped else state.step) - 1


def _injected(cfg: Config) -> dict[str, np.float32]:
    """The injected numbers of `cfg` (`optim.hyperparameters`) as the programs' inputs."""
    return {k: np.float32(v) for k, v in hyperparameters(cfg.optimizer, cfg.regularization).items()}


# the programs of the last few fits in this process, by `program_key`: a sweep member that
# differs from an earlier one only in injected numbers (a learning rate) reuses its programs
# without tracing them again
_PROGRAMS: "OrderedDict[str, _Programs]" = OrderedDict()
PROGRAMS_KEPT = 4


def clear_programs() -> None:
    """Forget the programs kept in this process, as a new process would start (the store on disk and
    JAX's cache are left as they are)."""
    _PROGRAMS.clear()


def program_key(cfg: Config, setup: _Setup, *, vmapped: bool, quick: bool = False) -> str:
    """What decides a fit's programs: the config but for its injected numbers (their presence
    counts), the name, seed and logging; the data's shapes; the devices; and which thread fits
    (the linear reference trains in a thread of its own, beside a run)."""
    raw = cfg.model_dump(mode="json")
    injected = hyperparameters(cfg.optimizer, cfg.regularization)
    for section in ("optimizer", "regularization"):
        raw[section] = {k: ("<injected>" if k in injected else v) for k, v in raw[section].items()}
    for key in ("name", "seed", "logging", "sweep", "pretrain"):
        raw.pop(key, None)
    raw["model"].pop("pretrain", None)  # pretraining runs in programs of its own (dnnlab/train/pretrain.py)
    # class weights are an input of the programs (`loss_fn`): only whether there are any counts
    raw["train"]["class_weight"] = "none" if setup.weights is None else "<injected>"
    shapes = [(tuple(a.shape), str(a.dtype)) for a in (setup.x_N, setup.y_N, *(setup.probe or ()))]
    shapes += [(name, tuple(x.shape), tuple(y.shape)) for name, (x, y) in setup.splits.items()]
    facts = [setup.n, setup.batch_size, setup.steps_per_epoch, setup.loop, setup.devices, distributed.process_count(), vmapped, quick, setup.num_classes]
    helper = threading.current_thread() is not threading.main_thread()
    return json.dumps([raw, repr(shapes), facts, helper], sort_keys=True, default=str)


def programs_for(cfg: Config, setup: _Setup, *, vmapped: bool, quick: bool = False) -> _Programs:
    """The fit's programs: those of an earlier fit with the same `program_key`, else new ones."""
    key = program_key(cfg, setup, vmapped=vmapped, quick=quick)
    # programs over several devices or processes are left to jax.jit (and JAX's cache)
    keep = key if setup.mesh is None and distributed.process_count() == 1 else None
    programs = _PROGRAMS.pop(key, None) or _Programs(cfg, setup, vmapped=vmapped, quick=quick, key=keep)
    _PROGRAMS[key] = programs
    while len(_PROGRAMS) > PROGRAMS_KEPT:
        _PROGRAMS.popitem(last=False)
    return programs
