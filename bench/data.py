"""How fast `data.dataset: csv` reads a large table: 200,000 rows x 50 float features and a word label.

    python bench/data.py [--rows 200000] [--cols 50] [--reps 3]

Writes the table to a temp folder, then times `dnnlab.data.load` (parse, label mapping, the fixed
test split, the validation split, standardization) end to end, median of --reps, for:

- the clean table: NumPy's C reader (`np.loadtxt`), one pass for the features, one for the labels;
- the same table with 1% of its cells empty under `data.missing: drop`: the text path that reads
  the cells as strings in chunks, then converts them;
- pandas.read_csv of the clean table, for scale only, when pandas is installed (dnnlab does not use it).

The contenders run interleaved, round after round (the machine's speed drifts).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dnnlab import data
from dnnlab.config import DataConfig


def write_table(path: Path, rows: int, cols: int, missing: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    labels = np.asarray(["alpha", "beta", "gamma", "delta", "epsilon"])[rng.integers(0, 5, rows)]
    cells = np.char.mod("%.6g", x)
    if missing:
        cells[rng.random(cells.shape) < missing] = ""
    with open(path, "w") as fh:
        fh.write(",".join([f"f{i}" for i in range(cols)] + ["label"]) + "\n")
        for row, label in zip(cells, labels):
            fh.write(",".join(row) + "," + label + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cols", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean, holes = Path(tmp) / "clean.csv", Path(tmp) / "holes.csv"
        write_table(clean, args.rows, args.cols)
        write_table(holes, args.rows, args.cols, missing=0.01)
        contenders = {
            "dnnlab csv (np.loadtxt)": lambda: data.load(DataConfig(dataset="csv", path=str(clean), normalize="standard"), 0),
            "dnnlab csv, 1% missing, drop": lambda: data.load(
                DataConfig(dataset="csv", path=str(holes), missing="drop", normalize="standard"), 0
            ),
        }
        try:
            import pandas as pd

            contenders["pandas.read_csv (reference only)"] = lambda: pd.read_csv(clean)
        except ImportError:
            pass
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.reps):
            for name, fn in contenders.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        size = clean.stat().st_size / 2**20
    print(f"{args.rows:,} rows x {args.cols} features + a word label ({size:.0f} MiB), median of {args.reps}:")
    for name, ts in times.items():
        print(f"  {name:34s} {statistics.median(ts):6.2f} s   (runs: {', '.join(f'{t:.2f}' for t in ts)})")


if __name__ == "__main__":
    main()
