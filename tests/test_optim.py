"""Optimizers and regularizers against hand-computed steps (oracles)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dnnlab import config, losses, models, train
from dnnlab.optim import make_optimizer, make_schedule
from conftest import make_cfg

LR = 0.1


def setup(**dotted):
    cfg = make_cfg(**{"model.hidden": [6], "model.activation": "tanh", "optimizer.lr": LR, **dotted})
    model = models.build(cfg.model, 5, 3)
    params = model.init(jax.random.PRNGKey(0))
    # non-zero biases, so that "biases are left out" is visible
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.5 if path[-1].key == "b" else p, params
    )
    tx, _ = make_optimizer(
        cfg.optimizer, cfg.regularization, steps_per_epoch=1, epochs=1,
        decay_mask=losses.regularized_mask(params, cfg.regularization.include_biases),
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    y = jnp.arange(8) % 3
    w = jnp.ones(8)
    state = train.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    return cfg, model, tx, state, (x, y, w)


def ce_grads(model, params, batch):
    x, y, w = batch
    return jax.grad(lambda p: losses.cross_entropy_sum(model.apply(p, x)[0], y, w) / w.sum())(params)


def step(cfg, model, tx, state, batch):
    return train.train_step(state, *batch, jax.random.PRNGKey(0), model=model, tx=tx, reg=cfg.regularization)[0]


def assert_tree_close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["l2", "weight_decay"])
def test_l2_under_sgd_is_a_one_minus_lr_lambda_decay_of_the_weights_only(how):
    lam = 0.3
    cfg, model, tx, state, batch = setup(**{"optimizer.name": "sgd", f"regularization.{how}": lam})
    g = ce_grads(model, state.params, batch)
    new = step(cfg, model, tx, state, batch).params
    expected = jax.tree_util.tree_map_with_path(
        lambda path, p, gp: (1 - LR * lam) * p - LR * gp if path[-1].key == "w" else p - LR * gp, state.params, g
    )
    assert_tree_close(new, expected)


def test_include_biases_decays_the_biases_too():
    lam = 0.3
    cfg, model, tx, state, batch = setup(**{"optimizer.name": "sgd", "regularization.l2": lam, "regularization.include_biases": True})
    g = ce_grads(model, state.params, batch)
    new = step(cfg, model, tx, state, batch).params
    assert_tree_close(new, jax.tree_util.tree_map(lambda p, gp: (1 - LR * lam) * p - LR * gp, state.params, g))


def test_l1_subtracts_lr_lambda_sign_w():
    lam = 0.05
    cfg, model, tx, state, batch = setup(**{"optimizer.name": "sgd", "regularization.l1": lam})
    g = ce_grads(model, state.params, batch)
    new = step(cfg, model, tx, state, batch).params
    expected = jax.tree_util.tree_map_with_path(
        lambda path, p, gp: p - LR * gp - (LR * lam * jnp.sign(p) if path[-1].key == "w" else 0.0), state.params, g
    )
    assert_tree_close(new, expected)


def test_regularization_terms_values():
    params = {"hidden": [{"w": jnp.array([1.0, -2.0]), "b": jnp.array([3.0]), "slope": jnp.array([0.25])}]}
    reg = config.RegularizationConfig(l2=0.1, l1=0.01)
    terms = losses.regularization_terms(params, reg)
    assert float(terms["l2"]) == pytest.approx(0.05 * 5)
    assert float(terms["l1"]) == pytest.approx(0.01 * 3)
    both = losses.regularization_terms(params, config.RegularizationConfig(l2=0.1, include_biases=True))
    assert float(both["l2"]) == pytest.approx(0.05 * 14)  # the PReLU slope is never regularized


def test_momentum_two_steps_by_hand():
    m = 0.9
    cfg, model, tx, state, batch = setup(**{"optimizer.name": "momentum", "optimizer.momentum": m})
    g1 = ce_grads(model, state.params, batch)
    s1 = step(cfg, model, tx, state, batch)
    assert_tree_close(s1.params, jax.tree_util.tree_map(lambda p, g: p - LR * g, state.params, g1))
    g2 = ce_grads(model, s1.params, batch)
    s2 = step(cfg, model, tx, s1, batch)
    assert_tree_close(s2.params, jax.tree_util.tree_map(lambda p, a, b: p - LR * (m * a + b), s1.params, g1, g2))


@pytest.mark.parametrize("name", ["rmsprop", "adam", "adagrad"])
def test_adaptive_first_step_is_lr_times_the_sign_of_the_gradient(name):
    """RMSProp's sigma_0 = |g_0| (the lecture's rule), Adam's bias correction and Adagrad's
    sqrt(sum g^2) all make the first step lr * g / |g| (eps aside)."""
    eps = 1e-8
    cfg, model, tx, state, batch = setup(**{"optimizer.name": name, "optimizer.eps": eps})
    g = ce_grads(model, state.params, batch)
    new = step(cfg, model, tx, state, batch).params
    if name == "adam":
        scaled = lambda gp: gp / (jnp.abs(gp) + eps)
    else:  # optax puts eps inside the square root for rmsprop and adagrad
        scaled = lambda gp: gp / jnp.sqrt(gp**2 + eps)
    assert_tree_close(new, jax.tree_util.tree_map(lambda p, gp: p - LR * scaled(gp), state.params, g))


def test_rmsprop_second_step_follows_the_bias_corrected_average():
    rho = 0.9
    cfg, model, tx, state, batch = setup(**{"optimizer.name": "rmsprop", "optimizer.rho": rho})
    g0 = ce_grads(model, state.params, batch)
    s1 = step(cfg, model, tx, state, batch)
    g1 = ce_grads(model, s1.params, batch)
    s2 = step(cfg, model, tx, s1, batch)
    nu = jax.tree_util.tree_map(lambda a, b: ((1 - rho) * rho * a**2 + (1 - rho) * b**2) / (1 - rho**2), g0, g1)
    expected = jax.tree_util.tree_map(lambda p, g, v: p - LR * g / jnp.sqrt(v + 1e-8), s1.params, g1, nu)
    assert_tree_close(s2.params, expected)


def test_clip_norm_caps_the_global_gradient_norm():
    cfg, model, tx, state, batch = setup(**{"optimizer.name": "sgd", "optimizer.clip_norm": 1e-3})
    new = step(cfg, model, tx, state, batch).params
    delta = optax.tree.norm(jax.tree_util.tree_map(lambda a, b: a - b, new, state.params))
    assert float(delta) == pytest.approx(LR * 1e-3, rel=1e-3)


@pytest.mark.parametrize("name", config.OPTIMIZERS)
def test_every_optimizer_minimizes_a_quadratic(name):
    lr = {"sgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.5}.get(name, 0.05)
    opt = config.OptimizerConfig(name=name, lr=lr)
    tx, _ = make_optimizer(opt, config.RegularizationConfig(), steps_per_epoch=1, epochs=1)
    target = jnp.array([1.0, -2.0, 3.0])
    scale = jnp.array([1.0, 2.0, 4.0])
    loss = lambda w: 0.5 * jnp.sum(scale * (w["w"] - target) ** 2)

    @jax.jit
    def run(w):
        def body(carry, _):
            w, s = carry
            u, s = tx.update(jax.grad(loss)(w), s, w)
            return (optax.apply_updates(w, u), s), None

        (w, _), _ = jax.lax.scan(body, (w, tx.init(w)), None, length=400)
        return w

    w0 = {"w": jnp.zeros(3)}
    assert float(loss(run(w0))) < 1e-3 * float(loss(w0))


def test_schedules():
    base = dict(lr=1.0, step_epochs=2, step_factor=0.5, warmup_epochs=1, min_lr_ratio=0.1)
    step_s = make_schedule(config.OptimizerConfig(schedule="step", **base), steps_per_epoch=10, epochs=6)
    assert [float(step_s(i)) for i in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    cos = make_schedule(config.OptimizerConfig(schedule="cosine", **base), steps_per_epoch=10, epochs=6)
    assert float(cos(0)) == 1.0 and float(cos(60)) == pytest.approx(0.1)
    warm = make_schedule(config.OptimizerConfig(schedule="warmup_cosine", **base), steps_per_epoch=10, epochs=6)
    assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(1.0) and float(warm(60)) == pytest.approx(0.1)
    const = make_schedule(config.OptimizerConfig(**base), steps_per_epoch=10, epochs=6)
    assert float(const(59)) == 1.0
