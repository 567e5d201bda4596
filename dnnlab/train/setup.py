"""What every seed of a run shares: the model, the optimizer and the data on the device, and
the initial state of a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnnlab import baselines, losses, models
from dnnlab.config import Config, data_seed, training_loop
from dnnlab.data import Dataset
from dnnlab.optim import make_optimizer, with_hyperparameters
from dnnlab.train import distributed
from dnnlab.train.step import TrainState


def device_name() -> str:
    return distributed.describe(1)


@dataclass
class _Setup:
    """What every seed of a run shares: the model, the optimizer, the data on the device."""

    model: models.Model
    tx: optax.GradientTransformation
    schedule: Callable[[Any], Any]
    x_N: jax.Array
    y_N: jax.Array
    splits: dict[str, tuple[jax.Array, jax.Array]]
    probe: Optional[tuple[jax.Array, jax.Array]]
    n: int
    batch_size: int
    steps_per_epoch: int
    loop: str
    monitor: str
    info: dict[str, Any]
    mesh: Any = None  # the 1-D ("data",) mesh of several devices; None for one device
    devices: int = 1
    num_classes: Optional[int] = None  # the evaluation's per-class sums (None: not computed)
    class_counts: dict[str, list[int]] = field(default_factory=dict)  # examples of each class per evaluated split
    train_counts: list[int] = field(default_factory=list)  # ... in the whole training split: the prior
    weights: Optional[list[float]] = None  # the loss's class weights (`train.class_weight`); None: unweighted
    class_weights: Any = None  # ... on the device: an input of the training programs
    class_aware: bool = False  # each split's balanced accuracy goes into every record (`class_aware`)
    pretrain_x: Any = None  # the training inputs on the host, for model.pretrain (else None)
    # regression (data.task): each evaluated split's target variance (standardized), and the
    # training split's target mean and std that turn the records into the target's own units
    target_var: dict[str, float] = field(default_factory=dict)
    target_mean: float = 0.0
    target_std: float = 1.0

    @property
    def regression(self) -> bool:
        return bool(self.target_var)

    def put(self, array: Any) -> jax.Array:
        """A host array on the device, or whole on every device of the mesh."""
        return jax.device_put(array) if self.mesh is None else distributed.upload(self.mesh, array)


def _setup(cfg: Config, data: Dataset) -> _Setup:
    """Build the model and optimizer and upload the data, once for every seed of `cfg`."""
    devices = distributed.resolve_devices(cfg)
    mesh = distributed.data_mesh(devices)
    # the data are whole on every device (`_Setup.put`): each device gathers its share of a batch
    # from them, and no batch crosses between devices or hosts (docs/scale.md)
    put = jax.device_put if mesh is None else partial(distributed.upload, mesh)
    plan = models.plan_stack(cfg.model, cfg.train.stack, cfg.train.unroll)
    model = models.build(cfg.model, data.input_shape, data.num_classes, plan)
    shapes = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))  # a key's shape: nothing runs
    trainable = models.split_stats(shapes)[0]
    n = len(data.train)
    # a training set smaller than the batch: one batch, padded with weight-0 repeats to a
    # multiple of the device count
    batch_size = min(cfg.data.batch_size, -(-n // devices) * devices)
    steps_per_epoch = -(-n // batch_size)
    tx, schedule = make_optimizer(
        cfg.optimizer,
        cfg.regularization,
        steps_per_epoch=steps_per_epoch,
        epochs=cfg.train.epochs,
        decay_mask=losses.regularized_mask(trainable, cfg.regularization.include_biases),
    )
    # the probe batch and the training-metrics subset follow the data split's seed
    split_seed = data_seed(cfg)
    x_N, y_N, splits, evaluated_y = _uploaded_splits(cfg, data, put, split_seed)
    probe = None
    if cfg.diagnosis.instruments:
        # a fixed, seeded probe batch of training examples, the same every epoch
        probe_idx = np.sort(np.random.default_rng(split_seed).permutation(n)[: cfg.diagnosis.probe_size])
        probe = (put(data.train.x[probe_idx]), put(data.train.y[probe_idx]))
    loop = training_loop(cfg)
    monitor = cfg.train.early_stopping.monitor if data.val is not None else "train_loss"
    train_counts, weights, class_counts = _classes(cfg, data, evaluated_y)
    info = {
        "epochs": cfg.train.epochs, "steps_per_epoch": steps_per_epoch, "params": models.param_count(shapes),
        "device": distributed.describe(devices), "devices": devices, "processes": distributed.process_count(),
        "train_size": n, "batch_size": batch_size, "loop": loop,
        "stack": ("scanned" if plan.scanned else "unrolled") + (f" (unroll {plan.unroll})" if plan.scanned else ""),
    }
    pretrain_x = data.train.x if cfg.model.pretrain != "none" else None
    # regression: each evaluated split's target variance about its own mean (standardized units),
    # the denominator of its R^2 (1 - MSE / variance), computed once on the host
    targets = {name: _variance(y) for name, y in evaluated_y.items()} if data.regression else {}
    return _Setup(
        model, tx, schedule, x_N, y_N, splits, probe, n, batch_size, steps_per_epoch, loop, monitor, info, mesh, devices,
        num_classes=None if data.regression else data.num_classes, class_counts=class_counts, train_counts=train_counts,
        weights=weights, class_weights=None if weights is None else put(np.asarray(weights, np.float32)),
        class_aware=False if data.regression else class_aware(cfg, train_counts, weights), pretrain_x=pretrain_x,
        target_var=targets, target_mean=data.target_mean, target_std=data.target_std,
    )


def _uploaded_splits(
    cfg: Config, data: Dataset, put: Callable[[Any], Any], split_seed: int
) -> tuple[Any, Any, dict[str, tuple[Any, Any]], dict[str, np.ndarray]]:
    """The training set uploaded whole, the evaluated splits uploaded (the training metrics on a
    fixed subset when train.train_eval_size is smaller), and each evaluated split's labels on the host."""
    n = len(data.train)
    x_N, y_N = put(data.train.x), put(data.train.y)
    splits = {"train": (x_N, y_N)}
    evaluated_y = {"train": data.train.y}
    if cfg.train.train_eval_size is not None and cfg.train.train_eval_size < n:
        # a fixed subset: the training metrics of a large set at a fraction of the cost
        subset = np.sort(np.random.default_rng(split_seed + 1).permutation(n)[: cfg.train.train_eval_size])
        splits["train"] = (put(data.train.x[subset]), put(data.train.y[subset]))
        evaluated_y["train"] = data.train.y[subset]
    if data.val is not None:
        splits["val"] = (put(data.val.x), put(data.val.y))
        evaluated_y["val"] = data.val.y
    splits["test"] = (put(data.test.x), put(data.test.y))
    evaluated_y["test"] = data.test.y
    return x_N, y_N, splits, evaluated_y


def _classes(
    cfg: Config, data: Dataset, evaluated_y: dict[str, np.ndarray]
) -> tuple[Any, Optional[Any], dict[str, Any]]:
    """The training set's class counts, the loss's class weights and each evaluated split's class counts."""
    # the classes: the examples of each class in every evaluated split, the loss's class weights
    # (an input of the programs, not a constant: `class_aware`)
    if data.regression:  # no classes: no counts, no weights, no per-class sums
        return [], None, {}
    train_counts = _counts(data.train.y, data.num_classes)
    weights = baselines.class_weights(cfg.train.class_weight, train_counts, data.classes)
    class_counts = {name: _counts(y, data.num_classes) for name, y in evaluated_y.items()}
    return train_counts, weights, class_counts


def _variance(y: np.ndarray) -> float:
    """The mean squared deviation from the mean, in float64: R^2's total sum of squares per example."""
    y = np.asarray(y, np.float64)
    return float(np.mean(np.square(y - y.mean()))) if len(y) else float("nan")


def _counts(y: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(np.asarray(y), minlength=num_classes).tolist()


def class_aware(cfg: Config, train_counts: list[int], weights: Optional[list[float]]) -> bool:
    """Whether every record carries each split's balanced accuracy: when the loss is
    class-weighted (the fit is judged on it), early stopping monitors it, or the data are
    imbalanced (`diagnosis.imbalance_share`). Otherwise the records are what they always were,
    and only the kept model's per-class recall is in summary.json."""
    imbalanced = baselines.Baselines(tuple(train_counts)).imbalanced(cfg.diagnosis.imbalance_share)
    return weights is not None or cfg.train.early_stopping.monitor == "val_balanced_accuracy" or imbalanced


def init_state(
    seed: jax.Array, hyperparameters: dict[str, jax.Array], *, model: models.Model, tx: optax.GradientTransformation
) -> tuple[TrainState, jax.Array, jax.Array]:
    """The initial state and the (shuffle, dropout) keys of one seed: one compiled program (run
    eagerly, initialization would compile every initializer's ops one by one). The optimizer's
    injected settings (`optim.hyperparameters`) arrive as arguments, so that runs that differ
    only in them share this program, as they share the epoch's."""
    init_key, shuffle_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init(init_key)
    opt_state = with_hyperparameters(tx.init(models.split_stats(params)[0]), hyperparameters)
    state = TrainState(params, opt_state, jnp.zeros((), jnp.int32))
    return state, shuffle_key, dropout_key


def prepare(cfg: Config, data: Dataset) -> _Setup:
    """The model, optimizer and device-resident data that a fit of `cfg` builds once for all its
    seeds (its `.model`, `.tx`, `.x_N`, `.splits`), built alone, as the learning-rate finder and the
    tests use them."""
    return _setup(cfg, data)
