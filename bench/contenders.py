"""Side by side: one Fashion-MNIST epoch by dnnlab, by PyTorch eager on the CPU and by Keras 3 on
the JAX backend, for the MLP (784-500-500-10 ReLU, Adam) and a small CNN (2 conv+pool blocks,
32/64 channels, dense 256). Each contender runs in its own process; rounds interleave the
contenders; the table shows medians of the timed epochs and the ratios the targets are stated in.

    pip install -e '.[bench]'        # torch==2.13.0 (CPU build here) and keras
    python bench/contenders.py [--model mlp|cnn|all] [--batch 128] [--rounds 3] [--epochs 3]

Not part of the test suite. PyTorch and Keras are not dependencies of dnnlab.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONTENDERS = ("dnnlab", "pytorch", "keras")


def load_data(model: str, limit: int | None):
    import numpy as np

    from dnnlab import config, data

    try:
        ds = data.load(config.DataConfig(dataset="fashion-mnist", validation_split=0.0), 0)
        x, y, source = ds.train.x, ds.train.y, ds.source
    except data.DataError:
        rng = np.random.default_rng(0)
        x, y, source = rng.random((60000, 784), np.float32), rng.integers(0, 10, 60000).astype(np.int32), "synthetic"
    if limit:
        x, y = x[:limit], y[:limit]
    return np.ascontiguousarray(x), np.ascontiguousarray(y), source


# ---------------------------------------------------------------- workers (one process each)


def worker_dnnlab(model: str, batch: int, epochs: int, x, y) -> list[float]:
    from functools import partial

    import jax
    import jax.numpy as jnp

    from dnnlab import config, models, train
    from dnnlab.optim import make_optimizer

    raw = {"model": {"hidden": [500, 500], "activation": "relu"}, "optimizer": {"name": "adam", "lr": 0.001}}
    if model == "cnn":
        raw["model"] = {"arch": "cnn", "channels": [32, 64], "hidden": [256], "activation": "relu"}
    cfg = config.validate(raw)
    net = models.build(cfg.model, (28, 28, 1) if model == "cnn" else (784,), 10)
    params = net.init(jax.random.PRNGKey(0))
    n = len(y)
    tx, _ = make_optimizer(cfg.optimizer, cfg.regularization, steps_per_epoch=-(-n // batch), epochs=1)
    state = train.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    x_N, y_N = jax.device_put(x), jax.device_put(y)
    key = jax.random.PRNGKey(1)
    if model == "cnn":  # what `fit` does for a cnn: the per-step loop (train.loop: auto)
        step = jax.jit(partial(train.indexed_step, model=net, tx=tx, reg=cfg.regularization), donate_argnums=0)
        run = partial(train.stepwise_epoch, step_fn=step, batches_fn=jax.jit(partial(train.batches, n, batch)))
    else:
        run = jax.jit(partial(train.train_epoch, model=net, tx=tx, reg=cfg.regularization, batch_size=batch), donate_argnums=0)
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        state, out = run(state, x_N, y_N, jax.random.fold_in(key, e), key)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    return times


def worker_pytorch(model: str, batch: int, epochs: int, x, y) -> list[float]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    if model == "cnn":
        net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10),
        )
        xs = torch.from_numpy(x).reshape(-1, 1, 28, 28)
    else:
        net = nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 500), nn.ReLU(), nn.Linear(500, 10))
        xs = torch.from_numpy(x)
    ys = torch.from_numpy(y.astype("int64"))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    n = len(ys)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def worker_keras(model: str, batch: int, epochs: int, x, y) -> list[float]:
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    keras.utils.set_random_seed(0)
    if model == "cnn":
        net = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10),
        ])
        xs = x.reshape(-1, 28, 28, 1)
    else:
        net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(500, activation="relu"),
                                keras.layers.Dense(500, activation="relu"), keras.layers.Dense(10)])
        xs = x
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    net.fit(xs, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[Timer()])
    return times


WORKERS = {"dnnlab": worker_dnnlab, "pytorch": worker_pytorch, "keras": worker_keras}


# ---------------------------------------------------------------- the parent


def mlp_step_flops(batch: int) -> float:
    pairs = [(784, 500), (500, 500), (500, 10)]
    forward = sum(2 * batch * a * b for a, b in pairs)
    return 2 * forward + sum(2 * batch * a * b for a, b in pairs[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("mlp", "cnn", "all"), default="all")
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process; the first (compilation) is dropped")
    parser.add_argument("--cnn-samples", type=int, default=12800, help="examples per CNN epoch (throughput is the measure)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-model", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        limit = args.cnn_samples if args.worker_model == "cnn" else None
        x, y, source = load_data(args.worker_model, limit)
        times = WORKERS[args.worker](args.worker_model, args.batch[0], args.epochs, x, y)
        print(json.dumps({"times": times, "n": len(y), "source": source}))
        return

    models = ("mlp", "cnn") if args.model == "all" else (args.model,)
    results: dict[tuple[str, int, str], list[float]] = {}
    sizes: dict[tuple[str, int], int] = {}
    for model in models:
        for batch in args.batch if model == "mlp" else args.batch[:1]:
            for r in range(args.rounds):
                order = CONTENDERS if r % 2 == 0 else tuple(reversed(CONTENDERS))
                for who in order:
                    cmd = [sys.executable, __file__, "--worker", who, "--worker-model", model, "--batch", str(batch),
                           "--epochs", str(args.epochs), "--cnn-samples", str(args.cnn_samples)]
                    out = subprocess.run(cmd, capture_output=True, text=True)
                    if out.returncode != 0:
                        print(f"{who} {model} batch {batch}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                        continue
                    data = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault((model, batch, who), []).extend(data["times"][1:])
                    sizes[(model, batch)] = data["n"]
                    print(f"  round {r + 1} {model} b{batch} {who}: {', '.join(f'{t:.3f}' for t in data['times'])} s", flush=True)

    print(f"\nmedians of {args.rounds} rounds x {args.epochs - 1} timed epochs; each contender in its own process")
    print(f"{'model':<6}{'batch':>6}{'contender':>10}{'s/epoch':>9}{'samples/s':>11}{'GFLOP/s':>9}{'vs dnnlab':>11}")
    for model in models:
        for batch in args.batch if model == "mlp" else args.batch[:1]:
            base = statistics.median(results.get((model, batch, "dnnlab"), [float("nan")]))
            n = sizes.get((model, batch), 0)
            for who in CONTENDERS:
                ts = results.get((model, batch, who))
                if not ts:
                    continue
                t = statistics.median(ts)
                gf = mlp_step_flops(batch) * -(-n // batch) / t / 1e9 if model == "mlp" else float("nan")
                print(f"{model:<6}{batch:>6}{who:>10}{t:>9.3f}{n / t:>11,.0f}{gf:>9.1f}{t / base:>10.2f}x")


if __name__ == "__main__":
    main()
