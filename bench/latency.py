"""Time to verdict: the quickstart and a small sweep against the floor of any JAX program.

    python bench/latency.py [--reps 3] [--sweep-reps 1]

Every measure is a whole command in a fresh process, timed from outside, as ratios to the
baseline `python -c "import jax; jax.jit(lambda x: x + 1)(1.0)"` measured in the same
invocation (medians). "cold" runs with an empty cache folder (DNNLAB_CACHE: no compiled
programs, no linear reference); "warm" runs again with the cache the cold run filled, once with
--quiet and once showing progress, as a plain `dnnlab run` does (the two must load the same
programs).

| measure | target |
|---|---|
| quickstart, cold cache | <= 6x the baseline |
| quickstart, warm cache | <= 4x |
| quickstart, warm cache, showing progress (no --quiet) | <= 4x |
| quickstart, cold cache, `diagnosis.reference: none` (what the reference adds) | |
| XLA compilations in one quickstart run (its reference included) | <= 6 + 3 |
| sweep of the quickstart over 8 learning rates, 10 epochs, one process, cold | <= 12x |
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNT = """
import json, sys, threading, time
t0 = time.perf_counter()
import jax.monitoring
from typer.testing import CliRunner
from dnnlab.cli import app
n, spent = [], {}
def listen(name, d, **kw):
    part = {"/jax/core/compile/backend_compile_duration": "compile", "/jax/core/compile/jaxpr_trace_duration": "trace",
            "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower"}.get(name)
    if part:
        who = "run" if threading.current_thread() is threading.main_thread() else "reference"
        spent[f"{part} ({who})"] = spent.get(f"{part} ({who})", 0.0) + d
        n.append(1) if part == "compile" else None
jax.monitoring.register_event_duration_secs_listener(listen)
imported = time.perf_counter() - t0
r = CliRunner().invoke(app, ["run", "configs/quickstart.yaml", "--out", sys.argv[1], "--quiet"])
assert r.exit_code == 0, r.output
print(json.dumps({"compilations": len(n), "imports": imported, "total": time.perf_counter() - t0, **spent}))
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sweep-reps", type=int, default=1)
    args = parser.parse_args()
    dnnlab = [sys.executable, "-m", "dnnlab"]
    rows: dict[str, list[float]] = {
        "baseline": [], "quickstart, cold cache": [], "quickstart, warm cache": [], "warm, showing progress": [],
        "cold, no reference": [], "sweep of 8 lrs, cold": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            env = {**os.environ, "DNNLAB_CACHE": f"{tmp}/cache-{rep}"}
            rows["baseline"].append(timed([sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0)"], env))
            run = [*dnnlab, "run", "configs/quickstart.yaml", "--quiet", "--out", f"{tmp}/runs"]
            rows["quickstart, cold cache"].append(timed(run, env))
            rows["quickstart, warm cache"].append(timed(run, env))
            rows["warm, showing progress"].append(timed([x for x in run if x != "--quiet"], env))
            # what the linear reference (3 more programs, compiled in a thread) adds to a cold run
            env = {**os.environ, "DNNLAB_CACHE": f"{tmp}/bare-cache-{rep}"}
            rows["cold, no reference"].append(timed([*run, "--set", "diagnosis.reference=none"], env))
        for rep in range(args.sweep_reps):
            env = {**os.environ, "DNNLAB_CACHE": f"{tmp}/sweep-cache-{rep}"}
            lrs = "0.0003,0.0005,0.001,0.002,0.003,0.005,0.01,0.02"
            rows["sweep of 8 lrs, cold"].append(timed(
                [*dnnlab, "sweep", "configs/quickstart.yaml", "--quiet", "--set", "train.epochs=10", "--grid", f"optimizer.lr={lrs}", "--out", f"{tmp}/sweeps"], env))
        env = {**os.environ, "DNNLAB_CACHE": f"{tmp}/count-cache"}
        out = subprocess.run([sys.executable, "-c", COUNT, f"{tmp}/count"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        counted = json.loads(out.stdout.strip().splitlines()[-1])
        compiles = counted["compilations"]
    base = statistics.median(rows["baseline"])
    print(f"{'measure':<28}{'median s':>10}{'x baseline':>12}   (n)")
    for name, values in rows.items():
        m = statistics.median(values)
        print(f"{name:<28}{m:>10.2f}{m / base:>11.1f}x   ({len(values)})")
    print(f"XLA compilations in one quickstart run (with its linear reference): {compiles}")
    # where a cold run's time goes (one run in one process; the reference's thread overlaps the run's)
    spent = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(counted.items()) if k not in ("compilations",))
    print(f"that cold run, in process: {spent}")
    print(json.dumps({k: statistics.median(v) for k, v in rows.items()} | {"compilations": compiles}))


if __name__ == "__main__":
    main()
