"""The training set first: divergence, and the causes of a poor fit read from the instruments,
with the remedies each cause calls for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from dnnlab import baselines
from dnnlab.config import pretrain_problem, residual_blocks
from dnnlab.diagnose.evidence import (
    ADAPTIVE,
    DEEP_LAYERS,
    USUAL_LR,
    Diagnosis,
    Remedy,
    _finite,
    _g,
    _rate,
    _skill,
)

if TYPE_CHECKING:
    from dnnlab.diagnose.evidence import _Run


# ---------------------------------------------------------------- 0. divergence


def _diverged(run: _Run) -> Diagnosis:
    d = Diagnosis("diverged", causes=["lr-too-high"])
    limit = baselines.divergence_limit(run.cfg.train.divergence_factor, run.init_loss, run.classes, run.regression)
    for r in run.epochs:
        for key, words in (("running_loss", "running training loss (mean over the epoch's steps)"), ("train_loss", "training loss")):
            if key in r and (not _finite(r[key]) or r[key] > limit):
                shown = "non-finite" if not _finite(r[key]) else f"{_g(r[key])} (> {_g(run.cfg.train.divergence_factor)}x the initial loss)"
                d.evidence.append(f"{words} became {shown} at epoch {r['epoch']}; initial loss {_g(run.init_loss)}")
                break
        if d.evidence:
            break
    ratios = [(e, v) for e, v in run.series("grad_ratio")]
    big = [(e, v) for e, v in ratios if not _finite(v) or v > run.th.exploding_ratio]
    if big:
        d.causes.append("exploding-gradients")
        d.evidence.append(f"first/last layer gradient RMS ratio {_g(big[0][1])} at epoch {big[0][0]} (> {_g(run.th.exploding_ratio)})")
    lr = run.cfg.optimizer.lr
    _lower_lr(run, d, f"lr {_g(lr)} takes steps so large that the loss explodes")
    if run.cfg.optimizer.name != "adam":
        d.add_optimizer("adam", "Adam's steps are about lr in size whatever the gradient's scale", run.cfg)
    d.add_remedy(
        "optimizer.clip_norm=1.0", "clip the gradient's global norm so that one bad batch cannot blow up the weights, "
        "with smaller steps", current=run.cfg, also=(f"optimizer.lr={_g(_lower(run))}",),
    )
    return d


# ---------------------------------------------------------------- 1. the training set first


def _instrument_findings(run: _Run) -> list[tuple[str, str]]:
    """(cause, evidence) for what the instruments show, whatever the fit: vanishing or exploding
    gradients, dead units, saturation."""
    th, cfg = run.th, run.cfg
    out: list[tuple[str, str]] = []
    ratio = [(e, v) for e, v in run.series("grad_ratio") if _finite(v)]
    rms = dict(run.series("grad_rms"))
    if ratio and rms:
        vanishing = [
            (e, v, rms[e][0]) for e, v in ratio
            if v < th.vanishing_ratio and rms.get(e) and _finite(rms[e][0]) and rms[e][0] < th.vanishing_first_rms
        ]
        if len(vanishing) * 2 > len(ratio):  # most epochs, not a blip
            e, v, first = vanishing[0]
            out.append(("vanishing-gradients", (
                f"first/last layer gradient RMS ratio {_g(v)} at epoch {e} (< {_g(th.vanishing_ratio)}), first layer "
                f"RMS {_g(first)} (< {_g(th.vanishing_first_rms)}); in {len(vanishing)} of {len(ratio)} epochs"
            )))
        exploding = [(e, v) for e, v in ratio if v > th.exploding_ratio]
        if exploding:
            out.append(("exploding-gradients", f"first/last layer gradient RMS ratio {_g(exploding[0][1])} at epoch {exploding[0][0]} (> {_g(th.exploding_ratio)})"))
    last = run.last
    # only a ReLU unit can die: leaky, PReLU, ELU and GELU keep a gradient below zero
    nonpos = (last.get("nonpositive_fraction") or []) if cfg.model.activation == "relu" else []
    if nonpos and max(nonpos) >= th.dead_fraction:
        layer = max(range(len(nonpos)), key=lambda i: nonpos[i])
        dead = (last.get("dead_fraction") or [0.0] * len(nonpos))[layer]
        out.append(("dead-units", (
            f"hidden layer {layer + 1}: {_g(nonpos[layer])} of pre-activations <= 0 (>= {_g(th.dead_fraction)}), "
            f"{_g(dead)} of its units dead on every probe example, at epoch {last['epoch']}"
        )))
    sat = last.get("saturated_pre_fraction") or []
    if sat and max(sat) > th.saturated_fraction:
        layer = max(range(len(sat)), key=lambda i: sat[i])
        out.append(("saturation", (
            f"hidden layer {layer + 1}: {_g(sat[layer])} of pre-activations beyond +-5 (> {_g(th.saturated_fraction)}) at epoch {last['epoch']}"
        )))
    return out


@dataclass(frozen=True)
class _Signals:
    """What the detectors read of the training loss besides the run's records."""

    progress: float  # the share of the initial loss that training removed
    improving: bool  # still falling over the last epochs
    rises: int  # epochs whose loss rose by more than noise (1%)
    losses: list[float]  # the initial loss, then each epoch's


Finding = tuple[str, Optional[str]]  # (cause, evidence; None when the cause speaks for itself)


def _gradients_units_and_rises(run: _Run, s: _Signals) -> list[Finding]:
    """What the instruments show (vanishing or exploding gradients, dead units, saturation) and a
    training loss that rises or oscillates: several may hold at once."""
    out: list[Finding] = list(_instrument_findings(run))
    if len(s.losses) >= 4 and (s.rises / (len(s.losses) - 1) >= run.th.lr_oscillation or s.losses[-1] > run.init_loss * 1.05):
        out.append(("lr-too-high", f"training loss rose in {s.rises} of {len(s.losses) - 1} epochs; {_g(run.init_loss)} at init, {_g(s.losses[-1])} at the end"))
    return out


def _depth(run: _Run, s: _Signals) -> list[Finding]:
    """A deep plain net with healthy instruments: the degradation problem."""
    deep = run.deep_plain()
    if not deep:
        return []
    return [("depth-degradation", (
        f"{deep}, and the instruments show no vanishing gradients, dead units or saturation: the degradation "
        "problem of deep plain nets (He et al. 2016), which fit their training set worse than shallower ones"
    ))]


def _progress(run: _Run, s: _Signals) -> list[Finding]:
    """With healthy instruments: steps too small, a plateau, or a net too small for its data."""
    th = run.th
    updates = run.last.get("update_ratio") or []
    median_update = sorted(updates)[len(updates) // 2] if updates else None
    if s.progress < th.min_progress:
        if median_update is not None and median_update < th.low_update_ratio:
            return [("lr-too-low", f"median update/weight ratio {_g(median_update)} per step (< {_g(th.low_update_ratio)}; about 1e-3 is healthy)")]
        if median_update is None and s.rises == 0:
            return [("lr-too-low", None)]
        return [("plateau", None if median_update is None else
                 f"gradients are healthy and steps are not small (update/weight ratio {_g(median_update)}), yet the loss does not move")]
    if s.improving:
        return []
    if run.at_chance(run.fit(run.last) or 0.0):
        # a net at chance has learned nothing: it has not converged, whatever its loss did
        one = run.one_class()
        return [("plateau", (
            f"{run.fit_words(run.fit(run.last))} is at chance (skill < {_g(run.chance_threshold)}): "
            + (f"predicting {one!r} for every example, " if one is not None else "")
            + "the net has not started to learn"
        ))]
    if run.below_reference():
        return [("plateau", (
            "the loss has stopped falling well short of what a linear model reaches on the same examples: "
            "optimization, not capacity, holds this net back"
        ))]
    return [("insufficient-capacity", "the training loss has converged with healthy gradients and no dead or saturated layers")]


# the detectors of a poor training fit, in order: the first that finds a cause ends the search
DETECTORS: tuple[Callable[[_Run, _Signals], list[Finding]], ...] = (_gradients_units_and_rises, _depth, _progress)


def _training_causes(run: _Run, d: Diagnosis, progress: float, improving: bool) -> None:
    losses = [run.init_loss] + run.train_loss
    # a rise counts when it is more than noise: 1% of the loss (a flat loss at chance wobbles)
    rises = sum(1 for a, b in zip(losses, losses[1:]) if b > a * 1.01)
    signals = _Signals(progress, improving, rises, losses)
    for detect in DETECTORS:
        findings = detect(run, signals)
        for cause, evidence in findings:
            d.causes.append(cause)
            if evidence is not None:
                d.evidence.append(evidence)
        if findings:
            return


def _training_remedies(run: _Run, d: Diagnosis) -> None:
    for cause in d.causes:
        remedies = CAUSE_REMEDIES.get(cause)
        if remedies is not None:
            remedies(run, d)


# ---------------------------------------------------------------- the remedies of each cause


def _gradient_path(run: _Run, d: Diagnosis) -> None:
    """vanishing gradients, saturation: an activation that passes the gradient, an adaptive
    step, shortcuts, normalization, fewer layers."""
    cfg = run.cfg
    m, opt = cfg.model, cfg.optimizer
    if m.activation in ("sigmoid", "tanh"):
        # measured on configs/recipe/deep-sigmoid-sgd.yaml: ReLU with the SGD step of a
        # sigmoid net is unstable, and Adam alone leaves a 10-layer sigmoid net at chance;
        # the lecture's two remedies together train it, and so does batch norm
        also = () if opt.name in ADAPTIVE else ("optimizer.name=adam", f"optimizer.lr={_g(USUAL_LR['adam'])}")
        unpretrained = ("model.pretrain=none",)  # RBM pretraining is for plain sigmoid layers only
        d.add_remedy(
            "model.activation=relu",
            f"{m.activation} squashes the gradient at every layer; ReLU passes it through"
            + ("" if not also else ", and Adam at its usual lr scales each step (the lecture's two remedies)"),
            current=run.cfg, also=also + unpretrained,
        )
        if m.norm == "none":
            d.add_remedy("model.norm=batch", f"batch normalization keeps the {m.activation} units in their responsive range", current=run.cfg, also=unpretrained)
        rbm = run.cfg.model_copy(update={"model": m.model_copy(update={"pretrain": "rbm"})})
        if pretrain_problem(rbm) is None:
            # measured (bench/pretrain.py, the same SGD): 10 sigmoid layers of 64 on the digits
            # (configs/recipe/deep-sigmoid-sgd.yaml) 0.10 -> 0.80-0.83 training accuracy, and
            # claim 9 of docs/lecture.md
            d.add_remedy(
                "model.pretrain=rbm", "greedy layer-wise RBM pretraining starts every sigmoid layer at features of "
                "the layer below, so the first layers are trained before the gradient has to reach them (the "
                "lecture's first remedy, before ReLU)", current=run.cfg,
            )
    elif opt.name not in ADAPTIVE:
        d.add_optimizer("adam", "an adaptive learning rate per parameter rescues the small gradients of the early layers", run.cfg)
    if m.arch == "resnet":
        if m.shortcut == "none":
            d.add_remedy("model.shortcut=identity", "identity shortcuts give the gradient a path around every block (He et al. 2016)", current=run.cfg)
        if m.norm == "none":
            d.add_remedy("model.norm=batch", "batch normalization keeps every layer's pre-activations at a trainable scale", current=run.cfg)
        if m.blocks > 3:
            d.add_remedy(f"model.blocks={max(3, m.blocks // 3)}", "a shallower net has a shorter path for the gradient", current=run.cfg)
    elif len(m.layer_widths) > DEEP_LAYERS:
        d.add_remedy(f"model.depth={max(2, len(m.layer_widths) // 2)}" if m.hidden is None else f"model.hidden={list(m.layer_widths[:2])}", "a shallower net has a shorter path for the gradient", current=run.cfg)


def _dead_units(run: _Run, d: Diagnosis) -> None:
    d.add_remedy("model.activation=leaky_relu", "a leaky slope (0.01) keeps a gradient for negative inputs, so units cannot die", current=run.cfg)
    _lower_lr(run, d, "large steps push units into the dead region")


def _overshoot(run: _Run, d: Diagnosis) -> None:
    """exploding gradients, a rising loss: a smaller step, clipping."""
    _lower_lr(run, d, f"the loss rises or oscillates: lr {_g(run.cfg.optimizer.lr)} overshoots")
    d.add_remedy("optimizer.clip_norm=1.0", "clipping bounds each step", current=run.cfg, also=(f"optimizer.lr={_g(_lower(run))}",))


def _small_steps(run: _Run, d: Diagnosis) -> None:
    opt = run.cfg.optimizer
    usual = USUAL_LR[opt.name]
    higher = usual if opt.lr < usual / 10 else opt.lr * 10
    d.add_remedy(f"optimizer.lr={_g(higher)}", f"the loss barely moves from its initial value at lr {_g(opt.lr)}", current=run.cfg)
    if opt.name not in ADAPTIVE:
        d.add_optimizer("adam", "Adam's steps are about lr in size whatever the gradient's scale", run.cfg)


def _plateau(run: _Run, d: Diagnosis) -> None:
    m, opt = run.cfg.model, run.cfg.optimizer
    if m.activation in ("sigmoid", "tanh"):
        d.add_remedy("model.activation=relu", f"{m.activation} units in their flat regions pass almost no gradient; ReLU does", current=run.cfg)
    if opt.name in ("sgd",):
        d.add_optimizer("momentum", "momentum carries the weights across flat regions and saddle points", run.cfg)
    d.add_optimizer("adam", "adaptive learning rates leave plateaus faster", run.cfg)
    d.add_remedy(f"optimizer.lr={_g(opt.lr * 3)}", "a larger step leaves the flat region", current=run.cfg)


def _capacity(run: _Run, d: Diagnosis) -> None:
    m = run.cfg.model
    if m.arch == "resnet":
        d.add_remedy(f"model.blocks={m.blocks * 2}", "more residual blocks per stage", current=run.cfg)
    elif m.hidden is None:
        d.add_remedy(f"model.width={m.width * 2}", "more units per layer", current=run.cfg)
        d.add_remedy(f"model.depth={(m.depth or 0) + 1}", "one more hidden layer", current=run.cfg)
    else:
        d.add_remedy(f"model.hidden={[w * 2 for w in m.hidden]}", "more units per layer", current=run.cfg)
    if m.activation in ("sigmoid", "tanh"):
        d.add_remedy("model.activation=relu", "ReLU nets train deeper and faster", current=run.cfg)


def _lower(run: _Run) -> float:
    """A lower learning rate: the optimizer's usual one when lr is far above it, else a tenth."""
    lr, usual = run.cfg.optimizer.lr, USUAL_LR[run.cfg.optimizer.name]
    return usual if lr > 10 * usual else lr / 10


def _lower_lr(run: _Run, d: Diagnosis, why: str) -> None:
    new = _lower(run)
    d.add_remedy(f"optimizer.lr={_g(new)}", why + (f": {_g(new)} is the usual lr for {run.cfg.optimizer.name}" if new == USUAL_LR[run.cfg.optimizer.name] else ": try a tenth of it"), current=run.cfg)


def _structural_remedies(run: _Run, d: Diagnosis) -> None:
    """Shortcuts, normalization and fewer layers: the remedies of a deep plain net."""
    m = run.cfg.model
    if m.arch == "resnet":
        d.add_remedy("model.shortcut=identity", "identity shortcuts let a deep net be at least as good as a shallower one (He et al. 2016)", current=run.cfg)
        d.add_remedy(f"model.blocks={max(1, m.blocks // 3)}", "a shallower plain net fits its training set better", current=run.cfg)
        return
    # batch norm is no remedy here: He et al.'s plain nets had it and still degraded, and a
    # 50-layer plain MLP with it stays at chance on the digits (configs/recipe/deep-plain-mlp.yaml)
    widths = m.layer_widths
    if m.hidden is None and residual_blocks(widths):
        d.add_remedy("model.residual=true", "identity shortcuts around pairs of layers let a deep net be at least as good as a shallower one (He et al. 2016)", current=run.cfg)
    shallower = max(2, min(len(widths) // 5, DEEP_LAYERS // 2))
    d.add_remedy(
        f"model.depth={shallower}" if m.hidden is None else f"model.hidden={list(widths[:shallower])}",
        "a shallower plain net fits its training set better", current=run.cfg,
    )


# every cause a diagnosis can name, in the order they are listed (`CAUSES`), with the remedies
# of a poor training fit it calls for; None: its remedies come from elsewhere (over-regularization:
# `_regularization_while_poor`, after every other cause's). A new cause is a detector in DETECTORS
# (or the validation's) and a line here.
CAUSE_REMEDIES: dict[str, Optional[Callable[[_Run, Diagnosis], None]]] = {
    "vanishing-gradients": _gradient_path,
    "exploding-gradients": _overshoot,
    "dead-units": _dead_units,
    "saturation": _gradient_path,
    "lr-too-high": _overshoot,
    "lr-too-low": _small_steps,
    "plateau": _plateau,
    "insufficient-capacity": _capacity,
    "depth-degradation": _structural_remedies,
    "over-regularization": None,
}
# the causes that make a poor fit failed training even while its loss still falls
HARD_CAUSES = frozenset({"vanishing-gradients", "exploding-gradients", "dead-units", "saturation", "lr-too-high"})
# the causes that are a learning rate: their remedies' rates come from a table, which a range test
# (`dnnlab lr-find`, `dnnlab fix --lr-find`) measures instead
LR_CAUSES = ("lr-too-high", "lr-too-low", "plateau")


def _judge_training(run: _Run) -> Optional[Diagnosis]:
    """failed-training or undertrained when the TRAINING set is poorly fit; None when it is fit well."""
    th = run.th
    acc, loss = run.fit(run.last), run.last["train_loss"]
    poor = acc is not None and acc < run.target
    below_reference = run.below_reference()
    if not (poor or below_reference):
        return None
    progress = 1.0 - loss / run.init_loss if run.init_loss > 0 else 0.0
    improving = run.improving([run.init_loss] + run.train_loss)
    d = Diagnosis("failed-training")
    target_words = "your target" if th.target_train_accuracy else f"skill {_g(th.poor_train_margin)}"
    if run.regression:
        target_words = "diagnosis.poor_train_r2"
    if poor:
        one = run.one_class()
        d.evidence.append(
            f"{run.fit_words(acc)} at epoch {run.last['epoch']} is below {_g(run.target)} ({target_words}); "
            f"chance is {run.base.chance_words()}"
            + (f": the net predicts {one!r} for every example" if one is not None else "")
        )
    if below_reference:
        d.evidence.append(f"{run.reference_words()}: this net fits its training set worse than a linear model")
    weighted = "class-weighted " if run.base.weighted else ""
    d.evidence.append(
        f"{weighted}training loss {_g(run.init_loss)} at init -> {_g(loss)} at epoch {run.last['epoch']} "
        f"({_g(100 * progress)}% lower; loss skill {_skill(run.base.loss_skill(loss))} against the "
        + ("mean's squared error on standardized targets " if run.regression else "prior's cross-entropy ")
        + f"{_g(run.base.prior_loss)})"
    )
    _training_causes(run, d, progress, improving)
    # still improving is undertrained, unless a linear model already fits the training set better
    if progress >= th.min_progress and improving and not HARD_CAUSES & set(d.causes) and not below_reference:
        d = Diagnosis("undertrained", evidence=d.evidence)
        d.evidence.append(f"the training loss is still falling {_g(100 * _rate([run.init_loss] + run.train_loss, th.window))}% per epoch over the last epochs")
        d.add_remedy(f"train.epochs={run.cfg.train.epochs * 3}", "training had not converged when the budget ran out", current=run.cfg)
        if run.cfg.optimizer.name not in ADAPTIVE:
            d.add_optimizer("adam", "an adaptive optimizer converges in fewer epochs", run.cfg)
    else:
        _training_remedies(run, d)
        if run.deep_plain():
            _structural_remedies(run, d)  # after the cause's own remedies: a deep plain net's way out
        _imbalance_remedy(run, d, acc)
    _regularization_while_poor(run, d)
    return d


def _imbalance_remedy(run: _Run, d: Diagnosis, acc: Optional[float]) -> None:
    """A net at the prior of an imbalanced table: class weights make the minority classes count."""
    if run.base.imbalanced(run.th.imbalance_share) and run.at_chance(acc) and run.cfg.train.class_weight == "none":
        d.add_remedy(
            "train.class_weight=balanced",
            f"the largest class holds {_g(run.base.majority)} of the training split and the net predicts the prior: "
            "balanced class weights make every class weigh as much in the loss",
            current=run.cfg,
        )


def _over_regularization(run: _Run) -> list[str]:
    """Evidence that L2, L1 or weight decay holds the fit back: the penalty's share of the
    training loss at the last epoch (>= `penalty_share`), or the weights' norm against the same
    net's at epoch 0 (<= `shrunk_weights`). Both facts are given when either holds; [] when none."""
    reg, th = run.cfg.regularization, run.th
    if not (reg.l2 > 0 or reg.l1 > 0 or reg.weight_decay > 0):
        return []
    facts, strong = [], False
    penalty = run.summary.get("penalty") if isinstance(run.summary.get("penalty"), dict) else {}
    terms = {k: v for k, v in penalty.items() if k in ("l2", "l1") and _finite(v)}
    loss = run.last.get("train_loss")
    if terms and _finite(loss) and penalty.get("epoch") == run.last.get("epoch"):
        total = loss + sum(terms.values())
        share = sum(terms.values()) / total if total > 0 else 0.0
        strong = strong or share >= th.penalty_share
        facts.append(
            f"the {' + '.join(terms)} penalty is {_g(100 * share)}% of the training loss at epoch {run.last['epoch']} "
            f"({_g(sum(terms.values()))} of {_g(total)}; >= {_g(100 * th.penalty_share)}% fights the fit)"
        )
    norms = [(e, v) for e, v in run.series("weight_norm") if isinstance(v, list) and v and all(_finite(x) for x in v)]
    if len(norms) >= 2 and norms[0][0] == 0:
        first, last = (math.sqrt(sum(x * x for x in v)) for _, v in (norms[0], norms[-1]))
        ratio = last / first if first > 0 else 1.0
        strong = strong or ratio <= th.shrunk_weights
        facts.append(
            f"the weights' norm is {_g(ratio)} of the same net's at epoch 0 ({_g(first)} -> {_g(last)} at epoch "
            f"{norms[-1][0]}; <= {_g(th.shrunk_weights)} is pulled toward zero)"
        )
    return facts if strong else []


def _regularization_while_poor(run: _Run, d: Diagnosis) -> None:
    """The recipe: a remedy for overfitting hurts a net that does not fit its training set.
    Regularization the evidence shows to hold the fit back is a cause, `over-regularization`,
    and taking it away is the first remedy and part of every other."""
    m, reg = run.cfg.model, run.cfg.regularization
    evidence = _over_regularization(run) if d.verdict == "failed-training" else []
    if evidence:
        off = [f"regularization.{k}=0" for k in ("l2", "l1", "weight_decay") if getattr(reg, k) > 0]
        d.causes.insert(0, "over-regularization")
        d.evidence += evidence
        for r in d.remedies:  # each remedy is a complete change: it trains without the penalty too
            r.also += [s for s in off if s not in r.sets]
        d.remedies.insert(0, Remedy(
            off[0], "regularization is a remedy for overfitting; on a net that does not fit its training set it is the "
            "cause: remove it until the net fits, then add it back a tenth at a time if it overfits", off[1:],
        ))
    if m.dropout > 0 or m.input_dropout > 0:
        d.warnings.append(
            f"dropout is on (hidden {_g(m.dropout)}, input {_g(m.input_dropout)}) while the net does not fit its "
            "training set: dropout fights overfitting and makes such a net worse"
        )
        off = [s for s, rate in (("model.dropout=0", m.dropout), ("model.input_dropout=0", m.input_dropout)) if rate > 0]
        for r in d.remedies:  # each remedy is a complete change: it trains without dropout too
            r.also += [s for s in off if s not in r.sets]
        if not d.remedies:  # alone only when nothing else is known to help
            d.remedies.append(Remedy(off[0], "dropout is for overfitting; turn it off until the net fits its training set", off[1:]))
    if (reg.l2 > 0 or reg.l1 > 0 or reg.weight_decay > 0) and not evidence:
        d.warnings.append(
            f"regularization is on (l2 {_g(reg.l2)}, l1 {_g(reg.l1)}, weight_decay {_g(reg.weight_decay)}) while the net "
            "does not fit its training set: it pulls the weights toward zero and fights the fit"
        )
