"""Oracle tests for every instrument in dnnlab/probes.py: hand-built networks whose numbers are
known, compared with hand counts and NumPy (float64) computations.

The definitions tested are those of docs/diagnosis.md ("The instruments") and probes.py's
comments; each test is built so that a near miss (< instead of <=, units instead of
pre-activations, spectral instead of Frobenius norm, a stale optimizer state, ...) fails.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnnlab import losses, models, optim, probes
from conftest import make_cfg

RTOL = 1e-4  # float32 inside the probe against float64 NumPy oracles


def f32(a) -> jax.Array:
    return jnp.asarray(np.asarray(a, dtype=np.float64), jnp.float32)


def build(input_shape, num_classes, plan=None, **dotted):
    """(cfg, model, freshly initialized params) from dotted config overrides."""
    cfg = make_cfg(**dotted)
    model = models.build(cfg.model, input_shape, num_classes, plan)
    return cfg, model, model.init(jax.random.PRNGKey(0))


def optimizer(cfg, params):
    trainable = models.split_stats(params)[0]
    tx, _ = optim.make_optimizer(
        cfg.optimizer, cfg.regularization, steps_per_epoch=1, epochs=1,
        decay_mask=losses.regularized_mask(trainable, cfg.regularization.include_biases),
    )
    return tx


def run_probe(cfg, model, params, x, y, *, tx=None, opt_state=None) -> dict[str, np.ndarray]:
    """The instruments as train.py computes them: one jitted probe call."""
    tx = tx or optimizer(cfg, params)
    if opt_state is None:
        opt_state = tx.init(models.split_stats(params)[0])
    fn = jax.jit(partial(probes.probe, model=model, tx=tx, reg=cfg.regularization))
    out = fn(params, opt_state, f32(x), jnp.asarray(y, jnp.int32))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def set_dense(params, weights, biases):
    """Overwrite the hidden layers' and the classifier's w and b (other keys, e.g. slope, kept)."""
    hidden = [{**layer, "w": f32(w), "b": f32(b)} for layer, w, b in zip(params["hidden"], weights, biases)]
    out = {"w": f32(weights[-1]), "b": f32(biases[-1])} if len(weights) > len(hidden) else params["out"]
    return {**params, "hidden": hidden, "out": out}


# ----------------------------------------------------------------- ReLU family: dead units

# 8 probe examples of 4 inputs. Column 0: 3 of 8 positive; column 1: all positive; columns 2-3
# feed nothing (their weights are zero).
X_DEAD = np.array([
    [1.0, 0.5, 0.3, -0.7], [-1.0, 1.0, -1.2, 0.4], [2.0, 1.5, 0.8, 0.1], [-2.0, 2.0, -0.2, 1.1],
    [3.0, 0.1, 0.6, -0.9], [-0.5, 3.0, 1.4, 0.2], [-0.1, 0.2, -0.3, -1.5], [-4.0, 1.0, 0.9, 0.6],
])
E0, E1 = np.eye(4)[0], np.eye(4)[1]
# hidden layer 1, six units: z = -1 | exactly 0 | +1 | x0 (mixed sign) | x1 (> 0) | -x1 (< 0)
W1_DEAD = np.stack([0 * E0, 0 * E0, 0 * E0, E0, E1, -E1], axis=1)
B1_DEAD = np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
# hidden layer 2, three units, constant over the batch: -1 | 2 | 3
W2_DEAD, B2_DEAD = np.zeros((6, 3)), np.array([-1.0, 2.0, 3.0])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "prelu", "elu", "gelu"])
def test_dead_and_nonpositive_fractions_count_pre_activations_at_or_below_zero(activation):
    cfg, model, params = build(4, 3, **{"model.activation": activation, "model.hidden": [6, 3]})
    params = set_dense(params, [W1_DEAD, W2_DEAD], [B1_DEAD, B2_DEAD])
    out = run_probe(cfg, model, params, X_DEAD, np.arange(8) % 3)
    # dead: units 0 (-1), 1 (exactly 0: <= 0 counts) and 5 (-x1) are <= 0 on every example; unit 3
    # is <= 0 on 5 of 8 only. (Counting < 0 would give 2/6, "on some example" 4/6, and the
    # fraction of pre-activations 29/48.)
    np.testing.assert_allclose(out["dead_fraction"], [3 / 6, 1 / 3], rtol=1e-6)
    # nonpositive: 8 + 8 + 0 + 5 + 0 + 8 = 29 of 48 pre-activations (21/48 if 0 were not counted)
    np.testing.assert_allclose(out["nonpositive_fraction"], [29 / 48, 1 / 3], rtol=1e-6)
    assert "saturated_fraction" not in out and "saturated_pre_fraction" not in out


def test_a_dead_conv_unit_is_a_channel_dead_at_every_example_and_position():
    cfg, model, params = build(
        (2, 2, 1), 2,
        **{"model.arch": "cnn", "model.channels": [3], "model.kernel": 1, "model.pool": "none", "model.hidden": [2]},
    )
    # 1x1 conv, 3 channels: z = x | 0 | -x. Position (0, 0) is always < 0, position (1, 1) always
    # > 0, the two others mixed: channel 0 is dead at (0, 0) only, channel 2 at (1, 1) only.
    params["conv"][0] = {"w": f32(np.array([1.0, 0.0, -1.0]).reshape(1, 1, 1, 3)), "b": f32(np.zeros(3))}
    params["hidden"][0] = {"w": f32(np.zeros((12, 2))), "b": f32(np.array([1.0, -1.0]))}
    x = np.array([[-1.0, 2.0, -3.0, 1.0], [-2.0, -1.0, 4.0, 2.0], [-0.5, 3.0, 1.0, 0.5], [-3.0, -2.0, -1.0, 4.0]])
    out = run_probe(cfg, model, params, x, [0, 1, 0, 1])
    # only channel 1 is dead: 1/3 (per (position, channel) it would be 6/12)
    np.testing.assert_allclose(out["dead_fraction"], [1 / 3, 1 / 2], rtol=1e-6)
    # x <= 0 in 8 of 16 entries, 0 in 16 of 16, -x <= 0 in 8 of 16
    np.testing.assert_allclose(out["nonpositive_fraction"], [32 / 48, 1 / 2], rtol=1e-6)
    np.testing.assert_allclose(out["pre_mean"], [0.0, 0.0], atol=1e-7)  # x, 0, -x; then +1, -1
    np.testing.assert_allclose(out["pre_std"][1], 1.0, rtol=1e-6)
    assert len(out["grad_rms"]) == 3  # the conv, the dense layer, the classifier


# ------------------------------------------------------------------ sigmoid/tanh: saturation

# with W1 = I and b1 = 0 the first layer's pre-activations are these 12 numbers
X_SAT = np.array([[-5.0, -1.0, 2.0, -2.5], [3.0, -3.5, 4.5, -4.5], [5.0, 5.5, -6.0, 8.0]])


@pytest.mark.parametrize(
    "activation, out_saturated",
    [
        # sigmoid(z) outside [0.02, 0.98] <=> |z| > ln 49 = 3.89: 4.5, -4.5, 5, -5, 5.5, -6, 8
        ("sigmoid", 7 / 12),
        # tanh(z) outside [-0.98, 0.98] <=> |z| > artanh 0.98 = 2.30: also -2.5, 3 and -3.5
        ("tanh", 10 / 12),
    ],
)
def test_saturated_fractions_of_outputs_and_of_pre_activations(activation, out_saturated):
    cfg, model, params = build(4, 3, **{"model.activation": activation, "model.hidden": [4, 3]})
    # layer 2 is constant: pre-activations 10 (both saturated), -4 (only the output: sigmoid(-4)
    # = 0.018, tanh(-4) = -0.9993) and 0.5 (neither)
    params = set_dense(params, [np.eye(4), np.zeros((4, 3))], [np.zeros(4), np.array([10.0, -4.0, 0.5])])
    out = run_probe(cfg, model, params, X_SAT, [0, 1, 2])
    # beyond +-5 is strictly beyond: 5.5, -6 and 8, not +-5 itself
    np.testing.assert_allclose(out["saturated_pre_fraction"], [3 / 12, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(out["saturated_fraction"], [out_saturated, 2 / 3], rtol=1e-6)
    # the same numbers from the documented rule, in NumPy
    f = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh}[activation]
    lo, hi = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}[activation]
    h = f(X_SAT)
    assert np.mean((h < lo + 0.02) | (h > hi - 0.02)) == pytest.approx(out_saturated)
    assert "dead_fraction" not in out and "nonpositive_fraction" not in out


# ------------------------------------------------------------ gradients, weights, updates

def tanh_net(l2: float = 0.0, **dotted):
    """A 3 -> 5 -> 4 -> 3 tanh MLP with seeded random weights and biases, a batch of 6, and the
    NumPy forward pass and backward pass of its mean cross-entropy (+ l2/2 ||w||^2)."""
    rng = np.random.default_rng(0)
    shapes = [(3, 5), (5, 4), (4, 3)]
    ws = [f32(0.8 * rng.normal(size=s)) for s in shapes]
    bs = [f32(0.3 * rng.normal(size=s[1])) for s in shapes]
    x = rng.normal(size=(6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    cfg, model, params = build(
        3, 3, **{"model.activation": "tanh", "model.hidden": [5, 4], "regularization.l2": l2, **dotted}
    )
    params = set_dense(params, ws, bs)
    ref = numpy_oracle([np.asarray(w, np.float64) for w in ws], [np.asarray(b, np.float64) for b in bs], x, y, l2)
    return cfg, model, params, x, y, ref


def numpy_oracle(ws, bs, x, y, l2):
    hs, zs = [np.asarray(x, np.float64)], []
    for w, b in zip(ws[:-1], bs[:-1]):
        zs.append(hs[-1] @ w + b)
        hs.append(np.tanh(zs[-1]))
    logits = hs[-1] @ ws[-1] + bs[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = np.mean(-np.log(p[np.arange(len(y)), y])) + 0.5 * l2 * sum(np.sum(w**2) for w in ws)
    d = (p - np.eye(3)[y]) / len(x)  # d(mean CE)/d logits
    gw, gb = [None] * len(ws), [None] * len(ws)
    for i in reversed(range(len(ws))):
        gw[i] = hs[i].T @ d + l2 * ws[i]  # L2 touches the weights only (include_biases: false)
        gb[i] = d.sum(0)
        if i > 0:
            d = (d @ ws[i].T) * (1 - hs[i] ** 2)
    return {"w": ws, "b": bs, "gw": gw, "gb": gb, "z": zs, "loss": loss}


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_grad_rms_per_layer_classifier_last_and_grad_ratio(l2):
    cfg, model, params, x, y, ref = tanh_net(l2)
    out = run_probe(cfg, model, params, x, y)
    expected = [rms(g) for g in ref["gw"]]  # RMS, not norm: layer sizes differ (15, 20, 12)
    np.testing.assert_allclose(out["grad_rms"], expected, rtol=RTOL)
    np.testing.assert_allclose(out["grad_ratio"], expected[0] / expected[-1], rtol=RTOL)
    # the oracle's own backward pass against central finite differences of its loss, one entry
    e = np.zeros_like(ref["w"][0])
    e[1, 2] = 1e-6
    up, down = (numpy_oracle([w0, *ref["w"][1:]], ref["b"], x, y, l2)["loss"] for w0 in (ref["w"][0] + e, ref["w"][0] - e))
    fd = (up - down) / 2e-6
    assert fd == pytest.approx(ref["gw"][0][1, 2], rel=1e-5, abs=1e-9)


def test_pre_activation_mean_and_std_per_hidden_layer():
    cfg, model, params, x, y, ref = tanh_net()
    out = run_probe(cfg, model, params, x, y)
    # population std (ddof 0) over every example and unit: 30 and 24 numbers here, where ddof 1
    # would be 1.7% and 2.1% larger
    np.testing.assert_allclose(out["pre_mean"], [z.mean() for z in ref["z"]], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(out["pre_std"], [z.std() for z in ref["z"]], rtol=1e-5)


def test_instruments_run_in_evaluation_mode_without_dropout():
    cfg, model, params, x, y, ref = tanh_net(**{"model.dropout": 0.5, "model.input_dropout": 0.2})
    out = run_probe(cfg, model, params, x, y)
    np.testing.assert_allclose(out["pre_std"], [z.std() for z in ref["z"]], rtol=1e-5)
    np.testing.assert_allclose(out["grad_rms"], [rms(g) for g in ref["gw"]], rtol=RTOL)


def test_pre_activations_with_batch_norm_use_the_running_statistics():
    cfg, model, params = build(2, 2, **{"model.hidden": [3], "model.norm": "batch"})
    w = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]])
    mean, var = np.array([0.5, -1.0, 2.0]), np.array([4.0, 0.25, 1.0])
    scale, offset = np.array([2.0, 1.0, -1.0]), np.array([0.0, 1.0, 0.5])
    params["hidden"][0] = {"w": f32(w), "scale": f32(scale), "offset": f32(offset)}
    params["batch_stats"] = [{"mean": f32(mean), "var": f32(var)}]
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0], [2.0, 1.0]])
    out = run_probe(cfg, model, params, x, [0, 1, 0, 1])
    z = (x @ w - mean) / np.sqrt(var + models.BN_EPS) * scale + offset
    np.testing.assert_allclose(out["pre_mean"], [z.mean()], rtol=1e-5)
    np.testing.assert_allclose(out["pre_std"], [z.std()], rtol=1e-5)


def test_weight_norm_and_near_zero_fraction_of_each_weight_matrix():
    cfg, model, params = build(2, 2, **{"model.hidden": [3]})
    w1 = np.array([[0.0, 5e-4, 2.0], [2e-3, -0.5, -9e-4]])  # 3 of 6 with |w| < 1e-3
    w_out = np.array([[-2.0, 1e-4], [-5e-4, 4.0], [1.0, -1.0]])  # 2 of 6
    # large biases: they are not weights and must not enter either statistic
    params = set_dense(params, [w1, w_out], [np.array([100.0, 0.0, 0.0]), np.array([0.0, 50.0])])
    out = run_probe(cfg, model, params, np.ones((2, 2)), [0, 1])
    # Frobenius norms, input to output, the classifier last (the spectral norms would be 2.0, 4.13)
    np.testing.assert_allclose(
        out["weight_norm"], [np.sqrt(np.sum(w1**2)), np.sqrt(np.sum(w_out**2))], rtol=1e-6
    )
    np.testing.assert_allclose(out["weight_norm"], [2.061554, 4.690416], rtol=1e-5)
    # |w| < 1e-3: exact zeros and small values of either sign; -0.5 is not near zero
    np.testing.assert_allclose(out["near_zero_fraction"], [3 / 6, 2 / 6], rtol=1e-6)


def frob(a):
    return float(np.sqrt(np.sum(np.square(a))))


@pytest.mark.parametrize(
    "dotted, step",
    [
        # plain SGD: u = -lr g, so the ratio is lr ||g|| / ||w|| (the ratio of RMSs is the same:
        # u and w have the same size)
        ({"optimizer.name": "sgd", "optimizer.lr": 0.1}, lambda r, i: -0.1 * r["gw"][i]),
        # decoupled weight decay is part of the step: u = -lr (g + wd w)
        (
            {"optimizer.name": "sgd", "optimizer.lr": 0.1, "regularization.weight_decay": 0.5},
            lambda r, i: -0.1 * (r["gw"][i] + 0.5 * r["w"][i]),
        ),
        # Adam's first step, bias-corrected: u = -lr g / (|g| + eps)
        ({"optimizer.name": "adam", "optimizer.lr": 0.01}, lambda r, i: -0.01 * r["gw"][i] / (np.abs(r["gw"][i]) + 1e-8)),
        # global-norm clipping over every leaf (biases too) before the SGD step
        (
            {"optimizer.name": "sgd", "optimizer.lr": 1.0, "optimizer.clip_norm": 0.01},
            lambda r, i: -r["gw"][i] * 0.01 / np.sqrt(sum(np.sum(g**2) for g in r["gw"] + r["gb"])),
        ),
    ],
    ids=["sgd", "sgd-weight-decay", "adam-first-step", "sgd-clipped"],
)
def test_update_ratio_is_the_norm_of_the_next_step_over_the_norm_of_the_weights(dotted, step):
    cfg, model, params, x, y, ref = tanh_net(**dotted)
    if "optimizer.clip_norm" in dotted:  # the clipping is active
        assert np.sqrt(sum(np.sum(g**2) for g in ref["gw"] + ref["gb"])) > 0.05
    out = run_probe(cfg, model, params, x, y)
    expected = [frob(step(ref, i)) / frob(ref["w"][i]) for i in range(3)]
    np.testing.assert_allclose(out["update_ratio"], expected, rtol=RTOL)


def test_update_ratio_continues_from_the_given_optimizer_state():
    # momentum after one earlier step whose gradient was all ones: the trace holds ones, and the
    # next step is -lr (g + mu * 1); a fresh state would give -lr g
    lr, mu = 0.1, 0.9
    cfg, model, params, x, y, ref = tanh_net(**{"optimizer.name": "momentum", "optimizer.lr": lr, "optimizer.momentum": mu})
    tx = optimizer(cfg, params)
    state0 = tx.init(params)
    _, state1 = tx.update(jax.tree_util.tree_map(jnp.ones_like, params), state0, params)
    out = run_probe(cfg, model, params, x, y, tx=tx, opt_state=state1)
    expected = [lr * frob(ref["gw"][i] + mu) / frob(ref["w"][i]) for i in range(3)]
    np.testing.assert_allclose(out["update_ratio"], expected, rtol=RTOL)
    fresh = run_probe(cfg, model, params, x, y, tx=tx)
    np.testing.assert_allclose(fresh["update_ratio"], [lr * frob(ref["gw"][i]) / frob(ref["w"][i]) for i in range(3)], rtol=RTOL)


# ------------------------------------------------------------------------- PReLU, maxout

def test_prelu_slope_is_the_mean_learned_slope_of_each_layer():
    cfg, model, params = build(4, 3, **{"model.activation": "prelu", "model.hidden": [3, 2]})
    params["hidden"][0] = {**params["hidden"][0], "slope": f32([0.1, 0.2, 0.6])}
    params["hidden"][1] = {**params["hidden"][1], "slope": f32([-0.5, 1.5])}
    out = run_probe(cfg, model, params, X_DEAD, np.arange(8) % 3)
    np.testing.assert_allclose(out["prelu_slope"], [0.3, 0.5], rtol=1e-6)


def test_instruments_of_a_scanned_stack_equal_the_unrolled_ones():
    dotted = {"model.activation": "prelu", "model.depth": 4, "model.width": 4}
    cfg, model, params = build(4, 3, **dotted)
    params["hidden"] = [{**layer, "slope": f32(np.full(4, 0.1 * (i + 1)))} for i, layer in enumerate(params["hidden"])]
    x, y = X_DEAD, np.arange(8) % 3
    unrolled = run_probe(cfg, model, params, x, y)
    _, scanned_model, _ = build(4, 3, models.StackPlan(True, 2), **dotted)
    scanned = run_probe(cfg, scanned_model, models.stack_params(params), x, y)
    assert set(scanned) == set(unrolled)
    np.testing.assert_allclose(unrolled["prelu_slope"], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    for key in unrolled:
        np.testing.assert_allclose(scanned[key], unrolled[key], rtol=1e-5, atol=1e-7, err_msg=key)


def evenness(share):
    """The documented formula: entropy of the pieces' win shares over its maximum, ln k."""
    share = np.asarray(share, np.float64)
    nz = share[share > 0]
    return float(-np.sum(nz * np.log(nz)) / np.log(len(share)))


def test_maxout_evenness_two_pieces():
    cfg, model, params = build(6, 2, **{"model.activation": "maxout", "model.maxout_pieces": 2, "model.hidden": [3, 2]})
    # layer 1: W = I, so the pre-activations are x; unit j's pieces are columns 2j and 2j+1.
    # Piece 0 wins 2 of 4 examples for unit 0, 1 of 4 for unit 1, none for unit 2: 3 of 12.
    x = np.array([
        [3.0, 1.0, 0.0, 2.0, -1.0, 0.5],
        [0.0, 4.0, 2.0, -1.0, 0.1, 0.3],
        [5.0, -1.0, -2.0, -1.0, 1.0, 2.0],
        [-3.0, -2.5, 1.0, 1.5, -0.2, 0.0],
    ])
    # layer 2 is constant: unit 0's piece 0 wins, unit 1's piece 1 wins: shares 1/2, 1/2
    params = set_dense(params, [np.eye(6), np.zeros((3, 4))], [np.zeros(6), np.array([1.0, 0.0, 0.0, 1.0])])
    out = run_probe(cfg, model, params, x, [0, 1, 0, 1])
    # shares (1/4, 3/4): (ln 4 - 3/4 ln 3) / ln 2 = 0.8113. Averaging the units' own evenness
    # instead would give 0.604; pairing columns j and j+3 as a unit's pieces, 0.980.
    np.testing.assert_allclose(out["maxout_evenness"], [evenness([1 / 4, 3 / 4]), 1.0], rtol=1e-5)
    np.testing.assert_allclose(out["maxout_evenness"][0], 0.811278, rtol=1e-5)


def test_maxout_evenness_normalizes_by_log_of_the_pieces_and_skips_pieces_that_never_win():
    cfg, model, params = build(6, 2, **{"model.activation": "maxout", "model.maxout_pieces": 3, "model.hidden": [2]})
    # two units of three pieces; piece 0 wins on examples 0-1, piece 1 on 2-3, piece 2 never
    x = np.array([
        [2.0, 1.0, 0.0, 5.0, -1.0, -2.0],
        [1.0, 0.5, -1.0, 0.0, -0.5, -1.0],
        [0.0, 1.0, -1.0, -3.0, -1.0, -2.0],
        [-1.0, 3.0, 2.0, 0.0, 4.0, 1.0],
    ])
    params = set_dense(params, [np.eye(6)], [np.zeros(6)])
    out = run_probe(cfg, model, params, x, [0, 1, 0, 1])
    # shares (1/2, 1/2, 0): ln 2 / ln 3 (by ln 2, the pieces that did win, it would be 1)
    np.testing.assert_allclose(out["maxout_evenness"], [np.log(2) / np.log(3)], rtol=1e-5)
    assert evenness([0.5, 0.5, 0.0]) == pytest.approx(0.630930, rel=1e-5)
