"""Reproduce the lecture "Tips for Training DNN" with dnnlab and write its document.

Runs every config in configs/lecture/ as a sweep of several seeds (Fashion-MNIST subsets),
compares the members and judges each claim against the noise: a claimed effect counts only when
it exceeds the tolerance of `dnnlab compare`'s comparative verdict (`compare.noise_band`: the
seeds' spread, 1.96 standard errors of the split sizes, half a point), by the claim checker of
`dnnlab.compare.judge`. Every number in the document comes from this run; the only text written
here is each claim, its measure and the report around it.

    python scripts/lecture.py                 # docs/lecture.md and docs/lecture/*.png
    python scripts/lecture.py --out DIR       # DIR/lecture.md, DIR/lecture/*.png, runs in DIR/runs
    python scripts/lecture.py --out DIR --only 7

Exit status: 0 when every claim judged reproduces, 1 when one does not (after writing the
document), 2 for bad input (an unusable --out, data that cannot be loaded).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from dnnlab import compare, runs
from dnnlab.compare.judge import (
    SAME_WITHIN,
    Check,
    Side,
    check,
    constant,
    side,
    values_side,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "lecture"
# a sweep's members one after another in this process by default: the lecture's runs are mostly
# training, which XLA already spreads over the cores (2 worker processes on 2 cores measured 360 s
# against 370 s one after another, within the noise)
WORKERS = 0


# ---------------------------------------------------------------- running the configs


@dataclass
class Result:
    sweep_dir: Path
    comp: compare.Comparison
    seconds: float
    seeds: int
    members: int = 0  # runs trained: the tuned claims' trials included

    def group(self, **values: Any) -> compare.Group:
        """The configuration whose differing keys have these values (keys with dots as __)."""
        want = {k.replace("__", "."): v for k, v in values.items()}
        for g in self.comp.groups:
            if all(g.values.get(k) == v for k, v in want.items()):
                return g
        raise KeyError(f"no configuration with {want} in {self.sweep_dir}")


class LectureError(Exception):
    """The lecture cannot be run (bad input); `str()` is the message."""


def run_section(config_name: str, out: Path, workers: Optional[int] = None) -> Result:
    from dnnlab import config, sweep

    t0 = time.perf_counter()
    path = CONFIGS / config_name
    try:
        p = sweep.plan(config.read_yaml(path), [], None)
    except (config.ConfigError, sweep.SweepError) as exc:
        raise LectureError(f"{path}: {exc}") from None
    job = sweep.Sweep.create(out, p.base["name"], str(path.relative_to(ROOT)), p.base, p.grid, p.seeds, p.variants, tune=p.tune)
    print(f"== {config_name}: {len(job.members)} runs in {job.path}", flush=True)
    sweep.run(job, workers=workers, on_end=lambda m: print(f"   {m['index']:03d} {' '.join(m['overrides'])}: {m['status']} {m.get('verdict') or m.get('error', '')}", flush=True))
    failed = [m for m in job.members if m["status"] == "failed"]
    if failed:
        raise LectureError(f"{config_name}: {len(failed)} of {len(job.members)} runs failed; the first: {failed[0].get('error')}")
    comp, _ = compare.compare([str(job.path)])
    compare.write(comp, job.path)
    return Result(job.path, comp, time.perf_counter() - t0, p.seeds, len(job.members))


def last_record(run: compare.RunRecord) -> dict[str, Any]:
    done = [r for r in run.history if r.get("epoch", 0) > 0]
    return done[-1] if done else {}


def finished(group: compare.Group) -> list[compare.RunRecord]:
    return [r for r in group.runs if r.status in runs.FINISHED]


def cell(group: compare.Group, metric: str) -> str:
    mean, std = group.stat(metric)
    return "-" if mean is None else f"{mean:.4f} ± {std:.4f}"


def table(res: Result, metrics: tuple[str, ...] = ("train_accuracy", "val_accuracy", "test_accuracy", "test_loss")) -> list[str]:
    """Mean ± std over the seeds of the kept models' metrics, one row per configuration."""
    keys = res.comp.keys
    header = [k.split(".")[-1] for k in keys] + ["seeds"] + [m.replace("_", " ") for m in metrics] + ["kept epoch", "verdicts"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in res.comp.groups:
        done = finished(g)
        epochs = [str(r.summary.get("best_epoch") if r.summary.get("restored_best") else r.summary.get("epochs_run")) for r in done]
        verdicts = [r.verdict or r.status for r in g.runs]
        shown = ", ".join(f"{v} x{verdicts.count(v)}" if verdicts.count(v) > 1 else v for v in dict.fromkeys(verdicts))
        row = [compare.show(g.values.get(k)) for k in keys] + [f"{len(done)}/{len(g.runs)}"]
        row += [cell(g, m) for m in metrics] + [", ".join(epochs), shown]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def copy_plot(src: Path, plots: Path, name: str) -> str:
    shutil.copyfile(src, plots / name)
    return f"lecture/{name}"


def verdict_lines(res: Result) -> list[str]:
    return [f"- {c['text']}" for c in res.comp.comparisons]


def rate_lines(res: Result, key: str) -> list[str]:
    """The learning rate each method was judged at, and how the tuning chose it (`compare.tuning_lines`)."""
    if not res.comp.tuning:
        return []
    tune = res.comp.tuning[0]
    chosen = ", ".join(f"{p['params'].get(key)} {compare.show(p['chosen']) if p.get('chosen') is not None else 'none'}"
                       for p in tune["points"])
    return [f"Learning rates, each method's own (chosen on the mean validation loss of its seeds): {chosen}.", "",
            "How each was chosen (validation loss of the kept models, mean over the seeds; the chosen rate in bold):", "",
            *compare.tuning_lines(tune)[2:], ""]


def chance(group: compare.Group) -> float:
    classes = [(r.summary.get("data") or {}).get("num_classes") for r in group.runs]
    return 1.0 / next((c for c in classes if isinstance(c, int) and c > 0), 10)


Section = tuple[list[Check], list[str]]


# ---------------------------------------------------------------- the sections


def s1(res: Result, plots: Path) -> Section:
    def by_activation(name: str) -> dict[int, compare.Group]:
        return {g.values["model.depth"]: g for g in sorted(res.comp.groups, key=lambda g: g.values["model.depth"])
                if g.values["model.activation"] == name}

    sig, relu = by_activation("sigmoid"), by_activation("relu")
    shallow, deep = min(sig), max(sig)
    acc = lambda g, d: side(g, "train_accuracy", f"{d} layers")
    checks = [
        check(f"sigmoid, training accuracy: {deep} layers against {shallow}", acc(sig[shallow], shallow), acc(sig[deep], deep), "lower"),
        check(f"sigmoid, training accuracy at {deep} layers against chance", constant("chance", chance(sig[deep])), acc(sig[deep], deep), "same"),
        check(f"training accuracy at {deep} layers: ReLU against sigmoid", side(sig[deep], "train_accuracy", "sigmoid"),
              side(relu[deep], "train_accuracy", "ReLU"), "higher"),
    ]
    deep_sig, deep_relu = finished(sig[deep]), finished(relu[deep])
    ratios = lambda rs: ", ".join(f"{last_record(r).get('grad_ratio', float('nan')):.2g}" for r in rs)
    causes = sorted({c for r in deep_sig for c in (r.summary.get("diagnosis") or {}).get("causes", [])})
    by_depth = lambda gs: ", ".join(f"{d}: {cell(g, 'train_accuracy')}" for d, g in gs.items())
    lines = [
        f"Training accuracy by depth, sigmoid: {by_depth(sig)}; ReLU: {by_depth(relu)}.",
        "",
        f"At {deep} layers the first/last layer gradient RMS ratio at the last epoch is {ratios(deep_sig)} for sigmoid and "
        f"{ratios(deep_relu)} for ReLU (one value per seed). dnnlab's verdicts on the {deep}-layer sigmoid runs: "
        f"**{', '.join(sorted({r.verdict or '-' for r in deep_sig}))}** ({', '.join(causes) or 'no cause named'}).",
        "",
        f"![accuracy against depth]({copy_plot(res.sweep_dir / 'vs_model_depth.png', plots, '1-accuracy-vs-depth.png')})",
    ]
    if deep_sig and deep_relu:
        lines += [
            "",
            f"Per-layer gradient RMS of the {deep}-layer sigmoid net, seed {deep_sig[0].summary.get('seed')} (layer 1 is next to the input):",
            "",
            f"![gradients, sigmoid]({copy_plot(deep_sig[0].path / 'gradients.png', plots, '1-gradients-sigmoid-10.png')})",
            "",
            f"The same for the {deep}-layer ReLU net:",
            "",
            f"![gradients, ReLU]({copy_plot(deep_relu[0].path / 'gradients.png', plots, '1-gradients-relu-10.png')})",
        ]
    return checks, lines


def s2(res: Result, plots: Path) -> Section:
    p20, p56 = res.group(model__depth=20, model__residual=False), res.group(model__depth=56, model__residual=False)
    r20, r56 = res.group(model__depth=20, model__residual=True), res.group(model__depth=56, model__residual=True)
    checks = [
        check("plain, training accuracy: 56 layers against 20", side(p20, "train_accuracy", "20 layers"), side(p56, "train_accuracy", "56 layers"), "lower"),
        check("plain, test accuracy: 56 layers against 20", side(p20, "test_accuracy", "20 layers"), side(p56, "test_accuracy", "56 layers"), "lower"),
        check("residual, training accuracy: 56 layers against 20", side(r20, "train_accuracy", "20 layers"), side(r56, "train_accuracy", "56 layers"), "not lower"),
    ]
    call = next((c["call"] for c in res.comp.comparisons if c["key"] == "model.depth" and c["context"] == "model.residual=False"), None)
    lines = [
        f"dnnlab compare calls plain 56 against plain 20 **{call}**.",
        "",
        "dnnlab's residual blocks start as the identity (the last layer of each branch is zero-initialized, as in "
        "SkipInit/Fixup).",
        "",
        f"![curves]({copy_plot(res.sweep_dir / 'curves.png', plots, '2-curves.png')})",
    ]
    return checks, lines


def s3(res: Result, plots: Path) -> Section:
    sig = res.group(model__activation="sigmoid")
    others = [g for g in res.comp.groups if g is not sig]
    checks = [
        check(f"training accuracy: {g.values['model.activation']} against sigmoid", side(sig, "train_accuracy", "sigmoid"),
              side(g, "train_accuracy", g.values["model.activation"]), "higher")
        for g in others
    ]
    means = {g.values["model.activation"]: g.stat("train_accuracy")[0] for g in others}
    known = {k: v for k, v in means.items() if v is not None}
    lines = []
    if known:
        lo, hi = min(known, key=known.__getitem__), max(known, key=known.__getitem__)
        spread = check(f"training accuracy: {hi} against {lo}", side(res.group(model__activation=lo), "train_accuracy", lo),
                       side(res.group(model__activation=hi), "train_accuracy", hi), "same")
        lines += [f"Not part of the claim, the spread among the four: {spread.text()}.", ""]
    prelu, maxout = finished(res.group(model__activation="prelu")), finished(res.group(model__activation="maxout"))
    if prelu and last_record(prelu[0]).get("prelu_slope"):
        lines.append(f"PReLU's learned slopes at the end (mean per layer, initialized 0.25; seed {prelu[0].summary.get('seed')}): "
                     f"{', '.join(f'{s:.3f}' for s in last_record(prelu[0])['prelu_slope'])}.")
    if maxout and last_record(maxout[0]).get("maxout_evenness"):
        lines.append(f"Maxout's pieces win evenly (evenness per layer, 1 = equal; seed {maxout[0].summary.get('seed')}): "
                     f"{', '.join(f'{e:.2f}' for e in last_record(maxout[0])['maxout_evenness'])}.")
    lines += ["", *rate_lines(res, "model.activation"), f"![curves]({copy_plot(res.sweep_dir / 'curves.png', plots, '3-curves.png')})"]
    return checks, lines


def s4(res: Result, plots: Path) -> Section:
    sgd = res.group(optimizer__name="sgd")
    epochs = max((r.summary.get("epochs_run", 0) for r in sgd.runs), default=0)
    checks = [
        check(f"training loss after {epochs} epochs: {g.values['optimizer.name']} against sgd", side(sgd, "train_loss", "sgd"),
              side(g, "train_loss", g.values["optimizer.name"]), "lower", proportion=False)
        for g in res.comp.groups if g is not sgd
    ]

    def last_two(r: compare.RunRecord) -> str:
        losses = [h["train_loss"] for h in r.history if h.get("epoch", 0) > 0 and isinstance(h.get("train_loss"), float)][-2:]
        return " -> ".join(f"{x:.3f}" for x in losses)

    moves = "; ".join(f"{g.values['optimizer.name']} {', '.join(last_two(r) for r in finished(g))}" for g in res.comp.groups)
    lines = [*rate_lines(res, "optimizer.name"), f"Training loss at the last two epochs, one pair per seed: {moves}.", "",
             f"![curves]({copy_plot(res.sweep_dir / 'curves.png', plots, '4-curves.png')})"]
    return checks, lines


def s5(res: Result, plots: Path) -> Section:
    full, es = res.group(train__early_stopping__enabled=False), res.group(train__early_stopping__enabled=True)
    checks = [
        check("test loss: early stopping's kept model against the full run's last", side(full, "test_loss", "full run"),
              side(es, "test_loss", "early stopping"), "lower", proportion=False),
    ]
    acc = check("test accuracy, the same models", side(full, "test_accuracy", "full run"), side(es, "test_accuracy", "early stopping"), "higher")
    mins = [f"{r.best('val_loss')[1]}" for r in finished(full)]
    kept = [f"{r.summary.get('best_epoch')}" for r in finished(es)]
    stops = [f"{r.summary.get('epochs_run')}" for r in finished(es)]
    runs_full = finished(full)
    lines = [
        f"Full runs ({', '.join(str(r.summary.get('epochs_run')) for r in runs_full)} epochs): the validation loss is lowest at "
        f"epochs {', '.join(mins)} (one per seed); verdicts {', '.join(r.verdict or '-' for r in runs_full)}. With early stopping "
        f"the runs stopped after {', '.join(stops)} epochs and kept epochs {', '.join(kept)}.",
        "",
        f"Not part of the claim: {acc.text()}.",
    ]
    if runs_full:
        lines += ["", f"The full run of seed {runs_full[0].summary.get('seed')}:", "",
                  f"![full run]({copy_plot(runs_full[0].path / 'curves.png', plots, '5-full-run.png')})"]
    return checks, lines


def s6(res: Result, plots: Path) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnnlab.runs import load_checkpoint

    named: dict[str, compare.Group] = {}
    for g in res.comp.groups:
        named["L1" if g.values.get("regularization.l1") else "L2" if g.values.get("regularization.l2") else "none"] = g

    def first_layer(g: compare.Group, name: str, key: str) -> Side:
        return values_side(name, [last_record(r).get(key, [None])[0] if r.status in runs.FINISHED else None for r in g.runs])

    sparse = {k: first_layer(g, k, "near_zero_fraction") for k, g in named.items()}
    norm = {k: first_layer(g, k, "weight_norm") for k, g in named.items()}
    checks = [
        check("fraction of first-layer weights with |w| < 1e-3: L1 against none", sparse["none"], sparse["L1"], "higher", proportion=False),
        check("fraction of first-layer weights with |w| < 1e-3: L1 against L2", sparse["L2"], sparse["L1"], "higher", proportion=False),
        check("first-layer weight norm: L2 against none", norm["none"], norm["L2"], "lower", proportion=False),
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, g in named.items():
        done = finished(g)
        if not done:
            continue
        w = load_checkpoint(done[0].path / "last.npz")["hidden.0.w"].ravel()
        ax.hist(w, bins=200, range=(-0.15, 0.15), histtype="step", log=True,
                label=f"{label}: {100 * last_record(done[0])['near_zero_fraction'][0]:.1f}% |w| < 1e-3")
    ax.set_xlabel("first-layer weight")
    ax.set_title("first-layer weights after training, first seed (log count)")
    ax.legend()
    fig.savefig(plots / "6-weight-histograms.png", dpi=90)
    plt.close(fig)
    lines = [
        "Test accuracy: " + ", ".join(f"{k} {cell(g, 'test_accuracy')}" for k, g in named.items()) + " "
        "(L1 = 1e-4, L2 = 1e-3, plain SGD lr 0.1).",
        "",
        "![weight histograms](lecture/6-weight-histograms.png)",
    ]
    return checks, lines


def s7(res: Result, res_b: Result, plots: Path) -> Section:
    off, on = res.group(model__dropout=0.0), res.group(model__dropout=0.5)
    b_off, b_on = res_b.group(model__dropout=0.0), res_b.group(model__dropout=0.5)
    # the kept models sit at different epochs (dropout's minimum comes later): training accuracy
    # is compared after the same number of epochs, the fewest any of these runs trained
    trained = [r.summary.get("epochs_run") or 0 for g in (off, on) for r in finished(g)]
    epoch = min(trained) if trained else 0

    def at_epoch(g: compare.Group, label: str) -> Side:
        rec = [next((h for h in r.history if h.get("epoch") == epoch), {}) if r.status in runs.FINISHED else {} for r in g.runs]
        train_eval = [(r.summary.get("data") or {}).get("train_eval") for r in g.runs]
        return values_side(label, [h.get("train_accuracy") for h in rec], min((n for n in train_eval if n), default=None))

    checks = [
        check(f"overfitting net, training accuracy at epoch {epoch}: dropout against none", at_epoch(off, "none"), at_epoch(on, "dropout"), "lower"),
        check("overfitting net, kept model's test loss: dropout against none", side(off, "test_loss", "none"), side(on, "test_loss", "dropout"), "lower", proportion=False),
        check("overfitting net, kept model's test accuracy: dropout against none", side(off, "test_accuracy", "none"), side(on, "test_accuracy", "dropout"), "higher"),
        check("struggling net, training accuracy: dropout 0.5 against none", side(b_off, "train_accuracy", "none"), side(b_on, "train_accuracy", "dropout"), "lower"),
    ]
    warned = sorted({w for r in finished(b_on) for w in (r.summary.get("diagnosis") or {}).get("warnings", [])})
    lines = [
        f"Overfitting net: early stopping kept epochs {', '.join(str(r.summary.get('best_epoch')) for r in finished(off))} without dropout "
        f"and {', '.join(str(r.summary.get('best_epoch')) for r in finished(on))} with it (one per seed). The kept models' training "
        f"accuracy (in the table) measures where each run stopped as much as dropout, so the training-accuracy check reads every "
        f"run at epoch {epoch}, the fewest epochs any of them trained.",
        "",
        "Struggling net (3-layer sigmoid, plain SGD):",
        "",
        *table(res_b),
        "",
        f"dnnlab's warnings with dropout: {'; '.join(warned) or 'none'}. Its comparative verdict:",
        "",
        *verdict_lines(res_b),
        "",
        f"![dropout on the overfitting setup]({copy_plot(res.sweep_dir / 'curves.png', plots, '7-dropout-curves.png')})",
    ]
    return checks, lines


def s8(res: Result, plots: Path) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnnlab import config, data
    from dnnlab.evaluate import mc_dropout
    from dnnlab.runs import load_checkpoint

    group = res.group(model__dropout=0.5)
    outs: list[Optional[dict[str, Any]]] = []
    loaded: dict[str, Any] = {}
    for run in group.runs:
        if run.status not in runs.FINISHED:
            outs.append(None)
            continue
        cfg = config.load_config(run.path / runs.CONFIG)
        key = repr(cfg.data.model_dump(mode="json")) + str(config.data_seed(cfg))
        if key not in loaded:
            loaded[key] = data.load(cfg.data, config.data_seed(cfg))
        arrays = load_checkpoint(runs.kept_checkpoint(run.path, run.summary))
        outs.append(mc_dropout(cfg, loaded[key], arrays, 64, seed=cfg.seed))
    n_test = group.size("test")
    done = [o for o in outs if o is not None]
    ks = [r["k"] for r in done[0]["mc"]] if done else []

    def at(k: Optional[int], measure: str, label: str) -> Side:
        vals = [None if o is None else (o["weight_scaling"] if k is None else next(r for r in o["mc"] if r["k"] == k))[measure] for o in outs]
        return values_side(label, vals, n_test if measure == "accuracy" else None)

    top = ks[-1] if ks else 64
    checks = [
        check(f"test accuracy: MC dropout (K = {top}) against weight scaling", at(None, "accuracy", "weight scaling"), at(top, "accuracy", f"K = {top}"), "same"),
        check(f"test accuracy: MC dropout, K = {top} against K = 1", at(1, "accuracy", "K = 1"), at(top, "accuracy", f"K = {top}"), "higher"),
    ]
    loss = check(f"test loss: MC dropout (K = {top}) against weight scaling", at(None, "loss", "weight scaling"), at(top, "loss", f"K = {top}"), "same", proportion=False)
    rows = [("weight scaling", None)] + [(f"MC dropout, K = {k}", k) for k in ks]
    lines = ["| model | test accuracy | test loss |", "|---|---|---|"]
    for name, k in rows:
        a, lo = at(k, "accuracy", name), at(k, "loss", name)
        lines.append(f"| {name} | {a.mean:.4f} ± {a.std:.4f} | {lo.mean:.4f} ± {lo.std:.4f} |" if a.mean is not None and lo.mean is not None else f"| {name} | - | - |")
    fig, ax = plt.subplots(figsize=(7, 4))
    if ks:
        mc = [at(k, "accuracy", "") for k in ks]
        ws = at(None, "accuracy", "")
        ax.errorbar(ks, [s.mean for s in mc], yerr=[s.std for s in mc], fmt="-o", capsize=3, label="MC dropout: average of K masks")
        ax.axhline(ws.mean, color="k", ls="--", label="weight scaling (evaluation mode)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K (sampled dropout masks)")
    ax.set_ylabel(f"test accuracy (mean ± std of {len(done)} seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(plots / "8-mc-dropout.png", dpi=90)
    plt.close(fig)
    lines += ["", f"Not part of the claim: {loss.text()}.", "", "![MC dropout](lecture/8-mc-dropout.png)"]
    return checks, lines


def s9(res: Result, plots: Path) -> Section:
    plain, pre = res.group(model__pretrain="none"), res.group(model__pretrain="rbm")
    depth = next((len(r.summary.get("pretrain", {}).get("layers", [])) for r in finished(pre) if r.summary.get("pretrain")), 0)
    checks = [
        check("training accuracy without pretraining against chance", constant("chance", chance(plain)),
              side(plain, "train_accuracy", "no pretraining"), "same"),
        check("training accuracy: pretrained against not", side(plain, "train_accuracy", "no pretraining"),
              side(pre, "train_accuracy", "pretrained"), "higher"),
    ]
    done = [r for r in finished(pre) if r.summary.get("pretrain")]
    lines = []
    if done:
        first = done[0].summary["pretrain"]
        cost = ", ".join(f"{r.summary['pretrain']['seconds']:.1f}" for r in done)
        walls = ", ".join(f"{r.summary.get('wall_seconds', float('nan')):.1f}" for r in done)
        plain_walls = ", ".join(f"{r.summary.get('wall_seconds', float('nan')):.1f}" for r in finished(plain))
        errors = ", ".join(f"{layer['reconstruction_error'][-1]:.3g}" for layer in first["layers"])
        lines += [
            f"Pretraining: {depth} RBMs, one per hidden layer, each CD-{first['cd_steps']} for {first['epochs']} epochs at lr "
            f"{first['lr']:g}, batch {first['batch_size']}, weights started at {first['init_scale']:g} x the layer's "
            f"glorot_uniform draw, on the {first['train_size']:,} training examples. It took {cost} s (one per seed, "
            f"compiling its programs included: one per layer shape); the whole pretrained runs took {walls} s, the runs "
            f"without pretraining {plain_walls} s.",
            "",
            f"Each layer's reconstruction error (mean squared, per visible unit) at its last pretraining epoch, seed "
            f"{done[0].summary.get('seed')}: {errors}. dnnlab's verdicts: without pretraining "
            f"**{', '.join(sorted({r.verdict or r.status for r in plain.runs}))}**, pretrained "
            f"**{', '.join(sorted({r.verdict or r.status for r in pre.runs}))}**.",
            "",
            f"![pretraining]({copy_plot(done[0].path / 'pretrain.png', plots, '9-pretraining.png')})",
            "",
            f"![curves]({copy_plot(res.sweep_dir / 'curves.png', plots, '9-curves.png')})",
        ]
    return checks, lines


@dataclass
class Spec:
    number: int
    title: str
    claim: str
    measure: str
    configs: list[str]
    fn: Callable[..., Section]
    short: str = ""  # the measure, for the summary table
    config_text: str = ""


SECTIONS = [
    Spec(1, "Deep sigmoid nets stop training; ReLU nets do not",
         "Training accuracy falls with depth until it collapses in deep sigmoid nets trained with SGD (vanishing gradients: "
         "the layers near the input barely learn); with ReLU it does not.",
         "training accuracy at the end of the budget: the claim is about training, not generalization.",
         ["1-depth-sigmoid-relu.yaml"], s1, "training accuracy"),
    Spec(2, "Depth without shortcuts: 20 vs 56 layers",
         "A 56-layer plain net is worse than a 20-layer one on the training set as well as on the test set, so it is not "
         "overfitting: it is not well trained. Identity shortcuts (residual blocks) close the gap.",
         "training and test accuracy at the end of the budget: the claim is that both fall, which rules out overfitting.",
         ["2-plain-vs-residual.yaml"], s2, "training and test accuracy"),
    Spec(3, "ReLU, Leaky ReLU, PReLU, Maxout",
         "The ReLU family and Maxout (a learnable piecewise-linear activation, ReLU a special case) all train a deep net "
         "that sigmoid cannot.",
         "training accuracy in claim 1's setting (plain SGD), against a sigmoid net of the same depth, each activation "
         "at its own learning rate: the claim is that they train where sigmoid does not.",
         ["3-activations.yaml"], s3, "training accuracy against sigmoid"),
    Spec(4, "SGD, momentum, Adagrad, RMSProp, Adam",
         "Adaptive learning rates and momentum train faster than plain SGD.",
         "training loss after a short, equal budget, each optimizer at its own learning rate: \"faster\" is about "
         "optimization, and the loss is what each optimizer minimizes (accuracy is a thresholded proxy of it).",
         ["4-optimizers.yaml"], s4, "training loss after an equal budget"),
    Spec(5, "Early stopping",
         "Stop where the validation loss is lowest; the weights of that epoch are better on the test set than those at the end.",
         "test loss of the kept model (early stopping on the validation loss, best epoch restored) against the full "
         "run's last epoch: the lecture draws this claim with loss curves. Test accuracy is shown beside it.",
         ["5-early-stopping.yaml"], s5, "test loss of the kept model"),
    Spec(6, "L1 against L2",
         "L1 regularization gives sparse weights (many exactly or nearly zero); L2 shrinks all weights but keeps few at zero.",
         "the first layer's weights after training: the fraction with |w| < 1e-3 and their norm (the claim is about "
         "the weights, not the accuracy).",
         ["6-l1-l2.yaml"], s6, "first-layer weights: near-zero fraction, norm"),
    Spec(7, "Dropout",
         "On an overfitting net, dropout lowers training accuracy and makes the net generalize better; on a net that "
         "fails to train, it makes things worse.",
         "for the overfitting net, the kept models (early stopping on the validation loss, best epoch restored) on "
         "test loss and test accuracy: dropout's claim is about generalization, so each net is compared where it "
         "generalizes best. Its training accuracy is compared after an equal number of epochs (fitting the training "
         "set more slowly is the claim). For the struggling net, training accuracy at the end of the budget.",
         ["7a-dropout-overfitting.yaml", "7b-dropout-failing.yaml"], s7, "kept models' test loss and accuracy; training accuracy"),
    Spec(8, "Dropout is an ensemble: MC dropout against weight scaling",
         "Dropout trains an ensemble of 2^M thinned networks; multiplying the weights by 1 - p at test approximates "
         "averaging them (exactly only for linear nets).",
         "test accuracy of the kept dropout models of claim 7, evaluated with weight scaling and as the average of K "
         "sampled masks (`dnnlab evaluate RUN --mc-dropout 64`): the claim is that the two agree, and that averaging "
         "masks beats one thinned net.",
         ["7a-dropout-overfitting.yaml"], s8, "test accuracy of the kept dropout models"),
    Spec(9, "Before ReLU: greedy layer-wise RBM pretraining",
         "A deep sigmoid net trained with SGD stays near chance; the same net pretrained layer by layer (each layer a "
         "restricted Boltzmann machine trained on the layer below's output, then fine-tuned by backpropagation) trains: "
         "its first layers were trained before backpropagation had to reach them. (The lecture adds that ReLU later "
         "made this unnecessary: claim 1.)",
         "training accuracy at the end of the budget, in claim 1's setting (10 sigmoid layers of 128, plain SGD lr 0.1, "
         "10 epochs): the claim is about training. The pretraining's cost in seconds beside it.",
         ["9-rbm-pretraining.yaml"], s9, "training accuracy, pretrained against not"),
]


# ---------------------------------------------------------------- the document


def machine() -> str:
    import jax
    import jaxlib

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return (f"{cpus} CPU cores ({model}, {platform.system()} {platform.release()}), "
            f"Python {platform.python_version()}, JAX {jax.__version__} (jaxlib {jaxlib.__version__}) on "
            f"{jax.devices()[0].platform}")


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def cpu_minutes() -> float:
    """CPU time (user and system) of this process and of its finished worker processes so far, in minutes."""
    t = os.times()
    return (t.user + t.system + t.children_user + t.children_system) / 60


def write_doc(
    doc: Path, only: Optional[int], done: list[tuple[Spec, list[Check], list[str], float, int]], seconds: float, loads: tuple[str, str],
    workers: int = 0,
) -> None:
    seeds = sorted({n for *_, n in done})
    head = [
        "# The lecture, reproduced", "",
        f"Generated by `python scripts/lecture.py{f' --only {only}' if only else ''}`; every number and plot below comes "
        "from that run (nothing typed by hand). "
        f"Runtime: **{seconds / 60:.1f} minutes** ({cpu_minutes():.1f} minutes of CPU time) on {machine()}; load "
        f"average {loads[0]} at the start, {loads[1]} at the end (1, 5, 15 minutes; a load above the core count means "
        "the runs shared the cores with other work, and the runtime is longer than on a quiet machine). Seeds: "
        f"{' and '.join(str(s) for s in seeds)} per configuration (seeds 0, 1, ...: they vary the initialization, the "
        "shuffling and the dropout masks; the training subsample and validation split are the same for every seed, "
        "`data.split_seed: 0`). Fashion-MNIST subsets. The seeds of a configuration run as members of its sweep (a "
        "sweep runs seeds as members; vmapping them measured about 1.1x on 2 CPU cores, "
        "[speed.md](speed.md#several-seeds-trainseed_mode)), "
        + (f"{workers} members at once, each in a worker process; a worker's later members reuse its compiled programs, "
           "and a program that one worker has compiled is loaded from the cache by the other. " if workers > 1 else
           "one after another; after a configuration's first seed, the others reuse its compiled programs. ")
        + "A member's numbers do not depend on the process that trained it.", "",
        "**How a claim is judged.** Each claim is a set of checks, each comparing a measure between two configurations "
        "(mean ± standard deviation over the seeds, of the model each run kept). A claimed effect counts only when it "
        "exceeds the noise, by the rule of `dnnlab compare`'s comparative verdict (`compare.noise_band`): the largest "
        "of half a point, the two seeds' spreads added, and, for accuracies, 1.96 standard errors of the split sizes "
        "(losses have no split-size term). An effect within the noise is a **no**. A claim that two things are the "
        "same holds within the noise, and only where the noise is narrower than "
        f"{SAME_WITHIN:g}. Every seed must finish: a diverged or failed seed makes its check a no, named (the mean shown "
        "is over the seeds that finished). A claim reproduces when all of its checks pass.",
        "",
        "**Learning rates.** A claim that compares methods at one learning rate favours the method the rate was "
        "chosen for. Claims 3 (activations) and 4 (optimizers) give each method its own: every method trains at every "
        "rate of a grid written in its config before the run, with every seed, and is judged at the rate whose kept "
        "models have the lowest mean validation loss (`sweep.tune`, [config.md](config.md#tuning-a-key-per-grid-point)); "
        "a rate at which a seed diverges is never chosen, and the claim is then judged on its own measure over the "
        "same seeds. Each of those sections names the rate every method got. The other claims keep the rate their "
        "config names: claims 2, 5 and 7a run at Adam's default 1e-3, chosen for none of their sides; claim 6 measures "
        "weights, not how well a method trains; in claims 1 (ReLU against sigmoid) and 9 (pretrained against not) the "
        "rate is the one chosen for the side claimed worse, which can only hold back the side claimed better (claim 3 "
        "makes claim 1's comparison at each activation's own rate); and claim 7b's net must struggle to train: its "
        "rate is part of that setting.",
        "",
        "Same seed, same machine, same jaxlib: bit-identical numbers. Another machine's XLA kernels round differently, "
        "and over tens of epochs a single seed's numbers move by a point or two: that is why each verdict is judged "
        "against the seeds' spread rather than on one seed's numbers.",
        "",
        f"**{sum(1 for _, c, *_ in done if c and all(x.ok for x in c))} of {len(done)} claims reproduce.**", "",
        "| claim | measure | reproduced |", "|---|---|---|",
    ]
    body: list[str] = []
    for spec, checks, lines, secs, _ in done:
        ok = bool(checks) and all(c.ok for c in checks)
        short = "; ".join(c.what for c in checks if not c.ok)
        head.append(f"| {spec.number}. {spec.title} | {spec.short} | {'yes' if ok else 'no: ' + short} |")
        body += [f"## {spec.number}. {spec.title}", "", f"**Claim.** {spec.claim}", "", f"**Measure.** {spec.measure[0].upper()}{spec.measure[1:]}", "",
                 f"**Config.** {spec.config_text}; {secs:.0f} s.", "", "**Measured.**", "", *lines, "", "**Checks.**", ""]
        body += [f"- {c.text()}" for c in checks]
        failed = "; ".join(f"{c.what} ({c.why})" for c in checks if not c.ok)
        body += ["", "**Reproduced:** yes." if ok else f"**Reproduced:** no. Short of the claim: {failed}. On these "
                 "Fashion-MNIST subsets, at this budget, the claim is not shown beyond the noise.", ""]
    head.append("")
    doc.write_text("\n".join(head + body) + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write DIR/lecture.md, DIR/lecture/*.png and the runs under DIR/runs "
                        "(default: docs/lecture.md, docs/lecture/, runs under runs/lecture)")
    parser.add_argument("--only", type=int, choices=[s.number for s in SECTIONS], default=None, help="judge one claim (needs --out)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="run each sweep's members in this many worker processes "
                        "at once (default 0: one after another in this process)")
    args = parser.parse_args(argv)
    if args.only is not None and args.out is None:
        parser.error("--only writes a partial document: give --out DIR (docs/lecture.md holds every claim)")
    if args.out is not None:
        doc, run_dir = args.out / "lecture.md", args.out / "runs"
    else:
        doc, run_dir = ROOT / "docs" / "lecture.md", ROOT / "runs" / "lecture"
    plots = doc.parent / "lecture"
    try:
        plots.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: --out {args.out}: cannot create {exc.filename}: {exc.strerror}; give a writable folder", file=sys.stderr)
        return 2
    t_start, load_start = time.perf_counter(), load()
    cache: dict[str, Result] = {}
    done = []
    try:
        for spec in SECTIONS:
            if args.only is not None and spec.number != args.only:
                continue
            t0 = time.perf_counter()
            res = []
            for name in spec.configs:
                if name not in cache:
                    cache[name] = run_section(name, run_dir, args.workers or None)
                res.append(cache[name])
            checks, lines = spec.fn(*res, plots)
            secs = time.perf_counter() - t0  # claim 8 reuses claim 7's runs: its own time is the evaluation
            n_runs = sum(r.members or len(r.comp.records) for r in res)
            tuned = [t for r in res for t in r.comp.tuning]
            each = (f"{len(tuned[0]['values'])} learning rates x {max(r.seeds for r in res)} seeds for each of "
                    f"{len(tuned[0]['points'])} methods" if tuned else f"{max(r.seeds for r in res)} seeds each")
            spec.config_text = (", ".join(f"`configs/lecture/{n}`" for n in spec.configs) + f" ({n_runs} runs"
                                + (", shared with claim 7" if spec.number == 8 else "") + f", {each})")
            tables = [] if spec.number == 8 else [line for r in res[:1] for line in table(r)] + [""]
            verdicts = [] if spec.number == 8 else ["", "Comparative verdict (dnnlab compare):", "", *verdict_lines(res[0])]
            done.append((spec, checks, tables + lines + verdicts, secs, max(r.seeds for r in res)))
            print(f"   claim {spec.number}: {'yes' if checks and all(c.ok for c in checks) else 'no'} ({secs:.0f} s, load {load()})", flush=True)
            for c in checks:
                print(f"     {c.text()}", flush=True)
    except LectureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; the runs so far are under {run_dir}, no document written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t_start
    write_doc(doc, args.only, done, seconds, (load_start, load()), args.workers)
    ok = all(c and all(x.ok for x in c) for _, c, *_ in done)
    print(f"wrote {doc} in {seconds / 60:.1f} minutes: {sum(1 for _, c, *_ in done if c and all(x.ok for x in c))} of {len(done)} claims reproduce")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
