"""N seeds vmapped in one compiled program against N sequential runs (train.seeds).

    python bench/seeds.py [--seeds 8] [--reps 5]

Each net trains on 60k random Fashion-MNIST-shaped examples (one epoch = one jitted lax.scan,
dnnlab's train_epoch); samples/s counts every seed's samples. Rounds are interleaved and
medians reported; compile time is excluded (the first call of each program is discarded).
The last column is what `train.seed_mode: auto` picks on this device (experiment.seeds_mode).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import config, experiment, models, train
from dnnlab.optim import make_optimizer

NETS = {  # name: (hidden widths, activation, batch)
    "lecture 784-100x3-10 b100": ([100, 100, 100], "sigmoid", 100),
    "784-100x3-10 relu b100": ([100, 100, 100], "relu", 100),
    "784-500-500-10 b128": ([500, 500], "relu", 128),
}


def programs(hidden, activation, batch, n_seeds, n):
    cfg = config.validate({"model": {"hidden": hidden, "activation": activation}, "data": {"batch_size": batch}, "train": {"seeds": n_seeds}})
    net = models.build(cfg.model, 784, 10)
    tx, _ = make_optimizer(cfg.optimizer, cfg.regularization, steps_per_epoch=-(-n // batch), epochs=1)
    epoch = partial(train.train_epoch, model=net, tx=tx, reg=cfg.regularization, batch_size=batch)

    def state(seed):
        params = net.init(jax.random.PRNGKey(seed))
        return train.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))

    one = jax.jit(epoch)
    many = jax.jit(jax.vmap(epoch, in_axes=(0, None, None, 0, 0)))
    states = [state(s) for s in range(n_seeds)]
    stacked = models.stack_trees(states)
    return cfg, one, many, states, stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=60000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.random((args.n, 784), np.float32))
    y = jax.device_put(rng.integers(0, 10, args.n).astype(np.int32))
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(args.seeds)])
    print(f"device {train.device_name()}, jax {jax.__version__}; {args.seeds} seeds, {args.n} samples per epoch, medians of {args.reps}")
    print(f"{'net':<28}{'sequential s':>13}{'vmapped s':>11}{'seq samples/s':>15}{'vmap samples/s':>16}{'vmap/seq':>10}{'auto':>12}")
    for name, (hidden, activation, batch) in NETS.items():
        cfg, one, many, states, stacked = programs(hidden, activation, batch, args.seeds, args.n)
        jax.block_until_ready(one(states[0], x, y, keys[0], keys[0]))
        jax.block_until_ready(many(stacked, x, y, keys, keys))
        seq, vm = [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for s in range(args.seeds):
                jax.block_until_ready(one(states[s], x, y, keys[s], keys[s]))
            seq.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            jax.block_until_ready(many(stacked, x, y, keys, keys))
            vm.append(time.perf_counter() - t0)
        s_med, v_med = statistics.median(seq), statistics.median(vm)
        total = args.seeds * args.n
        print(f"{name:<28}{s_med:>13.2f}{v_med:>11.2f}{total / s_med:>15,.0f}{total / v_med:>16,.0f}{s_med / v_med:>9.2f}x{experiment.seeds_mode(cfg):>12}", flush=True)


if __name__ == "__main__":
    main()
