"""Do the shipped configs still train to the same numbers, bit for bit?

    python bench/same_numbers.py --record before.json      # on the commit before a change
    python bench/same_numbers.py --check before.json       # after it: every difference listed

Each case is a `dnnlab run` through the CLI in a subprocess, in a fresh folder and a fresh
cache: the quickstart, every config of configs/recipe/ (the Fashion-MNIST ones only where the
dataset is installed), one CNN and one resnet epoch on the digits, the breast-cancer table as a
CSV, and a vmapped 2-seed quickstart. What is compared: every metrics.jsonl record with its
`seconds` left out, and the bytes of every array of best.npz and last.npz (sha256). The
verdict is printed beside each case (a change of verdict alone is not a change of numbers).
`--only NAME` runs the cases whose name contains NAME.

    python bench/same_numbers.py --surface surface.txt     # the CLI's surface, for a diff

writes `dnnlab schema` and the `--help` of every command (at 100 columns) to one text file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
TIMING = ("seconds",)


def cases() -> list[tuple[str, list[str]]]:
    out = [("quickstart", ["configs/quickstart.yaml"])]
    for cfg in sorted((ROOT / "configs" / "recipe").glob("*.yaml")):
        if "fashion-mnist" in cfg.read_text() and not FASHION.exists():
            continue
        out.append((f"recipe/{cfg.stem}", [str(cfg.relative_to(ROOT))]))
    quick = ["configs/quickstart.yaml", "--set", "train.epochs=1"]
    out.append(("cnn-1-epoch", [*quick, "--set", "model.arch=cnn", "--set", "model.channels=[8,16]"]))
    out.append(("resnet-1-epoch", [*quick, "--set", "model.arch=resnet", "--set", "model.blocks=1",
                                   "--set", "model.depth=null", "--set", "model.width=null"]))
    out.append(("csv-table", ["configs/tabular-csv.yaml", "--set", "train.epochs=15"]))
    out.append(("seeds-vmap", ["configs/quickstart.yaml", "--seeds", "2", "--set", "train.epochs=3",
                               "--set", "train.seed_mode=vmap"]))
    return out


def _breast_cancer_csv(folder: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    bunch.frame.to_csv(folder / "breast-cancer.csv", index=False)


def _digits_zero_csv(folder: Path) -> None:
    """configs/recipe/imbalanced-at-prior.yaml's table: the digits labelled "is it a zero?"."""
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame
    table = frame.drop(columns="target")
    table["zero"] = ["yes" if v == 0 else "no" for v in frame["target"]]
    table.to_csv(folder / "digits-zero.csv", index=False)


def _diabetes_csv(folder: Path) -> None:
    """configs/recipe/regression-mean.yaml's table: scikit-learn's diabetes, a numeric target."""
    from sklearn.datasets import load_diabetes

    load_diabetes(as_frame=True, scaled=False).frame.to_csv(folder / "diabetes.csv", index=False)


# the tables a case's config reads from its working folder, by file name: written there first
TABLES = {"breast-cancer.csv": _breast_cancer_csv, "digits-zero.csv": _digits_zero_csv, "diabetes.csv": _diabetes_csv}


def _digest(run: Path) -> dict:
    import numpy as np

    records = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.append({k: v for k, v in record.items() if k not in TIMING})
    arrays = {}
    for tag in ("best", "last"):
        path = run / f"{tag}.npz"
        if path.exists():
            with np.load(path) as f:
                arrays[tag] = {k: hashlib.sha256(np.ascontiguousarray(f[k]).tobytes()).hexdigest()[:16] for k in sorted(f.files)}
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    verdict = (summary.get("diagnosis") or {}).get("verdict")
    return {"metrics": records, "checkpoints": arrays, "verdict": verdict}


def run_case(name: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "DNNLAB_CACHE": str(tmp / "cache"), "COLUMNS": "120"}
        cwd = ROOT
        text = (ROOT / args[0]).read_text()
        for table, write in TABLES.items():
            if f"path: {table}" in text:
                write(tmp)
                cwd = tmp
                args = [str(ROOT / args[0]), *args[1:]]
        cmd = [sys.executable, "-m", "dnnlab", "run", *args, "--out", str(tmp / "runs"), "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        runs = sorted((tmp / "runs").iterdir()) if (tmp / "runs").exists() else []
        if not runs:
            raise SystemExit(f"{name}: no run folder (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        run = runs[0]
        seeds = sorted(run.glob("seed-*"))
        digest = {s.name: _digest(s) for s in seeds} if seeds else _digest(run)
        return {"exit": proc.returncode, "digest": digest, "seconds": round(seconds, 1)}


def _differences(before: dict, after: dict, where: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            if key == "verdict":
                continue
            if key not in after or key not in before:
                out.append(f"{where}.{key}: only {'before' if key in before else 'after'}")
            else:
                out += _differences(before[key], after[key], f"{where}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} records before, {len(after)} after"]
        out = []
        for i, (a, b) in enumerate(zip(before, after)):
            out += _differences(a, b, f"{where}[{i}]")
        return out[:5]
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


def _verdicts(digest: dict) -> str:
    if "verdict" in digest:
        return str(digest["verdict"])
    return ",".join(str(d.get("verdict")) for d in digest.values())


SURFACE = [[], ["run"], ["diagnose"], ["check"], ["lr-find"], ["sweep"], ["compare"], ["evaluate"], ["fix"], ["validate"],
           ["schema"], ["data"], ["data", "list"], ["data", "inspect"], ["data", "download"]]


def surface(path: Path) -> None:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    out = []
    for args in [*SURFACE]:
        for cmd in ([*args, "--help"],) + ((["schema"],) if args == ["schema"] else ()):
            proc = subprocess.run([sys.executable, "-m", "dnnlab", *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
            out.append(f"$ dnnlab {' '.join(cmd)}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
    path.write_text("\n".join(out))
    print(f"wrote the surface of {len(out)} commands to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path, help="write the digests of every case to this file")
    group.add_argument("--check", type=Path, help="compare every case against this recorded file")
    group.add_argument("--surface", type=Path, help="write `dnnlab schema` and every --help to this file")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    if args.surface:
        return surface(args.surface)
    before = json.loads(args.check.read_text()) if args.check else {}
    results, changed = {}, []
    for name, cmd in cases():
        if args.only and args.only not in name:
            continue
        if args.check and name not in before:
            print(f"{name:28s} not recorded: skipped")
            continue
        results[name] = result = run_case(name, cmd)
        line = f"{name:28s} exit {result['exit']}  {result['seconds']:6.1f} s  verdict {_verdicts(result['digest'])}"
        if args.check:
            old = before[name]
            diffs = _differences(old["digest"], result["digest"])
            if old["exit"] != result["exit"]:
                diffs.insert(0, f"exit {old['exit']} -> {result['exit']}")
            line += "  same numbers" if not diffs else "  CHANGED"
            if _verdicts(old["digest"]) != _verdicts(result["digest"]):
                line += f" (verdict was {_verdicts(old['digest'])})"
            if diffs:
                changed.append(name)
                line += "".join(f"\n      {d}" for d in diffs[:8])
        print(line, flush=True)
    if args.record:
        args.record.write_text(json.dumps(results, indent=1) + "\n")
        print(f"recorded {len(results)} cases in {args.record}")
    elif changed:
        print(f"{len(changed)} of {len(results)} cases changed: {', '.join(changed)}")
        sys.exit(1)
    else:
        print(f"all {len(results)} cases have the same numbers")


if __name__ == "__main__":
    main()
