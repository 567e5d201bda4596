"""`dnnlab evaluate`: re-evaluate a run's kept model on the test set, and MC dropout.

Dropout as an ensemble, measured: averaging the softmax outputs of K thinned networks (K sampled
dropout masks) against the weight-scaling approximation that evaluation mode computes. The two
are equal for a linear net; for a deep nonlinear net weight scaling approximates the average.
Under `data.task: regression` the predictions themselves are averaged and scored by MSE, MAE and
R^2 in the target's own units.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import losses, models
from dnnlab.checkpoints import unflatten_params
from dnnlab.config import Config
from dnnlab.data import Dataset


def powers_of_two(k: int) -> list[int]:
    out, n = [], 1
    while n < k:
        out.append(n)
        n *= 2
    return out + [k]


def class_names(summary: dict[str, Any], ds: Dataset) -> Optional[list[str]]:
    """The class names a run trained with (summary.json's data.classes: output i is classes[i]), or
    None when its dataset has none; ValueError when the data loaded now name other classes."""
    stored = (summary.get("data") or {}).get("classes")
    if stored is None:
        return None
    if not isinstance(stored, list) or list(ds.classes) != [str(c) for c in stored]:
        raise ValueError(
            f"the data at data.path now hold the classes {list(ds.classes)}, but the run was trained on {stored}: its "
            "outputs would be read as the wrong classes; point data.path at the data the run trained on"
        )
    return [str(c) for c in stored]


def per_class(probs_NxC: np.ndarray, y: np.ndarray, names: Optional[list[str]]) -> list[dict[str, Any]]:
    """Test accuracy of each class: [{"class", "name", "count", "accuracy"}, ...] (name None without names)."""
    pred = np.asarray(probs_NxC).argmax(axis=1)
    out = []
    for c in range(probs_NxC.shape[1]):
        mask = y == c
        count = int(mask.sum())
        accuracy = float((pred[mask] == c).mean()) if count else None
        out.append({"class": c, "name": names[c] if names else None, "count": count, "accuracy": accuracy})
    return out


def kept_model(cfg: Config, input_shape: tuple[int, ...], num_classes: int, arrays: dict[str, np.ndarray]) -> tuple[models.Model, Any]:
    """The run's model and its parameters from checkpoint `arrays` (ValueError for another model's)."""
    plan = models.plan_stack(cfg.model, cfg.train.stack, cfg.train.unroll)
    model = models.build(cfg.model, tuple(input_shape), num_classes, plan)
    return model, unflatten_params(model.init(jax.random.PRNGKey(0)), arrays)


def probabilities(model: models.Model, params: Any, x_NxD: Any) -> jax.Array:
    """The class probabilities of inputs `x_NxD` in evaluation mode (dropout off, batch norm with
    its running statistics): the one apply path of `evaluate`, `predict`, the Python API and export."""
    return _eval_probs(model)(params, jnp.asarray(x_NxD))


@functools.lru_cache(maxsize=8)  # one compiled program per model (jit caches by input shape)
def _eval_probs(model: models.Model):
    return jax.jit(lambda params, x: jax.nn.softmax(model.apply(params, x, train=False)[0]))


def mc_dropout(
    cfg: Config, ds: Dataset, arrays: dict[str, np.ndarray], k: int, seed: int = 0, names: Optional[list[str]] = None
) -> dict[str, Any]:
    """Test accuracy and loss of weight scaling and of averaging 1..K dropout masks.

    Args:
        names: the class names (`class_names`), given to the per-class rows.
    Returns:
        {"weight_scaling": {"accuracy", "loss"}, "mc": [{"k", "accuracy", "loss"}, ...],
         "per_class": weight scaling's test accuracy per class (`per_class`)}
    """
    model, params = kept_model(cfg, ds.input_shape, ds.num_classes, arrays)
    if ds.regression:
        return _mc_regression(model, params, ds, k, seed)
    x, y = jnp.asarray(ds.test.x), jnp.asarray(ds.test.y)

    @jax.jit
    def probs(key):
        # dropout on, batch norm (if any) with its running statistics, as at evaluation
        return jax.nn.softmax(model.apply(params, x, key=key, train=key is not None, norm_train=False)[0])

    def score(p):
        # the averaged probabilities' log as logits: log_softmax(log p) = log p, as sum(p) = 1
        loss, correct = losses.loss_and_correct(jnp.log(p + 1e-12), y, jnp.ones(y.shape[0]))
        return {"accuracy": float(correct) / len(y), "loss": float(loss) / len(y)}

    eval_probs = probabilities(model, params, x)
    out = {"weight_scaling": score(eval_probs), "mc": [], "per_class": per_class(np.asarray(eval_probs), ds.test.y, names)}
    wanted = set(powers_of_two(k))
    base = jax.random.PRNGKey(seed + 7919)
    total = jnp.zeros_like(eval_probs)
    for i in range(1, k + 1):
        total = total + probs(jax.random.fold_in(base, i))
        if i in wanted:
            out["mc"].append({"k": i, **score(total / i)})
    return out


def regression_scores(pred: np.ndarray, ds: Dataset) -> dict[str, float]:
    """MSE, MAE and R^2 of standardized predictions of the test set, in the target's own units,
    and the loss (the standardized MSE)."""
    from dnnlab.data.dataset import unstandardize

    p = unstandardize(pred, ds.target_mean, ds.target_std)
    t = unstandardize(ds.test.y, ds.target_mean, ds.target_std)
    mse = float(np.mean(np.square(p - t)))
    var = float(np.var(t))
    return {"mse": mse, "mae": float(np.mean(np.abs(p - t))), "r2": 1 - mse / var if var > 0 else float("nan"),
            "loss": mse / ds.target_std**2}


def _mc_regression(model: Any, params: Any, ds: Dataset, k: int, seed: int) -> dict[str, Any]:
    """`mc_dropout` under data.task: regression: the prediction averaged over 1..K dropout masks
    against weight scaling, each scored by `regression_scores`."""
    x = jnp.asarray(ds.test.x)

    @jax.jit
    def outputs(key):
        return model.apply(params, x, key=key, train=key is not None, norm_train=False)[0][:, 0]

    eval_pred = np.asarray(jax.jit(lambda: model.apply(params, x, train=False)[0][:, 0])())
    out = {"weight_scaling": regression_scores(eval_pred, ds), "mc": [], "per_class": []}
    wanted = set(powers_of_two(k))
    base = jax.random.PRNGKey(seed + 7919)
    total = jnp.zeros_like(eval_pred)
    for i in range(1, k + 1):
        total = total + outputs(jax.random.fold_in(base, i))
        if i in wanted:
            out["mc"].append({"k": i, **regression_scores(np.asarray(total / i), ds)})
    return out
