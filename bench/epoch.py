"""Benchmark: one Fashion-MNIST MLP epoch (784-500-500-10 ReLU, Adam) by dnnlab, against the
machine's float32 GEMM floor and against the same step run as a per-step jitted Python loop;
and what the TensorBoard writer adds to an epoch (its scalars, weight histograms and flush, from
the host copies a run makes anyway), against the epoch with evaluation and instruments.

Every contender runs in this one process, interleaved epoch by epoch; the table shows medians
and the ratios that the targets are stated in. Not part of the test suite.

    python bench/epoch.py [--batch 128] [--reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import config, data, losses, models, probes, tracking, train
from dnnlab.checkpoints import flatten_params
from dnnlab.optim import make_optimizer

WIDTHS = (784, 500, 500, 10)


def step_flops(batch: int) -> float:
    """The 8 GEMMs of one step: 3 forward, 3 weight gradients, 2 input gradients (none for x)."""
    pairs = list(zip(WIDTHS[:-1], WIDTHS[1:]))
    forward = sum(2 * batch * a * b for a, b in pairs)
    input_grads = sum(2 * batch * a * b for a, b in pairs[1:])
    return 2 * forward + input_grads


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def matmul_peak(n: int = 2048, reps: int = 7) -> float:
    """GFLOP/s of a large float32 GEMM (median)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.dot)
    timed(mm, a, b)
    return 2 * n**3 / statistics.median(timed(mm, a, b) for _ in range(reps)) / 1e9


def gemm_floor_epoch(batch: int, steps: int):
    """A jitted scan of `steps` iterations of exactly the 8 GEMMs of the MLP's step."""
    k = jax.random.split(jax.random.PRNGKey(2), 8)
    x = jax.random.normal(k[0], (batch, 784))
    w1, w2, w3 = (jax.random.normal(k[i + 1], s) * 0.01 for i, s in enumerate([(784, 500), (500, 500), (500, 10)]))
    d3 = jax.random.normal(k[5], (batch, 10))

    @jax.jit
    def epoch(x, w1, w2, w3, d3):
        # the weights are the carry, so XLA cannot hoist any GEMM out of the loop
        def body(ws, _):
            w1, w2, w3 = ws
            h1 = x @ w1
            h2 = h1 @ w2
            out = h2 @ w3
            g3 = h2.T @ (d3 + out)
            d2 = d3 @ w3.T
            g2 = h1.T @ d2
            d1 = d2 @ w2.T
            g1 = x.T @ d1
            return (w1 - 1e-9 * g1, w2 - 1e-9 * g2, w3 - 1e-9 * g3), None

        return jax.lax.scan(body, (w1, w2, w3), None, length=steps)[0]

    return partial(epoch, x, w1, w2, w3, d3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    cfg = config.validate({
        "data": {"dataset": "fashion-mnist", "validation_split": 0.0, "batch_size": args.batch},
        "model": {"hidden": list(WIDTHS[1:-1]), "activation": "relu"},
        "optimizer": {"name": "adam", "lr": 0.001},
    })
    try:
        ds = data.load(cfg.data, 0)
        x_np, y_np, source = ds.train.x, ds.train.y, ds.source
    except data.DataError:
        rng = np.random.default_rng(0)
        x_np, y_np = rng.random((60000, 784), np.float32), rng.integers(0, 10, 60000).astype(np.int32)
        source = "synthetic (Fashion-MNIST not found)"
    n = len(y_np)
    steps = -(-n // args.batch)
    model = models.build(cfg.model, 784, 10)
    params = model.init(jax.random.PRNGKey(0))
    tx, _ = make_optimizer(cfg.optimizer, cfg.regularization, steps_per_epoch=steps, epochs=1,
                           decay_mask=losses.regularized_mask(params, False))
    x_N, y_N = jax.device_put(x_np), jax.device_put(y_np)
    dropout_key = jax.random.PRNGKey(1)
    fresh = lambda: train.TrainState(jax.tree_util.tree_map(jnp.copy, params), tx.init(params), jnp.zeros((), jnp.int32))
    common = dict(model=model, tx=tx, reg=cfg.regularization, batch_size=args.batch)

    # the program a run trains with: its steps from `first` to `last` (inputs), one call an epoch
    steps_jit = jax.jit(partial(train.train_steps, **common), donate_argnums=(0, 1))

    def scan_epoch(state, x_N, y_N, key, dropout_key):
        carry = train.new_epoch(steps, args.batch, ())
        state, _, running = steps_jit(state, carry, x_N, y_N, key, dropout_key, np.int32(0), np.int32(steps))
        return state, running

    def sliced_epoch(state, key):
        """The epoch in 20 slices, waiting for each (what a run showing progress does)."""
        carry, size = train.new_epoch(steps, args.batch, ()), max(1, steps // 20)
        for first in range(0, steps, size):
            state, carry, _ = steps_jit(state, carry, x_N, y_N, key, dropout_key, np.int32(first), np.int32(min(steps, first + size)))
            jax.block_until_ready(carry)
        return state
    step = jax.jit(partial(train.train_step, model=model, tx=tx, reg=cfg.regularization), donate_argnums=0)

    def python_loop(state, key):
        perm = jax.random.permutation(key, n)
        flat = jnp.arange(steps * args.batch)
        idx = perm[flat % n].reshape(steps, args.batch)
        w = (flat < n).astype(jnp.float32).reshape(steps, args.batch)
        for i in range(steps):
            state, _ = step(state, x_N[idx[i]], y_N[idx[i]], w[i], dropout_key)
        return state

    # what `fit` does per epoch besides the scan: evaluate train and test (and validation, here
    # the 10k test set stands in for it), then, with instruments on, the probe batch
    eval_fn = jax.jit(partial(train.evaluate_splits, model=model, chunk=2048))
    probe_fn = jax.jit(partial(probes.probe, model=model, tx=tx, reg=cfg.regularization))
    splits = {"train": (x_N, y_N), "val": (x_N[:10000], y_N[:10000])}
    probe_x, probe_y = x_N[:512], y_N[:512]

    def with_eval(s, k, instruments):
        s = scan_epoch(s, x_N, y_N, k, dropout_key)[0]
        out = eval_fn(s.params, splits)
        if instruments:
            out = {**out, **probe_fn(s.params, s.opt_state, probe_x, probe_y)}
        jax.block_until_ready(out)
        return s

    states = {name: fresh() for name in ("scan", "scan in 20 slices", "python loop", "epoch+eval", "epoch+eval+probes")}
    runners = {
        "scan": lambda s, k: scan_epoch(s, x_N, y_N, k, dropout_key)[0],
        "scan in 20 slices": sliced_epoch,
        "python loop": python_loop,
        "epoch+eval": lambda s, k: with_eval(s, k, False),
        "epoch+eval+probes": lambda s, k: with_eval(s, k, True),
    }
    floor = gemm_floor_epoch(args.batch, steps)
    times: dict[str, list[float]] = {name: [] for name in ["gemm floor", *runners]}
    board_times: list[float] = []
    board = tracking.TensorBoard(Path(tempfile.mkdtemp(prefix="bench-tb-")), cfg)
    peak = matmul_peak()
    for rep in range(args.reps + 1):  # rep 0 compiles and is dropped
        times["gemm floor"].append(timed(floor))
        for name, run in runners.items():
            t0 = time.perf_counter()
            states[name] = run(states[name], jax.random.PRNGKey(rep))
            jax.block_until_ready(states[name])
            times[name].append(time.perf_counter() - t0)
        # what `fit` has on the host after each epoch anyway: the record and last.npz's arrays
        s = states["epoch+eval+probes"]
        record = train._to_python(jax.device_get({**eval_fn(s.params, splits), **probe_fn(s.params, s.opt_state, probe_x, probe_y)}))
        record.update(lr=0.001, seconds=times["epoch+eval+probes"][-1])
        arrays = flatten_params(s.params)
        t0 = time.perf_counter()
        board.write(rep + 1, record)
        board.checkpoint("last", arrays)  # the weight histograms (logging.histograms_every: 1)
        board_times.append(time.perf_counter() - t0)
    board.close()
    med = {name: statistics.median(t[1:]) for name, t in times.items()}
    board_cost = statistics.median(board_times[1:])
    flops = step_flops(args.batch) * steps

    print(f"device {train.device_name()}, jax {jax.__version__}; data {source}; {n} samples, batch {args.batch}, "
          f"{steps} steps; medians of {args.reps} epochs")
    print(f"float32 matmul peak (2048^3 GEMM): {peak:.1f} GFLOP/s")
    print(f"{'contender':<19}{'s/epoch':>9}{'samples/s':>12}{'GFLOP/s':>9}{'% peak':>8}{'x floor':>9}{'x scan':>8}")
    for name, t in med.items():
        gf = flops / t / 1e9
        print(f"{name:<19}{t:>9.3f}{n / t:>12,.0f}{gf:>9.1f}{100 * gf / peak:>7.0f}%{t / med['gemm floor']:>9.2f}{t / med['scan']:>8.2f}")
    print(f"targets: scan <= 1.30x floor: {med['scan'] / med['gemm floor']:.2f}x; "
          f"python loop / scan: {med['python loop'] / med['scan']:.2f}x; "
          f"progress in 20 slices costs: {med['scan in 20 slices'] / med['scan']:.3f}x; "
          f"instruments (probes) cost: {med['epoch+eval+probes'] / med['epoch+eval']:.3f}x (target <= 1.10x)")
    print(f"TensorBoard writer: {1000 * board_cost:.1f} ms per epoch ({len(tracking.scalars(record))} scalars, "
          f"{sum(a.size for a in arrays.values()):,} weights in histograms) = "
          f"{100 * board_cost / med['epoch+eval+probes']:.2f}% of an epoch with evaluation and instruments (target <= 3%)")


if __name__ == "__main__":
    main()
