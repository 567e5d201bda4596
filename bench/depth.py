"""Compile time and step time against depth, for each way of compiling a stack of identical
layers (`train.stack`, `train.unroll`): MLPs of 10, 20 and 56 hidden layers (width 256), and
resnet-20 and resnet-56 with and without shortcuts (batch norm, 32x32x3 inputs).

    python bench/depth.py [--depths 10 20 56] [--resnets 3 9] [--steps 200] [--reps 3]

MLP: compile = first epoch minus a steady epoch; step = steady
epoch / steps. The epoch is dnnlab's: one jitted lax.scan over the minibatches.
ResNet: dnnlab trains convolutional nets with a per-step loop (convolutions inside a scan are
~11x slower on the CPU, bench/conv.py), so compile = first step minus a steady step.
The `auto` column is what `train.stack: auto` picks (models.plan_stack).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from dnnlab import config, models, train
from dnnlab.optim import make_optimizer


def _state(cfg, net, steps):
    params = net.init(jax.random.PRNGKey(0))
    trainable = models.split_stats(params)[0]
    tx, _ = make_optimizer(cfg.optimizer, cfg.regularization, steps_per_epoch=steps, epochs=1)
    return tx, train.TrainState(params, tx.init(trainable), jnp.zeros((), jnp.int32))


def measure_mlp(depth: int, plan: models.StackPlan, steps: int, batch: int, activation: str, reps: int):
    cfg = config.validate({"model": {"depth": depth, "width": 256, "activation": activation}, "optimizer": {"name": "adam"}})
    net = models.build(cfg.model, 784, 10, plan)
    tx, state = _state(cfg, net, steps)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.random((steps * batch, 784), np.float32))
    y = jax.device_put(rng.integers(0, 10, steps * batch).astype(np.int32))
    run = jax.jit(partial(train.train_epoch, model=net, tx=tx, reg=cfg.regularization, batch_size=batch), donate_argnums=0)
    times = []
    for e in range(reps + 1):
        t0 = time.perf_counter()
        state, _ = run(state, x, y, jax.random.PRNGKey(e), jax.random.PRNGKey(99))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    steady = statistics.median(times[1:])
    return times[0] - steady, steady / steps


def measure_resnet(blocks: int, shortcut: str, plan: models.StackPlan, batch: int, reps: int):
    cfg = config.validate({"model": {"arch": "resnet", "blocks": blocks, "shortcut": shortcut}, "optimizer": {"name": "adam"}})
    net = models.build(cfg.model, (32, 32, 3), 10, plan)
    tx, state = _state(cfg, net, 10)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.random((batch, 32 * 32 * 3), np.float32))
    y = jax.device_put(rng.integers(0, 10, batch).astype(np.int32))
    w = jnp.ones((batch,), jnp.float32)
    step = jax.jit(partial(train.train_step, model=net, tx=tx, reg=cfg.regularization), donate_argnums=0)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        state, _ = step(state, x, y, w, jax.random.PRNGKey(1))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    steady = statistics.median(times[1:])
    return times[0] - steady, steady


def parse_plan(text: str) -> models.StackPlan:
    if text == "unrolled":
        return models.StackPlan(False)
    name, _, unroll = text.partition(":")
    return models.StackPlan(True, int(unroll or 1))


def label(plan: models.StackPlan) -> str:
    return "unrolled" if not plan.scanned else f"scan:{plan.unroll}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="*", default=[10, 20, 56])
    parser.add_argument("--resnets", type=int, nargs="*", default=[3, 9], help="blocks per stage")
    parser.add_argument("--plans", nargs="+", default=["unrolled", "scan:1", "scan:2", "scan:4", "scan:8"])
    parser.add_argument("--resnet-plans", nargs="+", default=["unrolled", "scan:1"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"device {train.device_name()}, jax {jax.__version__}, batch {args.batch}")
    print(f"MLP width 256, {args.activation}, {args.steps} steps per epoch; compile s / step ms")
    header = f"{'model':<22}" + "".join(f"{p:>18}" for p in args.plans) + f"{'auto':>12}"
    for depth in args.depths if args.depths else []:
        if depth == args.depths[0]:
            print(header)
        row = f"{'mlp-' + str(depth):<22}"
        for text in args.plans:
            c, s = measure_mlp(depth, parse_plan(text), args.steps, args.batch, args.activation, args.reps)
            row += f"{c:>9.2f} /{1000 * s:>6.2f}"
        cfg = config.validate({"model": {"depth": depth, "width": 256}})
        print(row + f"{label(models.plan_stack(cfg.model)):>12}", flush=True)
    if args.resnets:
        print("ResNet, batch norm, 32x32x3 inputs; compile s / step ms")
        print(f"{'model':<22}" + "".join(f"{p:>18}" for p in args.resnet_plans) + f"{'auto':>12}")
    for blocks in args.resnets:
        for shortcut in ("none", "identity"):
            row = f"{f'resnet-{6 * blocks + 2} {shortcut}':<22}"
            for text in args.resnet_plans:
                c, s = measure_resnet(blocks, shortcut, parse_plan(text), args.batch, args.reps)
                row += f"{c:>9.2f} /{1000 * s:>6.0f}"
            cfg = config.validate({"model": {"arch": "resnet", "blocks": blocks}})
            print(row + f"{label(models.plan_stack(cfg.model)):>12}", flush=True)


if __name__ == "__main__":
    main()
