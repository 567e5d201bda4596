"""What the linear reference costs a run: its fit, cold and cached, against the run's training.

    python bench/reference.py [--config configs/fashion-mlp.yaml] [--reps 3]

For each repetition, in one process: the run's own training (`train.fit`, no reference), then
`reference.fit_reference` with an empty cache (cold: the hash of the data, the compile and 20
linear epochs at most), then with its result deleted but the compiled programs kept (a new
split or dataset of the same shapes: no compile), then again (cached: the hash and one small
file read). Prints the medians and the costs as fractions of the run's training.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from dnnlab import config, reference, train
from dnnlab.data import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fashion-mlp.yaml")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    cfg = config.load_config(args.config, ["diagnosis.reference=none"])
    ds = load(cfg.data, config.data_seed(cfg))
    ref_cfg = config.load_config(args.config)
    rows = {"run": [], "cold": [], "programs cached": [], "cached": []}
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["DNNLAB_CACHE"] = cache
            t0 = time.perf_counter()
            train.fit(cfg, ds, progress=False)
            rows["run"].append(time.perf_counter() - t0)
            for kind in ("cold", "programs cached", "cached"):
                if kind == "programs cached":
                    shutil.rmtree(os.path.join(cache, "reference"))
                t0 = time.perf_counter()
                out = reference.fit_reference(ref_cfg, ds)
                rows[kind].append(time.perf_counter() - t0)
                assert out["cached"] is (kind == "cached")
    run = statistics.median(rows["run"])
    print(f"{args.config}: {len(ds.train):,} training examples, {args.reps} repetitions, medians")
    print(f"{'':<28}{'seconds':>10}{'of the run':>12}")
    print(f"{'run (training, no reference)':<28}{run:>10.2f}{1:>11.1%}")
    for kind in ("cold", "programs cached", "cached"):
        s = statistics.median(rows[kind])
        print(f"{'reference, ' + kind:<28}{s:>10.2f}{s / run:>11.1%}")
    print(f"linear reference: train accuracy {out['train_accuracy']:.4f}, val accuracy {out['val_accuracy']:.4f}, {out['epochs']} epochs")


if __name__ == "__main__":
    main()
