"""Every benchmark in one invocation, on one machine, one after another:

    pip install -e '.[bench]'      # PyTorch (CPU) and Keras 3, for contenders.py only
    python bench/all.py [--quick]

1. epoch.py       the MLP epoch against the GEMM floor and peak; the instruments' cost (on/off)
2. contenders.py  dnnlab vs PyTorch eager vs Keras 3/JAX: MLP at batch 128 and 32, the small CNN
3. depth.py       compile and step time: MLPs of 10/20/56 layers, resnet-20/56 (shortcut none, identity)
4. seeds.py       8 seeds vmapped vs 8 sequential runs, samples/s
5. conv.py        why convolutional nets train with a per-step loop on the CPU

Each script prints its own table of medians and ratios; the numbers measured on the
development machine are in docs/speed.md.
`--quick` uses fewer repetitions (noisier; for a smoke run of the scripts).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], help="scripts to leave out, e.g. contenders")
    args = parser.parse_args()
    quick = {
        "epoch": ["--reps", "3"],
        "contenders": ["--rounds", "1"],
        "depth": ["--reps", "2", "--steps", "50"],
        "seeds": ["--reps", "2", "--n", "12000"],
        "conv": ["--steps", "5"],
    }
    failed = []
    for name in ("epoch", "contenders", "depth", "seeds", "conv"):
        if name in args.skip:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(quick[name] if args.quick else [])]
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd)
        print(f"=== {name}: exit {code}, {time.perf_counter() - t0:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
