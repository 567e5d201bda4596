"""Reproduce the lecture "Tips for Training DNN" with dnnlab and write docs/lecture.md.

Runs every config in configs/lecture/ as a sweep (Fashion-MNIST subsets), compares the members,
and writes the measured tables, the comparative verdicts and the plots it generated. Every
number in the document comes from this run; the only text written here is each claim and the
rule that decides whether it reproduced.

    python scripts/lecture.py [--out runs/lecture] [--doc docs/lecture.md]

About 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from dnnlab import compare, config, sweep
from dnnlab.runs import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "lecture"


@dataclass
class Result:
    sweep_dir: Path
    comp: compare.Comparison
    seconds: float

    def group(self, **values: Any) -> compare.Group:
        """The configuration whose differing keys have these values (keys with dots as __)."""
        want = {k.replace("__", "."): v for k, v in values.items()}
        for g in self.comp.groups:
            if all(g.values.get(k) == v for k, v in want.items()):
                return g
        raise KeyError(f"no configuration with {want} in {self.sweep_dir}")

    def acc(self, split: str, **values: Any) -> float:
        return self.group(**values).stat(f"{split}_accuracy")[0]


def run_section(config_name: str, out: Path) -> Result:
    t0 = time.perf_counter()
    path = CONFIGS / config_name
    raw = config.read_yaml(path)
    p = sweep.plan(raw, [], None)
    job = sweep.Sweep.create(out, p.base["name"], str(path.relative_to(ROOT)), p.base, p.grid, p.seeds, p.variants)
    print(f"== {config_name}: {len(job.members)} runs in {job.path}", flush=True)
    sweep.run(job, on_end=lambda m: print(f"   {m['index']:03d} {' '.join(m['overrides'])}: {m['status']} {m.get('verdict') or m.get('error', '')}", flush=True))
    failed = [m for m in job.members if m["status"] == "failed"]
    if failed:
        raise SystemExit(f"{config_name}: {len(failed)} members failed: {failed[0].get('error')}")
    comp, _ = compare.compare([str(job.path)])
    compare.write(comp, job.path)
    return Result(job.path, comp, time.perf_counter() - t0)


def last_record(run: compare.RunRecord) -> dict[str, Any]:
    return [r for r in run.history if r.get("epoch", 0) > 0][-1]


def table(res: Result) -> list[str]:
    header, rows = compare.table_rows(res.comp)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def copy_plot(src: Path, docs: Path, name: str) -> str:
    shutil.copyfile(src, docs / name)
    return f"lecture/{name}"


def verdict_lines(res: Result) -> list[str]:
    return [f"- {c['text']}" for c in res.comp.comparisons]


# ---------------------------------------------------------------- the sections


def s1(res: Result, docs: Path) -> tuple[bool, list[str]]:
    sig = {d: res.acc("train", model__depth=d, model__activation="sigmoid") for d in range(1, 11)}
    relu = {d: res.acc("train", model__depth=d, model__activation="relu") for d in range(1, 11)}
    collapse = next((d for d in range(1, 11) if sig[d] < 0.2), None)
    deep_sig = res.group(model__depth=10, model__activation="sigmoid").runs[0]
    deep_relu = res.group(model__depth=10, model__activation="relu").runs[0]
    ratio_sig, ratio_relu = last_record(deep_sig).get("grad_ratio"), last_record(deep_relu).get("grad_ratio")
    # "collapses": at chance (< 0.2) by depth 10 after > 0.6 at depth 1; "does not": ReLU's
    # depth-10 net stays far above chance (> 0.5)
    ok = sig[1] > 0.6 and sig[10] < 0.2 and relu[10] > 0.5
    lines = [
        f"Sigmoid training accuracy by depth: {', '.join(f'{d}: {a:.3f}' for d, a in sig.items())}; "
        f"it first falls below 0.2 at depth {collapse}. ReLU: {', '.join(f'{d}: {a:.3f}' for d, a in relu.items())}.",
        f"At depth 10 the first/last layer gradient RMS ratio at the last epoch is {ratio_sig:.2g} for sigmoid and "
        f"{ratio_relu:.2g} for ReLU. dnnlab's verdict on the 10-layer sigmoid run: **{deep_sig.verdict}** "
        f"({', '.join((deep_sig.summary.get('diagnosis') or {}).get('causes', []))}).",
        "",
        f"![accuracy against depth]({copy_plot(res.sweep_dir / 'vs_model_depth.png', docs, '1-accuracy-vs-depth.png')})",
        "",
        "Per-layer gradient RMS of the 10-layer sigmoid net (layer 1 is next to the input):",
        "",
        f"![gradients, 10-layer sigmoid]({copy_plot(deep_sig.path / 'gradients.png', docs, '1-gradients-sigmoid-10.png')})",
        "",
        "The same for the 10-layer ReLU net:",
        "",
        f"![gradients, 10-layer ReLU]({copy_plot(deep_relu.path / 'gradients.png', docs, '1-gradients-relu-10.png')})",
    ]
    return ok, lines


def s2(res: Result, docs: Path) -> tuple[bool, list[str]]:
    p20, p56 = res.group(model__depth=20, model__residual=False), res.group(model__depth=56, model__residual=False)
    r20, r56 = res.group(model__depth=20, model__residual=True), res.group(model__depth=56, model__residual=True)
    call = next((c["call"] for c in res.comp.comparisons if c["key"] == "model.depth" and c["context"] == "model.residual=False"), None)
    gap_plain = p20.stat("train_accuracy")[0] - p56.stat("train_accuracy")[0]
    gap_res = r20.stat("train_accuracy")[0] - r56.stat("train_accuracy")[0]
    ok = call == "failed-to-train" and gap_res < gap_plain / 2
    lines = [
        f"Plain: 20 layers train/validation {p20.stat('train_accuracy')[0]:.3f}/{p20.stat('val_accuracy')[0]:.3f}, "
        f"56 layers {p56.stat('train_accuracy')[0]:.3f}/{p56.stat('val_accuracy')[0]:.3f}: dnnlab compare calls 56 vs 20 "
        f"**{call}**. Residual: 20 layers {r20.stat('train_accuracy')[0]:.3f}/{r20.stat('val_accuracy')[0]:.3f}, "
        f"56 layers {r56.stat('train_accuracy')[0]:.3f}/{r56.stat('val_accuracy')[0]:.3f}. The training-accuracy gap "
        f"between 20 and 56 layers is {gap_plain:.3f} without shortcuts and {gap_res:.3f} with them.",
        "",
        "dnnlab's residual blocks start as the identity (the last layer of each branch is zero-initialized, as in "
        "SkipInit/Fixup): plain He-initialized branches explode at this depth.",
        "",
        f"![curves]({copy_plot(res.sweep_dir / 'curves.png', docs, '2-curves.png')})",
    ]
    return ok, lines


def s3(res: Result, docs: Path) -> tuple[bool, list[str]]:
    vals = {g.values["model.activation"]: g.stat("val_accuracy")[0] for g in res.comp.groups}
    verdicts = {r.verdict for r in res.comp.records}
    slopes = []
    prelu = res.group(model__activation="prelu").runs[0]
    if last_record(prelu).get("prelu_slope"):
        slopes = last_record(prelu)["prelu_slope"]
    even = last_record(res.group(model__activation="maxout").runs[0]).get("maxout_evenness") or []
    ok = "failed-training" not in verdicts and max(vals.values()) - min(vals.values()) < 0.03
    lines = [
        f"Validation accuracy (mean of 2 seeds): {', '.join(f'{k} {v:.3f}' for k, v in vals.items())}; verdicts: "
        f"{', '.join(sorted(v or '-' for v in verdicts))}.",
        f"PReLU's learned slopes at the end (mean per layer, initialized 0.25): {', '.join(f'{s:.3f}' for s in slopes)}. "
        f"Maxout's pieces win evenly (evenness per layer, 1 = equal): {', '.join(f'{e:.2f}' for e in even)}.",
        "",
        f"![curves]({copy_plot(res.sweep_dir / 'curves.png', docs, '3-curves.png')})",
    ]
    return ok, lines


def s4(res: Result, docs: Path) -> tuple[bool, list[str]]:
    acc = {g.values["optimizer.name"]: g.stat("train_accuracy")[0] for g in res.comp.groups}
    ok = all(acc["sgd"] < acc[o] for o in ("momentum", "adagrad", "rmsprop", "adam"))
    lines = [
        f"Training accuracy after 10 epochs: {', '.join(f'{k} {v:.3f}' for k, v in acc.items())} "
        "(learning rates: sgd, momentum and adagrad 0.01; rmsprop and adam 0.001).",
        "",
        f"![curves]({copy_plot(res.sweep_dir / 'curves.png', docs, '4-curves.png')})",
    ]
    return ok, lines


def s5(res: Result, docs: Path) -> tuple[bool, list[str]]:
    full = res.group(train__early_stopping__enabled=False).runs[0]
    es = res.group(train__early_stopping__enabled=True).runs[0]
    best_val, best_epoch = full.best("val_loss")
    f_final, e_kept = full.summary["final"], es.kept()
    ok = es.summary["status"] == "stopped_early" and e_kept["test_loss"] < f_final["test_loss"]
    lines = [
        f"Full run ({full.summary['epochs_run']} epochs): the validation loss is lowest ({best_val:.3f}) at epoch "
        f"{best_epoch} and ends at {f_final['val_loss']:.3f}; test loss/accuracy at the end "
        f"{f_final['test_loss']:.3f}/{f_final['test_accuracy']:.3f}. Verdict: **{full.verdict}**.",
        f"With early stopping (patience {5}): stopped after {es.summary['epochs_run']} epochs and kept epoch "
        f"{es.summary['best_epoch']}: test loss/accuracy {e_kept['test_loss']:.3f}/{e_kept['test_accuracy']:.3f}.",
        "",
        f"![full run]({copy_plot(full.path / 'curves.png', docs, '5-full-run.png')})",
    ]
    return ok, lines


def s6(res: Result, docs: Path) -> tuple[bool, list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    sparsity, accs = {}, {}
    for g in res.comp.groups:
        label = "L1" if g.values.get("regularization.l1") else "L2" if g.values.get("regularization.l2") else "none"
        run = g.runs[0]
        sparsity[label] = last_record(run)["near_zero_fraction"][0]
        accs[label] = run.kept()["test_accuracy"]
        w = load_checkpoint(run.path / "last.npz")["hidden.0.w"].ravel()
        ax.hist(w, bins=200, range=(-0.15, 0.15), histtype="step", label=f"{label}: {100 * sparsity[label]:.1f}% |w| < 1e-3", log=True)
    ax.set_xlabel("first-layer weight")
    ax.set_title("first-layer weights after training (log count)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "6-weight-histograms.png", dpi=90)
    plt.close(fig)
    ok = sparsity["L1"] > 3 * max(sparsity["none"], sparsity["L2"])
    lines = [
        f"Fraction of first-layer weights with |w| < 1e-3: {', '.join(f'{k} {100 * v:.2f}%' for k, v in sparsity.items())}; "
        f"test accuracy {', '.join(f'{k} {v:.3f}' for k, v in accs.items())} (L1 = 1e-4, L2 = 1e-3, plain SGD lr 0.1).",
        "",
        "![weight histograms](lecture/6-weight-histograms.png)",
    ]
    return ok, lines


def s7(res: Result, res_b: Result, docs: Path) -> tuple[bool, list[str]]:
    lines, ok_sizes = [], {}
    for n in (500, 2000):
        off = res.group(data__train_size=n, model__dropout=0.0).runs[0]
        on = res.group(data__train_size=n, model__dropout=0.5).runs[0]
        f_off, f_on = off.summary["final"], on.summary["final"]
        ok_sizes[n] = f_on["train_accuracy"] < f_off["train_accuracy"] and f_on["test_accuracy"] > f_off["test_accuracy"]
        lines.append(
            f"{n} examples, 60 epochs: without dropout train/test accuracy {f_off['train_accuracy']:.3f}/{f_off['test_accuracy']:.3f}; "
            f"with dropout 0.5 (inputs 0.2) {f_on['train_accuracy']:.3f}/{f_on['test_accuracy']:.3f} "
            f"({'as claimed' if ok_sizes[n] else 'not as claimed'}). Verdicts: {off.verdict} -> {on.verdict}."
        )
    b_off, b_on = res_b.group(model__dropout=0.0), res_b.group(model__dropout=0.5)
    ok_b = b_on.stat("train_accuracy")[0] < b_off.stat("train_accuracy")[0]
    lines += [
        "",
        f"Struggling net (3-layer sigmoid, plain SGD): training accuracy {b_off.stat('train_accuracy')[0]:.3f} without dropout, "
        f"{b_on.stat('train_accuracy')[0]:.3f} with dropout 0.5. dnnlab's verdict with dropout: **{b_on.runs[0].verdict}**, "
        f"warnings: {'; '.join((b_on.runs[0].summary.get('diagnosis') or {}).get('warnings', [])) or 'none'}.",
        "",
        "Comparative verdict of the struggling net:",
        "",
        *verdict_lines(res_b),
        "",
        f"![dropout on the overfitting setup]({copy_plot(res.sweep_dir / 'curves.png', docs, '7-dropout-curves.png')})",
    ]
    if not ok_sizes[500] and ok_sizes[2000]:
        lines += ["", "With 500 examples the thinned networks have too little to learn from: dropout costs training "
                  "accuracy without a measurable test gain; with 2000 it pays."]
    return ok_sizes[2000] and ok_b, lines


def s8(res: Result, docs: Path) -> tuple[bool, list[str]]:
    from dnnlab import data
    from dnnlab.evaluate import mc_dropout

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = res.group(data__train_size=2000, model__dropout=0.5).runs[0]
    cfg = config.load_config(run.path / "config.yaml")
    ds = data.load(cfg.data, config.data_seed(cfg))
    out = mc_dropout(cfg, ds, load_checkpoint(run.path / "last.npz"), 64, seed=cfg.seed)
    ws = out["weight_scaling"]
    ks = [r["k"] for r in out["mc"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ks, [r["accuracy"] for r in out["mc"]], "-o", label="MC dropout: average of K masks")
    ax.axhline(ws["accuracy"], color="k", ls="--", label="weight scaling (evaluation mode)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K (sampled dropout masks)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "8-mc-dropout.png", dpi=90)
    plt.close(fig)
    best_k = max(out["mc"], key=lambda r: r["accuracy"])
    ok = abs(out["mc"][-1]["accuracy"] - ws["accuracy"]) < 0.01 and out["mc"][-1]["accuracy"] > out["mc"][0]["accuracy"]
    lines = [
        "| model | test accuracy | test loss |",
        "|---|---|---|",
        f"| weight scaling | {ws['accuracy']:.4f} | {ws['loss']:.4f} |",
        *[f"| MC dropout, K = {r['k']} | {r['accuracy']:.4f} | {r['loss']:.4f} |" for r in out["mc"]],
        "",
        f"One mask (K = 1) is a single thinned network: {out['mc'][0]['accuracy']:.4f}. Averaging K = {ks[-1]} masks gives "
        f"{out['mc'][-1]['accuracy']:.4f} (best {best_k['accuracy']:.4f} at K = {best_k['k']}), against {ws['accuracy']:.4f} "
        "for weight scaling: the one-pass approximation of the ensemble.",
        "",
        "![MC dropout](lecture/8-mc-dropout.png)",
    ]
    return ok, lines


SECTIONS: list[tuple[str, str, list[str], Callable[..., tuple[bool, list[str]]]]] = [
    ("1. Deep sigmoid nets stop training; ReLU nets do not", "Training accuracy falls with depth until it collapses in deep sigmoid nets trained with SGD (vanishing gradients: the layers near the input barely learn); with ReLU it does not.", ["1-depth-sigmoid-relu.yaml"], s1),
    ("2. Depth without shortcuts: 20 vs 56 layers", "A 56-layer plain net is worse than a 20-layer one on the training set as well as on the test set, so it is not overfitting: it is not well trained. Identity shortcuts (residual blocks) close the gap.", ["2-plain-vs-residual.yaml"], s2),
    ("3. ReLU, Leaky ReLU, PReLU, Maxout", "The ReLU family and Maxout (a learnable piecewise-linear activation, ReLU a special case) all train a deep net that sigmoid cannot.", ["3-activations.yaml"], s3),
    ("4. SGD, momentum, Adagrad, RMSProp, Adam", "Adaptive learning rates and momentum train faster than plain SGD.", ["4-optimizers.yaml"], s4),
    ("5. Early stopping", "Stop where the validation loss is lowest; the weights of that epoch are better on the test set than those at the end.", ["5-early-stopping.yaml"], s5),
    ("6. L1 against L2", "L1 regularization gives sparse weights (many exactly or nearly zero); L2 shrinks all weights but keeps few at zero.", ["6-l1-l2.yaml"], s6),
    ("7. Dropout", "On an overfitting net, dropout lowers training accuracy and raises test accuracy; on a net that fails to train, it makes things worse.", ["7a-dropout-overfitting.yaml", "7b-dropout-failing.yaml"], s7),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "lecture")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "lecture.md")
    args = parser.parse_args()
    docs = args.doc.parent / "lecture"
    docs.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    body: list[str] = []
    summary_rows = []
    results: dict[str, Result] = {}
    for title, claim, names, fn in SECTIONS:
        res = [run_section(n, args.out) for n in names]
        results[names[0]] = res[0]
        ok, lines = fn(*res, docs)
        summary_rows.append((title, ok))
        body += [f"## {title}", "", f"**Claim.** {claim}", "", f"**Config.** {', '.join(f'`configs/lecture/{n}`' for n in names)} "
                 f"({sum(len(r.comp.records) for r in res)} runs, {sum(r.seconds for r in res):.0f} s).", "", "**Measured.**", ""]
        for r in res:
            body += table(r) + [""]
        body += lines + ["", "**Comparative verdict (dnnlab compare).**", ""] + verdict_lines(res[0]) + [""]
        body += [f"**Reproduced:** {'yes' if ok else 'no, see the numbers above'}.", ""]
    ok, lines = s8(results["7a-dropout-overfitting.yaml"], docs)
    summary_rows.append(("8. Dropout is an ensemble: MC dropout against weight scaling", ok))
    body += ["## 8. Dropout is an ensemble: MC dropout against weight scaling", "",
             "**Claim.** Dropout trains an ensemble of 2^M thinned networks; multiplying the weights by 1 - p at test "
             "approximates averaging them (exactly only for linear nets).", "",
             "**Config.** the dropout run of section 7 on 2000 examples, `dnnlab evaluate RUN --mc-dropout 64`.", "", "**Measured.**", ""]
    body += lines + ["", f"**Reproduced:** {'yes' if ok else 'no, see the numbers above'}.", ""]
    minutes = (time.perf_counter() - t_start) / 60
    import jax

    head = [
        "# The lecture, reproduced", "",
        "Generated by `python scripts/lecture.py`; every number and plot below comes from that run (nothing typed by hand). "
        f"Runtime: **{minutes:.1f} minutes** on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}, "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}), Fashion-MNIST subsets.", "",
        "| section | reproduced |", "|---|---|",
        *[f"| {t} | {'yes' if k else 'no'} |" for t, k in summary_rows], "",
    ]
    args.doc.write_text("\n".join(head + body) + "\n")
    print(f"wrote {args.doc} in {minutes:.1f} minutes")



if __name__ == "__main__":
    main()
