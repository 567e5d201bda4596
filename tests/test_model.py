"""Activations, the MLP, dropout and initialization."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnnlab import activations, config, models
from conftest import make_cfg


def mlp(**dotted):
    cfg = make_cfg(**dotted)
    return models.build(cfg.model, 8, 3), cfg


def test_activation_registry_matches_the_config_names():
    assert tuple(activations.REGISTRY) == config.ACTIVATIONS


def test_maxout_with_one_piece_pinned_to_zero_equals_relu():
    model, _ = mlp(**{"model.activation": "maxout", "model.maxout_pieces": 2, "model.hidden": [5, 4]})
    relu, _ = mlp(**{"model.activation": "relu", "model.hidden": [5, 4]})
    params = model.init(jax.random.PRNGKey(0))
    relu_params = relu.init(jax.random.PRNGKey(1))
    for layer, rlayer in zip(params["hidden"], relu_params["hidden"]):
        # piece 0 of each unit carries the ReLU layer's affine map, piece 1 is pinned to 0
        layer["w"] = layer["w"].at[:, 0::2].set(rlayer["w"]).at[:, 1::2].set(0.0)
        layer["b"] = layer["b"].at[0::2].set(rlayer["b"]).at[1::2].set(0.0)
    params["out"] = relu_params["out"]
    x = jax.random.normal(jax.random.PRNGKey(2), (16, 8))
    np.testing.assert_allclose(model.apply(params, x)[0], relu.apply(relu_params, x)[0], rtol=1e-6, atol=1e-6)


def test_maxout_layer_has_width_times_pieces_affine_outputs():
    model, _ = mlp(**{"model.activation": "maxout", "model.maxout_pieces": 3, "model.hidden": [5]})
    params = model.init(jax.random.PRNGKey(0))
    assert params["hidden"][0]["w"].shape == (8, 15)
    assert params["out"]["w"].shape == (5, 3)


def test_prelu_learns_a_slope_per_unit_starting_at_a_quarter():
    model, _ = mlp(**{"model.activation": "prelu", "model.hidden": [6]})
    params = model.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(params["hidden"][0]["slope"], np.full(6, 0.25))
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 8))
    grad = jax.grad(lambda p: jnp.sum(model.apply(p, x)[0] ** 2))(params)
    assert np.all(np.abs(grad["hidden"][0]["slope"]) > 0)
    z = jnp.array([-2.0, 3.0])
    np.testing.assert_allclose(activations._prelu_fn(z, {"slope": jnp.array(0.1)}), [-0.2, 3.0], rtol=1e-6)


@pytest.mark.parametrize("name", config.ACTIVATIONS)
def test_every_activation_matches_its_definition(name):
    cfg = make_cfg(**{"model.activation": name, "model.leaky_slope": 0.05}).model
    act = activations.get(cfg)
    z = jnp.linspace(-3, 3, 12 * act.pieces).reshape(1, -1)
    p = {"slope": jnp.full((12,), 0.25)}
    got = np.asarray(act.fn(z, p))
    zz = np.asarray(z)
    expected = {
        "sigmoid": 1 / (1 + np.exp(-zz)),
        "tanh": np.tanh(zz),
        "relu": np.maximum(zz, 0),
        "leaky_relu": np.where(zz > 0, zz, 0.05 * zz),
        "prelu": np.where(zz > 0, zz, 0.25 * zz),
        "maxout": zz.reshape(1, 12, act.pieces).max(-1),
        "elu": np.where(zz > 0, zz, np.expm1(zz)),
    }.get(name)
    if name == "gelu":  # tanh approximation, as jax.nn.gelu's default
        expected = 0.5 * zz * (1 + np.tanh(np.sqrt(2 / np.pi) * (zz + 0.044715 * zz**3)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_auto_init_is_glorot_for_sigmoid_and_he_for_relu():
    wide = {"model.hidden": [1000, 1000]}
    sig, _ = mlp(**{"model.activation": "sigmoid", **wide})
    rel, _ = mlp(**{"model.activation": "relu", **wide})
    w_sig = sig.init(jax.random.PRNGKey(0))["hidden"][1]["w"]
    w_rel = rel.init(jax.random.PRNGKey(0))["hidden"][1]["w"]
    assert np.var(w_sig) == pytest.approx(2 / 2000, rel=0.05)  # glorot: 2 / (fan_in + fan_out)
    assert np.var(w_rel) == pytest.approx(2 / 1000, rel=0.05)  # he: 2 / fan_in
    forced, _ = mlp(**{"model.activation": "relu", "model.init": "lecun_normal", **wide})
    assert np.var(forced.init(jax.random.PRNGKey(0))["hidden"][1]["w"]) == pytest.approx(1 / 1000, rel=0.05)


def test_dropout_is_the_identity_in_evaluation_and_unbiased_in_training():
    x = jnp.ones((200, 500))
    assert models.dropout(x, 0.3, None, train=False) is x
    y = np.asarray(models.dropout(x, 0.3, jax.random.PRNGKey(0), train=True))
    assert abs((y == 0).mean() - 0.3) < 0.01  # drop rate
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    assert y.mean() == pytest.approx(1.0, abs=0.01)  # expectation = the evaluation value
    with pytest.raises(ValueError):
        models.dropout(x, 0.3, None, train=True)


def test_dropout_masks_change_every_step_and_inputs_are_dropped_too():
    model, _ = mlp(**{"model.hidden": [64], "model.input_dropout": 0.5, "model.dropout": 0.5})
    params = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((4, 8))
    a = model.apply(params, x, key=jax.random.PRNGKey(1), train=True)[0]
    b = model.apply(params, x, key=jax.random.PRNGKey(2), train=True)[0]
    assert not np.allclose(a, b)
    # with every hidden unit kept, input dropout alone still changes the output
    only_inputs, _ = mlp(**{"model.hidden": [64], "model.input_dropout": 0.5})
    c = only_inputs.apply(params, x, key=jax.random.PRNGKey(1), train=True)[0]
    assert not np.allclose(c, only_inputs.apply(params, x)[0])


def test_inverted_dropout_agrees_with_weight_scaling_at_test():
    """Classic dropout trains unscaled and multiplies the outgoing weights by (1 - p) at test;
    inverted dropout scales kept units by 1/(1 - p) in training and does nothing at test. With
    the same mask, the classic net with weights W/(1-p) computes the inverted net's training
    pass, and its test pass (W/(1-p) * (1-p) = W) is the inverted net's evaluation pass."""
    p = 0.4
    model, _ = mlp(**{"model.hidden": [32], "model.dropout": p, "model.activation": "tanh"})
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 8))
    key = jax.random.PRNGKey(7)
    inverted_train = model.apply(params, x, key=key, train=True)[0]
    # classic dropout by hand, with the same mask the model drew
    h = jnp.tanh(x @ params["hidden"][0]["w"] + params["hidden"][0]["b"])
    keep = jax.random.bernoulli(jax.random.split(key, 2)[1], 1 - p, h.shape)
    w_classic = params["out"]["w"] / (1 - p)
    classic_train = jnp.where(keep, h, 0.0) @ w_classic + params["out"]["b"]
    np.testing.assert_allclose(inverted_train, classic_train, rtol=1e-5, atol=1e-5)
    classic_test = h @ (w_classic * (1 - p)) + params["out"]["b"]
    np.testing.assert_allclose(model.apply(params, x)[0], classic_test, rtol=1e-5, atol=1e-5)
    # and, for this last (linear) layer, the test output is the average over masks
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    mean = jnp.mean(jax.vmap(lambda k: model.apply(params, x, key=k, train=True)[0])(keys), 0)
    np.testing.assert_allclose(mean, model.apply(params, x)[0], atol=0.05)


def test_param_count():
    model, _ = mlp(**{"model.hidden": [10, 5]})
    assert models.param_count(model.init(jax.random.PRNGKey(0))) == 8 * 10 + 10 + 10 * 5 + 5 + 5 * 3 + 3


def test_residual_blocks_are_the_identity_at_init_and_learn():
    model, cfg = mlp(**{"model.hidden": [8, 8, 8, 8, 8], "model.residual": True})
    params = model.init(jax.random.PRNGKey(0))
    assert [float(jnp.abs(layer["w"]).max()) == 0.0 for layer in params["hidden"]] == [False, False, True, False, True]
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    _, aux = model.apply(params, x)
    np.testing.assert_allclose(aux["post"][4], aux["post"][0], rtol=1e-6)  # two identity blocks
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x)[0] ** 2))(params)
    assert float(jnp.abs(grads["hidden"][2]["w"]).max()) > 0  # the zero layer gets a gradient
    plain, _ = mlp(**{"model.hidden": [8, 8, 8, 8, 8]})
    _, aux_plain = plain.apply(plain.init(jax.random.PRNGKey(0)), x)
    assert not np.allclose(aux_plain["post"][4], aux_plain["post"][0])  # no shortcut without residual


def test_residual_maxout_adds_the_shortcut_to_every_piece():
    model, _ = mlp(**{"model.hidden": [6, 6, 6], "model.residual": True, "model.activation": "maxout"})
    params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8))
    _, aux = model.apply(params, x)
    np.testing.assert_allclose(aux["post"][2], aux["post"][0] + 0.0, rtol=1e-6)


def test_residual_blocks_layout():
    assert config.residual_blocks((8, 8, 8, 8, 8)) == [1, 3]
    assert config.residual_blocks((8, 8, 8, 8)) == [1]  # the last layer stays plain
    assert config.residual_blocks((16, 8, 8)) == []
    with pytest.raises(config.ConfigError, match="residual: needs at least 3 hidden layers"):
        config.validate({"model": {"depth": 2, "residual": True}})


def cnn(**dotted):
    cfg = make_cfg(**{"model.arch": "cnn", "model.channels": [4, 6], "model.depth": 1, "model.width": 16, **dotted})
    return models.build(cfg.model, (8, 8, 1), 3), cfg


def test_cnn_shapes_and_parameter_count():
    model, _ = cnn()
    params = model.init(jax.random.PRNGKey(0))
    assert params["conv"][0]["w"].shape == (3, 3, 1, 4) and params["conv"][1]["w"].shape == (3, 3, 4, 6)
    assert params["hidden"][0]["w"].shape == (2 * 2 * 6, 16)  # two 2x2 poolings: 8 -> 4 -> 2
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 64))
    logits, aux = model.apply(params, x)
    assert logits.shape == (5, 3) and aux["pre"][0].shape == (5, 8, 8, 4)
    unpooled, _ = cnn(**{"model.pool": "none"})
    assert unpooled.init(jax.random.PRNGKey(0))["hidden"][0]["w"].shape == (8 * 8 * 6, 16)


def test_max_pooling_gradient_reaches_only_each_windows_maximum():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
    r = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 3, 3))
    grad = np.asarray(jax.grad(lambda x: jnp.sum(models.max_pool(x) * r))(x))
    xs = np.asarray(x)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                for c in range(3):
                    window = xs[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
                    g = grad[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
                    winner = np.unravel_index(np.argmax(window), (2, 2))
                    assert g[winner] == pytest.approx(float(r[b, i, j, c]))
                    assert np.count_nonzero(g) == 1


def test_maxout_conv_with_one_piece_pinned_to_zero_equals_relu_conv():
    maxout, _ = cnn(**{"model.activation": "maxout", "model.maxout_pieces": 2})
    relu, _ = cnn(**{"model.activation": "relu"})
    p_max, p_relu = maxout.init(jax.random.PRNGKey(0)), relu.init(jax.random.PRNGKey(1))
    for group in ("conv", "hidden"):
        for layer, rlayer in zip(p_max[group], p_relu[group]):
            layer["w"] = layer["w"].at[..., 0::2].set(rlayer["w"]).at[..., 1::2].set(0.0)
            layer["b"] = layer["b"].at[0::2].set(rlayer["b"]).at[1::2].set(0.0)
    p_max["out"] = p_relu["out"]
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 64))
    np.testing.assert_allclose(maxout.apply(p_max, x)[0], relu.apply(p_relu, x)[0], rtol=1e-5, atol=1e-5)


def test_cnn_config_errors():
    with pytest.raises(config.ConfigError, match="kernel: must be odd"):
        config.validate({"model": {"arch": "cnn", "kernel": 4}})
    with pytest.raises(config.ConfigError, match="channels: give at least one"):
        config.validate({"model": {"arch": "cnn", "channels": []}})
