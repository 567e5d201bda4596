"""Benchmark: what more processes and more devices buy (docs/scale.md).

    python bench/scale.py [--part a,b,c] [--epochs 10] [--rounds 1] [--reps 5]

(a) The wall time of an 8-member digits sweep (configs/quickstart.yaml over 8 learning rates)
    run one member after another, with `--workers 2` and with `--ray` (a local Ray cluster),
    each a fresh `dnnlab sweep` process with its own empty cache (cold: compiling included,
    as a first sweep meets it). A mode whose flag or package is missing is skipped with the
    reason. The last column is the largest relative difference of a member's final training
    loss from the sequential sweep's.
(b) The training-step throughput of the Fashion-MNIST MLP (configs/fashion-mlp.yaml) on 1, 2 and
    4 forced CPU devices (JAX_NUM_CPU_DEVICES, each count in its own process; and 1 device used
    of 4 present, which separates the cost of the devices from that of sharding): dnnlab's jitted
    epoch (one lax.scan) with the batch split over the devices, medians of --reps epochs after
    a discarded first (compiling) one. With several devices it also times the same epoch with
    the training set split over the devices instead of whole on each (the choice dnnlab did not
    make), and the evaluation of the three splits.
(c) (b) on the real devices (1, 2, 4, ... of them) when the default backend is an accelerator;
    skipped with the reason on a CPU-only machine.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LRS = [0.0003, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02]

# (b) and (c): runs in its own process, after JAX_NUM_CPU_DEVICES is set (or not)
THROUGHPUT = r"""
import json, statistics, sys, time
import jax
import numpy as np
from dnnlab import experiment, train
from dnnlab.train import distributed
from dnnlab.config import load_config

devices, reps, config = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = load_config(config, [f"train.devices={devices}", "diagnosis.instruments=false"])
ds = experiment.load_data(cfg)
train.use_compile_cache()
setup = train.prepare(cfg, ds)
programs = train._Programs(cfg, setup, vmapped=False)
state, shuffle_key, dropout_key = programs.init_fn(np.int32(cfg.seed))

def epochs(x_N, y_N, state):
    times = []
    for rep in range(reps + 1):  # the first compiles
        t0 = time.perf_counter()
        state, out = programs.epoch_fn(state, x_N, y_N, shuffle_key, np.int32(rep), dropout_key)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]), state

epoch_s, state = epochs(setup.x_N, setup.y_N, state)
result = {"device": setup.info["device"], "steps": setup.steps_per_epoch, "batch": setup.batch_size,
          "epoch_s": epoch_s}
evals = []
for rep in range(reps + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(programs.measure(state))
    evals.append(time.perf_counter() - t0)
result["eval_s"] = statistics.median(evals[1:])
if setup.mesh is not None and setup.n % devices == 0:
    # the alternative layout: the training set split along its examples over the devices; each
    # step's gather then needs every device's rows
    split = distributed.split(setup.mesh)
    x_split, y_split = jax.device_put(setup.x_N, split), jax.device_put(setup.y_N, split)
    result["split_data_epoch_s"], state = epochs(x_split, y_split, state)
print("RESULT" + json.dumps(result))
"""


def sweep_modes() -> dict[str, list[str] | str]:
    """The sweep's flags for each mode, or the reason a mode cannot run here."""
    help_text = subprocess.run(
        [sys.executable, "-m", "dnnlab", "sweep", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    ).stdout
    modes: dict[str, list[str] | str] = {"sequential": []}
    modes["--workers 2"] = ["--workers", "2"] if "--workers" in help_text else "dnnlab sweep has no --workers flag"
    if "--ray" not in help_text:
        modes["--ray"] = "dnnlab sweep has no --ray flag"
    else:
        import importlib.util

        modes["--ray"] = ["--ray"] if importlib.util.find_spec("ray") else "ray is not installed: pip install -e '.[ray]'"
    return modes


def final_losses(out: Path) -> dict[str, float]:
    """member (its overrides) -> final training loss, of the one sweep under `out` (sweep.json)."""
    found = {}
    for manifest in out.glob("*/sweep.json"):
        for member in json.loads(manifest.read_text())["members"]:
            summary = manifest.parent / member["dir"] / "summary.json"
            final = (json.loads(summary.read_text()).get("final") or {}) if summary.exists() else {}
            if final.get("train_loss") is not None:
                found[" ".join(member["overrides"])] = final["train_loss"]
    return found


def part_a(args: argparse.Namespace) -> None:
    print(f"\n(a) 8-member digits sweep (configs/quickstart.yaml, {args.epochs} epochs, lr in {LRS}); "
          f"{os.cpu_count()} CPUs; medians of {args.rounds} round(s), cold caches")
    modes = sweep_modes()
    times: dict[str, list[float]] = {m: [] for m, flags in modes.items() if isinstance(flags, list)}
    losses: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for mode in times:  # interleaved rounds
            tmp = Path(tempfile.mkdtemp(prefix="dnnlab-scale-"))
            try:
                cmd = [sys.executable, "-m", "dnnlab", "sweep", str(ROOT / "configs" / "quickstart.yaml"),
                       "--set", f"train.epochs={args.epochs}", "--grid", "optimizer.lr=" + ",".join(map(str, LRS)),
                       "--out", str(tmp / "out"), "--quiet", *modes[mode]]
                env = {**os.environ, "DNNLAB_CACHE": str(tmp / "cache")}
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
                seconds = time.perf_counter() - t0
                if proc.returncode not in (0, 3):
                    print(f"  {mode}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                times[mode].append(seconds)
                losses[mode] = final_losses(tmp / "out")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"  {'mode':<14}{'wall s':>9}{'vs sequential':>15}{'members':>9}{'max rel diff':>14}")
    base = statistics.median(times["sequential"]) if times.get("sequential") else None
    for mode, flags in modes.items():
        if not isinstance(flags, list):
            print(f"  {mode:<14}  skipped: {flags}")
            continue
        if not times[mode]:
            print(f"  {mode:<14}  failed")
            continue
        wall = statistics.median(times[mode])
        ref, got = losses.get("sequential", {}), losses.get(mode, {})
        diffs = [abs(got[k] - ref[k]) / abs(ref[k]) for k in ref if k in got and ref[k]]
        diff = f"{max(diffs):.1e}" if diffs else "-"
        ratio = f"{base / wall:.2f}x" if base else "-"
        print(f"  {mode:<14}{wall:>9.1f}{ratio:>15}{len(got):>9}{diff:>14}")


def throughput(devices: int, reps: int, forced: bool, present: int = 0) -> dict | str:
    """(b)/(c) for `devices` devices, in a new process; with `forced`, `present` (default
    `devices`) CPU devices exist."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    if forced:
        env["JAX_NUM_CPU_DEVICES"] = str(present or devices)
        env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", THROUGHPUT, str(devices), str(reps), str(ROOT / "configs" / "fashion-mlp.yaml")],
        env=env, capture_output=True, text=True, timeout=3600,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    if proc.returncode or line is None:
        return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return json.loads(line[len("RESULT"):])


def table(counts: list[tuple[int, int]], reps: int, forced: bool) -> None:
    """One row per (devices used, devices present)."""
    print(f"  {'devices':<20}{'epoch s':>9}{'steps/s':>9}{'samples/s':>11}{'vs 1':>7}{'eval s':>8}{'data split: epoch s':>21}")
    base = None
    for n, present in counts:
        r = throughput(n, reps, forced, present)
        if isinstance(r, str):
            print(f"  {n:<20}  failed: {r}")
            continue
        steps_s = r["steps"] / r["epoch_s"]
        base = base or steps_s
        split = f"{r['split_data_epoch_s']:.3f}" if "split_data_epoch_s" in r else "-"
        label = r["device"] + (f" (1 of {present})" if present > n else "")
        print(f"  {label:<20}{r['epoch_s']:>9.3f}{steps_s:>9.1f}{steps_s * r['batch']:>11.0f}"
              f"{steps_s / base:>6.2f}x{r['eval_s']:>8.3f}{split:>21}")


def part_b(args: argparse.Namespace) -> None:
    print(f"\n(b) Fashion-MNIST MLP (configs/fashion-mlp.yaml) training steps on forced CPU devices; "
          f"{os.cpu_count()} CPUs; medians of {args.reps} epochs")
    # "1 of 4": one device used while 4 exist, what having the devices costs before any sharding
    table([(1, 1), (1, 4), (2, 2), (4, 4)], args.reps, forced=True)


def part_c(args: argparse.Namespace) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.default_backend(), jax.device_count())"],
        capture_output=True, text=True, timeout=600,
    )
    backend, _, count = probe.stdout.strip().rpartition("\n")[-1].partition(" ")
    if probe.returncode or backend == "cpu" or not count.isdigit():
        print(f"\n(c) skipped: no accelerator here (default backend {backend or 'unknown'})")
        return
    counts = [(n, n) for n in (1, 2, 4, 8, 16) if n <= int(count)]
    print(f"\n(c) the same on the real devices: {count} x {backend}; medians of {args.reps} epochs")
    table(counts, args.reps, forced=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="a,b,c", help="which parts: a, b, c (comma-separated)")
    parser.add_argument("--epochs", type=int, default=10, help="(a) epochs per sweep member")
    parser.add_argument("--rounds", type=int, default=1, help="(a) interleaved rounds of the three modes")
    parser.add_argument("--reps", type=int, default=5, help="(b), (c) timed epochs per device count")
    args = parser.parse_args()
    parts = {p.strip() for p in args.part.split(",")}
    for name, fn in (("a", part_a), ("b", part_b), ("c", part_c)):
        if name in parts:
            fn(args)


if __name__ == "__main__":
    main()
