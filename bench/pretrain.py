"""What greedy layer-wise RBM pretraining (`model.pretrain: rbm`) needs to make a deep sigmoid
net train with plain SGD, and what it costs: the measurement behind the pretrain section's
defaults (docs/config.md).

    python bench/pretrain.py                                  # the defaults' case, 2 seeds
    python bench/pretrain.py --seeds 0 1 2 --epochs 5 10 20 40 --lr 0.05 0.1 --batch 16 64

The case: the digits (pixels in [0, 1]), 6 sigmoid hidden layers of 256, plain SGD lr 0.1,
batch 16, 30 epochs of fine-tuning (`--set` changes it, e.g. `--set model.depth=10`). Each row
is one pretraining setting (a row `none` is the net without it), each seed a run of dnnlab's
own `train.fit`; the pretraining's seconds are its own wall time (`summary.pretrain.seconds`,
compilation included: one process, programs compiled on first use of each layer shape).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from typing import Any

from dnnlab import config, data, train

CASE: dict[str, Any] = {
    "data": {"dataset": "digits", "batch_size": 16},
    "model": {"depth": 6, "width": 256, "activation": "sigmoid"},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"epochs": 30},
    "diagnosis": {"reference": "none"},
}


def run(raw: dict[str, Any], seed: int) -> dict[str, Any]:
    cfg = config.validate({**raw, "seed": seed})
    ds = data.load(cfg.data, config.data_seed(cfg))
    t0 = time.perf_counter()
    summary = train.fit(cfg, ds, progress=False).summary
    final = summary["final"] or {}
    pre = summary.get("pretrain") or {}
    return {
        "train": final.get("train_accuracy"), "test": final.get("test_accuracy"), "seconds": time.perf_counter() - t0,
        "pretrain_seconds": pre.get("seconds", 0.0),
        "last_error": [layer["reconstruction_error"][-1] for layer in pre.get("layers", [])],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, nargs="+", default=[config.PRETRAIN_EPOCHS], help="pretrain.epochs values")
    parser.add_argument("--lr", type=float, nargs="+", default=[config.PretrainConfig().lr], help="pretrain.lr values")
    parser.add_argument("--batch", type=int, nargs="+", default=[config.PRETRAIN_BATCH], help="pretrain.batch_size values")
    parser.add_argument("--scale", type=float, nargs="+", default=[config.PretrainConfig().init_scale], help="pretrain.init_scale values")
    parser.add_argument("--no-baseline", action="store_true", help="skip the row without pretraining")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE on the case, as dnnlab's --set")
    args = parser.parse_args(argv)
    case = config.apply_overrides(CASE, args.overrides)
    rows = [] if args.no_baseline else [("none", case)]
    for epochs, lr, batch, scale in itertools.product(args.epochs, args.lr, args.batch, args.scale):
        raw = config.apply_overrides(case, ["model.pretrain=rbm", f"pretrain.epochs={epochs}", f"pretrain.lr={lr}",
                                            f"pretrain.batch_size={batch}", f"pretrain.init_scale={scale}"])
        rows.append((f"rbm epochs {epochs} lr {lr:g} batch {batch} scale {scale:g}", raw))
    print(f"case: {' '.join(args.overrides) or 'the defaults'}; seeds {args.seeds}", flush=True)
    print("| pretraining | train accuracy per seed | test accuracy per seed | pretraining s (median) | run s (median) | last reconstruction error per layer (seed 0) |")
    print("|---|---|---|---|---|---|")
    for label, raw in rows:
        results = [run(raw, seed) for seed in args.seeds]
        show = lambda key: ", ".join(f"{r[key]:.3f}" if r[key] is not None else "-" for r in results)  # noqa: E731
        errors = ", ".join(f"{e:.2g}" for e in results[0]["last_error"]) or "-"
        print(f"| {label} | {show('train')} | {show('test')} | {statistics.median(r['pretrain_seconds'] for r in results):.1f} | "
              f"{statistics.median(r['seconds'] for r in results):.1f} | {errors} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
