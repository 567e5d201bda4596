"""The CIFAR ResNet (He et al. 2016), batch normalization, and stacks compiled as lax.scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnnlab import checkpoints, config, models, optim, train
from dnnlab.runs import Writer
from conftest import make_cfg

CIFAR = (32, 32, 3)


def resnet(blocks=1, **extra):
    return make_cfg(**{"model.arch": "resnet", "model.blocks": blocks, **extra}).model


def shapes_only_params(cfg, shape=CIFAR):
    model = models.build(cfg, shape, 10)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0))


@pytest.mark.parametrize("blocks,layers,expected", [(3, 20, 0.27e6), (9, 56, 0.85e6)])
def test_resnet_parameter_counts_match_the_paper(blocks, layers, expected):
    # He et al. 2016, Table 6: resnet-20 0.27M, resnet-56 0.85M parameters
    cfg = resnet(blocks)
    assert cfg.resnet_depth == layers
    params = shapes_only_params(cfg)
    convs = len(params["conv"])
    assert convs + 1 == layers  # the stem, two convs per block, and the classifier
    assert models.param_count(params) == pytest.approx(expected, rel=0.01)
    # running statistics are state, not parameters
    assert len(params["batch_stats"]) == convs


def test_resnet_config_rejects_dense_layer_keys_and_fills_batch_norm():
    with pytest.raises(config.ConfigError, match="model.blocks"):
        make_cfg(**{"model.arch": "resnet", "model.depth": 20})
    assert resnet().norm == "batch" and make_cfg().model.norm == "none"
    assert resnet(**{"model.norm": "none"}).norm == "none"


def zero_blocks(params):
    """Every conv after the stem set to zero: each block's branch outputs zero."""
    conv = [params["conv"][0]] + [jax.tree_util.tree_map(jnp.zeros_like, c) for c in params["conv"][1:]]
    return {**params, "conv": conv}


@pytest.mark.parametrize("shortcut", ["identity", "none"])
def test_shortcut_none_has_no_identity_path(shortcut):
    cfg = resnet(1, **{"model.shortcut": shortcut, "model.norm": "none"})
    model = models.build(cfg, (8, 8, 1), 10)
    params = zero_blocks(model.init(jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 64))
    logits, _ = model.apply(params, x)

    def stem_grad_norm(p):
        def loss(stem):
            conv = [stem] + p["conv"][1:]
            return jnp.sum(model.apply({**p, "conv": conv}, x)[0] ** 2)
        return float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(jax.grad(loss)(p["conv"][0])))))

    spread = float(jnp.max(jnp.std(logits, axis=0)))
    if shortcut == "identity":
        # zero branches make every block the identity: the stem's features reach the classifier
        assert spread > 1e-3 and stem_grad_norm(params) > 1e-3
    else:
        # no shortcut: zero branches cut the input off; every example gets the same logits and
        # no gradient reaches the stem
        assert spread < 1e-6 and stem_grad_norm(params) == 0.0


def test_stage_changes_halve_the_image_and_double_the_channels():
    model = models.build(resnet(2), CIFAR, 10)
    params = model.init(jax.random.PRNGKey(0))
    _, aux = model.apply(params, jnp.ones((2, 32 * 32 * 3)))
    shapes = [z.shape[1:] for z in aux["post"]]
    assert shapes[0] == (32, 32, 16) and shapes[4] == (32, 32, 16)
    assert shapes[5] == (16, 16, 32) and shapes[9] == (8, 8, 64) and len(shapes) == 13


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_in_evaluation():
    cfg = resnet(1)
    model = models.build(cfg, (8, 8, 1), 10)
    params = model.init(jax.random.PRNGKey(0))
    x = 5.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(1), (32, 64))

    _, aux = model.apply(params, x, key=jax.random.PRNGKey(2), train=True)
    z = aux["pre"][0]  # the stem's normalized pre-activations (scale 1, offset 0)
    assert np.allclose(jnp.mean(z, axis=(0, 1, 2)), 0.0, atol=1e-4)
    assert np.allclose(jnp.std(z, axis=(0, 1, 2)), 1.0, atol=1e-2)
    # the running averages move 10% of the way to the batch's statistics
    raw = models.conv2d(x.reshape(-1, 8, 8, 1), params["conv"][0]["w"])
    new = aux["batch_stats"][0]
    assert np.allclose(new["mean"], 0.1 * jnp.mean(raw, axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    assert np.allclose(new["var"], 0.9 + 0.1 * jnp.var(raw, axis=(0, 1, 2)), rtol=1e-4)

    # evaluation normalizes with the running statistics (initially mean 0, var 1): not centred
    _, aux_eval = model.apply(params, x, train=False)
    assert np.allclose(aux_eval["pre"][0], raw / np.sqrt(1 + models.BN_EPS), rtol=1e-4, atol=1e-4)
    # ... so an example's evaluation output does not depend on the rest of its batch; in
    # training it does
    one_eval = model.apply(params, x[:1])[0]
    assert np.allclose(one_eval, model.apply(params, x)[0][:1], atol=1e-5)
    one_train = model.apply(params, x[:1], key=jax.random.PRNGKey(2), train=True)[0]
    assert not np.allclose(one_train, model.apply(params, x, key=jax.random.PRNGKey(2), train=True)[0][:1], atol=1e-3)


def test_training_updates_running_statistics_but_not_through_the_optimizer():
    # train_step is the same for every architecture; a batch-norm MLP compiles in a fraction of
    # a resnet's time. One SGD step whose decoupled weight decay has no mask (it decays every
    # leaf it is given) and lr * wd = 0.5: a running statistic passed through the optimizer
    # would be halved.
    lr, wd = 0.1, 5.0
    cfg = make_cfg(**{"model.hidden": [16, 8], "model.norm": "batch"}).model
    model = models.build(cfg, 12, 3)
    params = jax.jit(model.init)(jax.random.PRNGKey(0))
    # running statistics away from their initial 0 and 1, so that a decay would show
    params["batch_stats"] = [
        {"mean": np.full(s["mean"].shape, 0.5, np.float32), "var": np.full(s["var"].shape, 2.0, np.float32)}
        for s in params["batch_stats"]
    ]
    x = (1.0 + 2.0 * np.random.default_rng(1).normal(size=(32, 12))).astype(np.float32)
    y, w = np.arange(32) % 3, np.ones(32, np.float32)

    def one_step(weight_decay):
        reg = config.RegularizationConfig(weight_decay=weight_decay)
        tx, _ = optim.make_optimizer(config.OptimizerConfig(name="sgd", lr=lr), reg, steps_per_epoch=1, epochs=1)
        state = train.TrainState(params, tx.init(models.split_stats(params)[0]), jnp.zeros((), jnp.int32))
        step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, reg=reg))
        new, _ = step(state, x, y, w, jax.random.PRNGKey(2))
        return models.split_stats(new.params)

    (plain, plain_stats), (decayed, decayed_stats) = one_step(0.0), one_step(wd)
    # the decay is live: every trainable leaf took the extra step -lr * wd * w
    trainable = models.split_stats(params)[0]
    for a, b, p in zip(*(jax.tree_util.tree_leaves(t) for t in (decayed, plain, trainable))):
        np.testing.assert_allclose(a, b - lr * wd * p, rtol=1e-5, atol=1e-6)
    # ... and the running statistics ignore it: the same after either step, and exactly the
    # moving average 0.9 * old + 0.1 * the batch's statistics of the pre-activations
    for a, b in zip(jax.tree_util.tree_leaves(decayed_stats), jax.tree_util.tree_leaves(plain_stats)):
        np.testing.assert_array_equal(a, b)
    _, aux = jax.jit(functools.partial(model.apply, train=True))(params, x)
    for got, moved in zip(decayed_stats, aux["batch_stats"], strict=True):
        np.testing.assert_allclose(got["mean"], moved["mean"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got["var"], moved["var"], rtol=1e-6)
    raw = x.astype(np.float64) @ np.asarray(params["hidden"][0]["w"], np.float64)  # layer 1, by hand
    np.testing.assert_allclose(decayed_stats[0]["mean"], 0.9 * 0.5 + 0.1 * raw.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decayed_stats[0]["var"], 0.9 * 2.0 + 0.1 * raw.var(axis=0), rtol=1e-5)


def test_evaluation_after_training_reads_the_running_statistics(digits):
    cfg = make_cfg(**{
        "model.arch": "resnet", "model.blocks": 1, "data.train_size": 800, "train.epochs": 3, "data.batch_size": 32,
        "diagnosis.instruments": False, "regularization.weight_decay": 0.1,
    })
    result = train.fit(cfg, digits, Writer(), progress=False)
    stats = result.params["batch_stats"]
    assert not np.allclose(stats[0]["mean"], 0.0)
    assert not np.allclose(stats[0]["var"], 1.0)
    # evaluation mode used the running statistics: the recorded test accuracy is the
    # kept model's, recomputed here
    model = models.build(cfg.model, digits.input_shape, digits.num_classes)
    logits, _ = model.apply(result.params, jnp.asarray(digits.test.x))
    acc = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(digits.test.y)))
    assert acc == pytest.approx(result.summary["final"]["test_accuracy"], abs=1e-6)
    assert acc > 0.5


def test_batch_norm_in_an_mlp_replaces_the_bias():
    cfg = make_cfg(**{"model.hidden": [16, 8], "model.norm": "batch"}).model
    params = models.build(cfg, 4, 3).init(jax.random.PRNGKey(0))
    assert set(params["hidden"][0]) == {"w", "scale", "offset"}
    assert models.param_count(params) == 4 * 16 + 2 * 16 + 16 * 8 + 2 * 8 + 8 * 3 + 3


# ------------------------------------------------------------- scanned and unrolled stacks


def _outputs_and_grads(cfg, shape, plan, x, key):
    model = models.build(cfg, shape, 10, plan)
    # jitted whole: op by op, the unrolled resnet's eager dispatch took most of a minute
    params = jax.jit(models.build(cfg, shape, 10).init)(jax.random.PRNGKey(0))
    if "stack" in jax.eval_shape(model.init, jax.random.PRNGKey(0)):
        # the scanned MLP stores its stack with a leading layer axis: the same numbers
        params = models.stack_params(params)
    trainable, stats = models.split_stats(params)

    def loss(p):
        logits, aux = model.apply(models.merge_stats(p, stats), x, key=key, train=True)
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), (logits, aux)

    grads, (logits, aux) = jax.jit(jax.grad(loss, has_aux=True))(trainable)
    eval_logits, _ = jax.jit(model.apply)(params, x)
    return logits, eval_logits, models.unstack_params(grads), aux


# unroll 2 (the scan's own parameter, the same code for any stack) on the MLPs only: the
# resnet's scanned convolutions compiled unrolled by 2 took most of a minute
@pytest.mark.parametrize(
    "dotted,shape,unroll",
    [
        ({"model.depth": 7, "model.width": 24, "model.dropout": 0.3, "model.activation": "tanh"}, (12,), 1),
        ({"model.depth": 7, "model.width": 24, "model.dropout": 0.3, "model.activation": "tanh"}, (12,), 2),
        ({"model.depth": 5, "model.width": 16, "model.activation": "prelu", "model.input_dropout": 0.1}, (12,), 2),
        ({"model.arch": "resnet", "model.blocks": 3, "model.dropout": 0.2}, (8, 8, 1), 1),
        ({"model.arch": "resnet", "model.blocks": 3, "model.activation": "maxout", "model.norm": "none"}, (8, 8, 1), 1),
    ],
)
def test_scanned_stacks_give_the_same_outputs_and_gradients_as_unrolled(dotted, shape, unroll):
    cfg = make_cfg(**dotted).model
    x = jax.random.normal(jax.random.PRNGKey(1), (5, int(np.prod(shape))))
    key = jax.random.PRNGKey(7)
    ref = _outputs_and_grads(cfg, shape, models.StackPlan(False), x, key)
    got = _outputs_and_grads(cfg, shape, models.StackPlan(True, unroll), x, key)
    for a, b in zip(ref[:2], got[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(ref[2]), jax.tree_util.tree_leaves(got[2])):
        # float32 sums in another order: equal to 1e-5 of the leaf's largest entry
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(a))) + 1e-8)
    # the instruments still see every layer
    assert len(got[3]["pre"]) == len(ref[3]["pre"])
    for a, b in zip(ref[3]["pre"], got[3]["pre"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_stack_plan_by_depth_and_setting():
    mlp = lambda depth: make_cfg(**{"model.depth": depth}).model  # noqa: E731
    assert models.stack_length(mlp(2)) == 0 and models.stack_length(mlp(56)) == 55
    assert models.plan_stack(mlp(10)) == models.StackPlan(False)
    assert not models.plan_stack(mlp(56)).scanned
    assert models.plan_stack(mlp(56), "unrolled") == models.StackPlan(False)
    assert models.plan_stack(mlp(10), "scanned", 3) == models.StackPlan(True, 3)
    # convolutions inside a scan are ~11x slower on the CPU: resnets stay unrolled there
    assert not models.plan_stack(resnet(9)).scanned
    assert models.plan_stack(resnet(9), "scanned").scanned
    residual = make_cfg(**{"model.depth": 9, "model.residual": True}).model
    assert models.stack_length(residual) == 0
    # batch norm's running statistics are kept per layer: such MLPs stay unrolled
    assert not models.plan_stack(make_cfg(**{"model.depth": 56, "model.norm": "batch"}).model, "scanned").scanned


def test_a_scanned_mlp_stores_its_stack_once_and_the_instruments_see_every_layer():
    cfg = make_cfg(**{"model.depth": 6, "model.width": 8, "model.activation": "prelu"}).model
    params = models.build(cfg, 4, 3, models.StackPlan(True, 2)).init(jax.random.PRNGKey(0))
    assert len(params["hidden"]) == 1 and params["stack"]["w"].shape == (5, 8, 8)
    assert len(models.layers(params)) == 6
    assert models.param_count(params) == models.param_count(models.build(cfg, 4, 3).init(jax.random.PRNGKey(0)))
    back = models.unstack_params(params)
    assert len(back["hidden"]) == 6 and np.array_equal(back["hidden"][3]["w"], params["stack"]["w"][2])


def test_fit_with_a_scanned_stack_matches_unrolled_and_records_every_layer(digits):
    base = {"model.depth": 5, "model.width": 32, "data.train_size": 300, "train.epochs": 2}
    results = {}
    for stack in ("unrolled", "scanned"):
        cfg = make_cfg(**base, **{"train.stack": stack, "train.unroll": 2})
        results[stack] = train.fit(cfg, digits, Writer(), progress=False)
    a, b = results["unrolled"], results["scanned"]
    assert b.summary["stack"].startswith("scanned") and a.summary["stack"] == "unrolled"
    for key in ("train_loss", "val_loss", "test_accuracy"):
        assert a.summary["final"][key] == pytest.approx(b.summary["final"][key], rel=1e-4, abs=1e-5)
    assert len(b.history[-1]["grad_rms"]) == 6 and len(b.history[-1]["pre_std"]) == 5


@pytest.mark.parametrize("shortcut", ["identity", "none"])
def test_resnet_56_starts_near_chance_in_evaluation_mode(shortcut):
    # with identity shortcuts each block starts as the identity (zero-gamma): without it the
    # evaluation-mode activations double per block and the initial loss was 36 instead of ln(10)
    cfg = resnet(9, **{"model.shortcut": shortcut})
    model = models.build(cfg, (8, 8, 1), 10)
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 64))
    y = jnp.arange(64) % 10
    logits, _ = model.apply(params, x)
    loss = float(jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(64), y]))
    assert 0.5 * np.log(10) < loss < 2 * np.log(10)


def test_a_resnet_run_config_reads_back_to_the_same_config():
    cfg = make_cfg(**{"model.arch": "resnet", "model.blocks": 2})
    again = config.validate(__import__("yaml").safe_load(config.dump_yaml(cfg)))
    assert again == cfg and again.model.layer_widths == ()


def test_checkpoints_of_a_scanned_stack_are_saved_one_entry_per_layer():
    cfg = make_cfg(**{"model.depth": 5, "model.width": 8}).model
    params = models.build(cfg, 4, 3, models.StackPlan(True)).init(jax.random.PRNGKey(0))
    arrays = checkpoints.flatten_params(params)
    assert "hidden.4.w" in arrays and not any(k.startswith("stack") for k in arrays)
    back = checkpoints.unflatten_params(params, arrays)
    assert back["stack"]["w"].shape == (4, 8, 8)
    np.testing.assert_array_equal(back["stack"]["w"], params["stack"]["w"])
    unrolled = models.build(cfg, 4, 3).init(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(checkpoints.unflatten_params(unrolled, arrays)["hidden"][2]["w"], params["stack"]["w"][1])
