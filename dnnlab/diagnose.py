"""The recipe as rules: read a run's records and say what is wrong, with evidence and remedies.

1. Look at the TRAINING set first. Poor on training data is not overfitting: training failed
   (or it is still improving: undertrained). The causes come from the instruments. Poor is
   measured on the skill scale of `dnnlab.baselines`: chance is the training split's class
   prior, so a net that predicts the majority class of an imbalanced table fit nothing.
2. Only when training is good is validation looked at: overfitting, undertrained or good-fit.
3. Remedies follow the problem: training problems get activation / optimizer changes, never
   dropout or L2; overfitting gets early stopping, dropout and regularization.

Every threshold is a key of the config's `diagnosis:` section. Imports no JAX.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from dnnlab import baselines
from dnnlab.config import Config, DiagnosisConfig, pretrain_problem, residual_blocks
from dnnlab.runs import kept_metrics, shell_command

VERDICTS = ("good-fit", "overfitting", "failed-training", "diverged", "undertrained")
CAUSES = (
    "vanishing-gradients",
    "exploding-gradients",
    "dead-units",
    "saturation",
    "lr-too-high",
    "lr-too-low",
    "plateau",
    "insufficient-capacity",
    "depth-degradation",
    "over-regularization",
)
ADAPTIVE = ("adagrad", "rmsprop", "adam", "adamw")
# the learning rate each optimizer is usually run at: a remedy that switches the optimizer sets it
USUAL_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.001, "adamw": 0.001}
# hidden layers from which a plain net (no shortcuts) counts as deep: the lecture's 20 vs 56
# layers (a 16-layer plain ReLU net still beats a linear model on Fashion-MNIST; 50 layers do not)
DEEP_LAYERS = 20


@dataclass
class Remedy:
    set: str  # the `--set` override that names the change, e.g. "optimizer.name=adam"
    why: str
    also: list[str] = field(default_factory=list)  # overrides applied with it (the new optimizer's usual lr)

    @property
    def sets(self) -> list[str]:
        """Every override of this remedy, to be applied together."""
        return [self.set, *self.also]

    @property
    def command(self) -> str:
        """The remedy as command-line options: `--set a --set b` (shell-quoted)."""
        return shell_command(*(word for s in self.sets for word in ("--set", s)))


@dataclass
class Diagnosis:
    verdict: str
    causes: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    remedies: list[Remedy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    provisional: bool = False  # the run never finished (killed, or still running)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for r, remedy in zip(out["remedies"], self.remedies):
            r["sets"] = remedy.sets
        return out

    def add_remedy(self, setting: str, why: str, current: Optional[Config] = None, also: tuple[str, ...] = ()) -> None:
        """Add a remedy unless its key already has one, or (given the config) it changes nothing.
        `also` are overrides that make the change complete; those that change nothing are dropped."""
        key, _, value = setting.partition("=")
        if current is not None and _current_value(current, key) == value:
            return
        also_needed = [
            s for s in also if current is None or _current_value(current, s.partition("=")[0]) != s.partition("=")[2]
        ]
        if all(r.set.split("=", 1)[0] != key for r in self.remedies):
            self.remedies.append(Remedy(setting, why, also_needed))

    def add_optimizer(self, name: str, why: str, current: Config) -> None:
        """Switch the optimizer, at that optimizer's usual learning rate."""
        self.add_remedy(f"optimizer.name={name}", why, current=current, also=(f"optimizer.lr={_g(USUAL_LR[name])}",))


def _current_value(cfg: Config, dotted: str) -> Optional[str]:
    """The config's value at `dotted` as a --set value would spell it."""
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    if isinstance(node, bool):
        return str(node).lower()
    if isinstance(node, float):
        return _g(node)
    return str(node)


def _g(x: Optional[float]) -> str:
    """A number as the evidence shows it."""
    if x is None:
        return "n/a"
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.2g}"


def _skill(x: Optional[float]) -> str:
    """A skill as the evidence shows it: two decimals, never -0.00."""
    return "n/a" if x is None else f"{round(x, 2) + 0.0:.2f}"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _rate(values: list[float], window: int) -> float:
    """Mean relative decrease per epoch over the last `window` epochs (positive: falling)."""
    if len(values) < 2:
        return 0.0
    w = min(window, len(values) - 1)
    start, end = values[-w - 1], values[-1]
    if not (_finite(start) and _finite(end)) or start <= 0:
        return 0.0
    return (start - end) / start / w


def _fall(values: list[float], window: int) -> float:
    """Mean absolute decrease per epoch over the last `window` epochs (positive: falling)."""
    if len(values) < 2:
        return 0.0
    w = min(window, len(values) - 1)
    start, end = values[-w - 1], values[-1]
    return (start - end) / w if _finite(start) and _finite(end) else 0.0


class _Run:
    """What the rules read, derived once from the records."""

    def __init__(self, history: list[dict[str, Any]], cfg: Config, summary: dict[str, Any]) -> None:
        self.cfg, self.summary = cfg, summary
        self.th: DiagnosisConfig = cfg.diagnosis
        self.init = history[0] if history and history[0].get("epoch") == 0 else None
        self.epochs = [r for r in history if r.get("epoch", 0) > 0]
        self.classes = int((summary.get("data") or {}).get("num_classes") or 10)
        # chance from the data: the training split's class prior (`baselines`)
        self.base = baselines.of_summary(summary, self.classes)
        self.chance = self.base.chance
        self.fit_metric = self.base.fit_metric  # accuracy, or balanced_accuracy for a class-weighted loss
        self.ln_c = math.log(self.classes)
        self.init_loss = self.init["train_loss"] if self.init and _finite(self.init.get("train_loss")) else self.ln_c
        self.train_loss = [r.get("train_loss") for r in self.epochs]
        self.has_val = any(_finite(r.get("val_loss")) for r in self.epochs)
        self.last = self.epochs[-1] if self.epochs else {}
        self.target = self.th.target_train_accuracy or self.base.accuracy_at(self.th.poor_train_margin)
        self.kept = kept_metrics(summary, history)
        ref = summary.get("reference")
        self.reference = ref if isinstance(ref, dict) and _finite(self.fit(ref)) else None

    def fit(self, record: dict[str, Any], split: str = "train") -> Optional[float]:
        """The accuracy the fit is judged on (`fit_metric`) of a record, the kept metrics or the
        reference; None where it was not recorded."""
        value = record.get(f"{split}_{self.fit_metric}")
        return value if _finite(value) else None

    def skill(self, accuracy: Optional[float]) -> Optional[float]:
        return self.base.accuracy_skill(accuracy)

    def at_chance(self, accuracy: Optional[float]) -> bool:
        """The net predicts the prior: its accuracy skill is below `chance_skill`."""
        skill = self.skill(accuracy)
        return skill is not None and skill < self.th.chance_skill

    def improving(self, losses: list[float]) -> bool:
        """Still falling: by more than `improving_rate` of itself and more than `improving_floor`
        of the prior's cross-entropy per epoch, over the window."""
        th = self.th
        return _rate(losses, th.window) > th.improving_rate and _fall(losses, th.window) > th.improving_floor * self.base.prior_loss

    def solved(self) -> bool:
        """The task is solved at the last epoch: training and validation accuracy skills at least
        `solved_skill`, or the validation loss skill at least that."""
        th, last = self.th, self.last
        train, val = self.skill(self.fit(last)), self.skill(self.fit(last, "val"))
        if train is not None and val is not None and min(train, val) >= th.solved_skill:
            return True
        loss_skill = self.base.loss_skill(last.get("val_loss"))
        return loss_skill is not None and loss_skill >= th.solved_skill

    def one_class(self) -> Optional[str]:
        """The class the net predicts for every training example, when it does (the kept model's
        per-class recall: 1 for one class, 0 for the others), else None."""
        per_class = self.summary.get("per_class") if isinstance(self.summary.get("per_class"), dict) else {}
        recall = (per_class.get("recall") or {}).get("train")
        if per_class.get("epoch") != self.last.get("epoch") or not isinstance(recall, list):
            return None
        present = [(c, r) for c, r in enumerate(recall) if r is not None]
        ones = [c for c, r in present if r == 1.0]
        if len(ones) == 1 and all(r == 0.0 for c, r in present if c != ones[0]):
            return self.base.class_name(ones[0])
        return None

    def fit_words(self, accuracy: Optional[float]) -> str:
        """`training accuracy 0.901 (skill 0)`: the fit measure, raw and on the skill scale."""
        name = "accuracy" if self.fit_metric == "accuracy" else "balanced accuracy"
        skill = self.skill(accuracy)
        return f"training {name} {_g(accuracy)} (skill {_skill(skill)})"

    def below_reference(self) -> bool:
        """The kept model fits its training set worse than the linear reference on the same
        examples (beyond the margin, on the skill scale), and does not make up for it on
        validation."""
        ref, kept, margin = self.reference, self.kept, self.th.reference_margin
        if ref is None or self.fit(kept) is None:
            return False
        if self.skill(self.fit(kept)) >= self.skill(self.fit(ref)) - margin:
            return False
        # better on validation than the linear model: regularization at work, not a failed fit
        kept_val, ref_val = self.fit(kept, "val"), self.fit(ref, "val")
        return not (kept_val is not None and ref_val is not None and kept_val > ref_val)

    def reference_words(self) -> str:
        """The kept model's fit against the linear reference's, raw and in skill."""
        ref, kept = self.reference, self.kept
        return (
            f"training {self.fit_metric.replace('_', ' ')} {_g(self.fit(kept))} vs {_g(self.fit(ref))} for a linear "
            f"model on the same examples (skill {_skill(self.skill(self.fit(kept)))} vs {_skill(self.skill(self.fit(ref)))}; "
            f"validation {_g(self.fit(kept, 'val'))} vs {_g(self.fit(ref, 'val'))})"
        )

    def deep_plain(self) -> Optional[str]:
        """Words for a deep net without shortcuts (the degradation problem), else None."""
        m = self.cfg.model
        if m.arch == "resnet":
            return f"a {m.resnet_depth}-layer resnet without shortcuts" if m.shortcut == "none" else None
        n = len(m.layer_widths)
        if n >= DEEP_LAYERS and not m.residual:
            return f"{n} hidden layers with no shortcuts" + (" and no normalization" if m.norm == "none" else "")
        return None

    def series(self, key: str) -> list[tuple[int, Any]]:
        """(epoch, value) for every record with `key`, epoch 0 included."""
        records = ([self.init] if self.init else []) + self.epochs
        return [(r["epoch"], r[key]) for r in records if r.get(key) is not None]


def diagnose(history: list[dict[str, Any]], cfg: Config, summary: Optional[dict[str, Any]] = None) -> Diagnosis:
    """The verdict on one run.

    Args:
        history: metrics.jsonl records (epoch 0 = at initialization, then one per epoch).
        cfg: the run's config (thresholds under `cfg.diagnosis`).
        summary: summary.json (status, data.num_classes); optional.
    Returns:
        A Diagnosis: verdict, causes, evidence, remedies (as `--set` overrides), warnings.
    """
    run = _Run(history, cfg, summary or {})
    if run.summary.get("status") == "diverged" or any(not _finite(v) for v in run.train_loss):
        return _diverged(run)
    if not run.epochs:
        d = Diagnosis("undertrained", evidence=["no epoch finished: nothing to judge yet"])
        d.add_remedy(f"train.epochs={max(cfg.train.epochs, 1)}", "let at least one epoch finish", current=run.cfg)
        return d
    d = _judge_training(run)
    if d is None:
        d = _judge_generalization(run)
    _general_warnings(run, d)
    status = run.summary.get("status")
    if not status or status in ("unfinished", "interrupted", "failed"):
        d.provisional = True
        why = {
            "interrupted": "the run was interrupted",
            "failed": f"the run failed ({run.summary.get('reason', 'see summary.json')})",
        }.get(status, "the run never finished (no summary.json: it was killed, or is still running)")
        d.warnings.insert(0, f"{why}: a provisional verdict after {len(run.epochs)} of {run.cfg.train.epochs} epochs")
    return d


def solved(history: list[dict[str, Any]], cfg: Config, summary: Optional[dict[str, Any]] = None) -> bool:
    """Whether the run had solved its task at its last epoch (`diagnosis.solved_skill`): such a
    run is never undertrained, and `dnnlab fix` never calls a change to it a fix."""
    run = _Run(history, cfg, summary or {})
    return bool(run.epochs) and run.solved()


# ---------------------------------------------------------------- 0. divergence


def _diverged(run: _Run) -> Diagnosis:
    d = Diagnosis("diverged", causes=["lr-too-high"])
    limit = run.cfg.train.divergence_factor * max(run.init_loss, run.ln_c)
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


def _training_causes(run: _Run, d: Diagnosis, progress: float, improving: bool) -> None:
    th = run.th
    for cause, evidence in _instrument_findings(run):
        d.causes.append(cause)
        d.evidence.append(evidence)
    losses = [run.init_loss] + run.train_loss
    # a rise counts when it is more than noise: 1% of the loss (a flat loss at chance wobbles)
    rises = sum(1 for a, b in zip(losses, losses[1:]) if b > a * 1.01)
    if len(losses) >= 4 and (rises / (len(losses) - 1) >= th.lr_oscillation or losses[-1] > run.init_loss * 1.05):
        d.causes.append("lr-too-high")
        d.evidence.append(f"training loss rose in {rises} of {len(losses) - 1} epochs; {_g(run.init_loss)} at init, {_g(losses[-1])} at the end")
    if d.causes:
        return
    deep = run.deep_plain()
    if deep:
        d.causes.append("depth-degradation")
        d.evidence.append(
            f"{deep}, and the instruments show no vanishing gradients, dead units or saturation: the degradation "
            "problem of deep plain nets (He et al. 2016), which fit their training set worse than shallower ones"
        )
        return
    updates = run.last.get("update_ratio") or []
    median_update = sorted(updates)[len(updates) // 2] if updates else None
    if progress < th.min_progress:
        if median_update is not None and median_update < th.low_update_ratio:
            d.causes.append("lr-too-low")
            d.evidence.append(f"median update/weight ratio {_g(median_update)} per step (< {_g(th.low_update_ratio)}; about 1e-3 is healthy)")
        elif median_update is None and rises == 0:
            d.causes.append("lr-too-low")
        else:
            d.causes.append("plateau")
            if median_update is not None:
                d.evidence.append(f"gradients are healthy and steps are not small (update/weight ratio {_g(median_update)}), yet the loss does not move")
    elif not improving and run.at_chance(run.fit(run.last) or 0.0):
        # a net at chance has learned nothing: it has not converged, whatever its loss did
        d.causes.append("plateau")
        one = run.one_class()
        d.evidence.append(
            f"{run.fit_words(run.fit(run.last))} is at chance (skill < {_g(th.chance_skill)}): "
            + (f"predicting {one!r} for every example, " if one is not None else "")
            + "the net has not started to learn"
        )
    elif not improving and run.below_reference():
        d.causes.append("plateau")
        d.evidence.append(
            "the loss has stopped falling well short of what a linear model reaches on the same examples: "
            "optimization, not capacity, holds this net back"
        )
    elif not improving:
        d.causes.append("insufficient-capacity")
        d.evidence.append("the training loss has converged with healthy gradients and no dead or saturated layers")


def _training_remedies(run: _Run, d: Diagnosis) -> None:
    cfg = run.cfg
    m, opt = cfg.model, cfg.optimizer
    lr = opt.lr
    for cause in d.causes:
        if cause in ("vanishing-gradients", "saturation"):
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
        elif cause == "dead-units":
            d.add_remedy("model.activation=leaky_relu", "a leaky slope (0.01) keeps a gradient for negative inputs, so units cannot die", current=run.cfg)
            _lower_lr(run, d, "large steps push units into the dead region")
        elif cause in ("exploding-gradients", "lr-too-high"):
            _lower_lr(run, d, f"the loss rises or oscillates: lr {_g(lr)} overshoots")
            d.add_remedy("optimizer.clip_norm=1.0", "clipping bounds each step", current=run.cfg, also=(f"optimizer.lr={_g(_lower(run))}",))
        elif cause == "lr-too-low":
            usual = USUAL_LR[opt.name]
            higher = usual if lr < usual / 10 else lr * 10
            d.add_remedy(f"optimizer.lr={_g(higher)}", f"the loss barely moves from its initial value at lr {_g(lr)}", current=run.cfg)
            if opt.name not in ADAPTIVE:
                d.add_optimizer("adam", "Adam's steps are about lr in size whatever the gradient's scale", run.cfg)
        elif cause == "depth-degradation":
            _structural_remedies(run, d)
        elif cause == "plateau":
            if m.activation in ("sigmoid", "tanh"):
                d.add_remedy("model.activation=relu", f"{m.activation} units in their flat regions pass almost no gradient; ReLU does", current=run.cfg)
            if opt.name in ("sgd",):
                d.add_optimizer("momentum", "momentum carries the weights across flat regions and saddle points", run.cfg)
            d.add_optimizer("adam", "adaptive learning rates leave plateaus faster", run.cfg)
            d.add_remedy(f"optimizer.lr={_g(lr * 3)}", "a larger step leaves the flat region", current=run.cfg)
        elif cause == "insufficient-capacity":
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
        f"({_g(100 * progress)}% lower; loss skill {_skill(run.base.loss_skill(loss))} against the prior's cross-entropy "
        f"{_g(run.base.prior_loss)})"
    )
    _training_causes(run, d, progress, improving)
    hard = {"vanishing-gradients", "exploding-gradients", "dead-units", "saturation", "lr-too-high"}
    # still improving is undertrained, unless a linear model already fits the training set better
    if progress >= th.min_progress and improving and not hard & set(d.causes) and not below_reference:
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


# ---------------------------------------------------------------- 2. then validation


def _judge_generalization(run: _Run) -> Diagnosis:
    d = _judge_validation(run)
    # the instruments may contradict a good fit: say so, whatever the accuracy
    for cause, evidence in _instrument_findings(run):
        d.warnings.append(f"{cause} although the net fits its training set: {evidence}")
    return d


def _judge_validation(run: _Run) -> Diagnosis:
    th, cfg = run.th, run.cfg
    acc = run.fit(run.last)
    fit_line = f"{run.fit_words(acc)} at epoch {run.last['epoch']} (good: >= {_g(run.target)}; chance {run.base.chance_words()})"
    if run.reference is not None:
        ref = run.fit(run.reference)
        fit_line += f"; a linear model reaches {_g(ref)} (skill {_skill(run.skill(ref))}) on the same examples"
    if not run.has_val:
        d = Diagnosis("good-fit", evidence=[fit_line])
        d.warnings.append("no validation split (data.validation_split = 0): overfitting cannot be judged")
        return d
    val = [(r["epoch"], r["val_loss"]) for r in run.epochs if _finite(r.get("val_loss"))]
    best_epoch, best_val = min(val, key=lambda ev: ev[1])
    last_epoch, last_val = val[-1]
    after = sum(1 for e, _ in val if e > best_epoch)
    rise = (last_val - best_val) / best_val if best_val > 0 else 0.0
    train_at_best = next(r["train_loss"] for r in run.epochs if r["epoch"] == best_epoch)
    # a rise of a loss near 0 by a few percent of itself is noise: it must also exceed the floor
    noticeable = last_val - best_val > th.improving_floor * run.base.prior_loss
    rising = after >= th.overfit_patience and rise > th.overfit_rise and noticeable and run.last["train_loss"] < train_at_best
    val_acc = run.fit(run.last, "val")
    gap = acc - val_acc if val_acc is not None else 0.0
    if rising or gap > th.overfit_gap:
        d = Diagnosis("overfitting", evidence=[fit_line])
        if rising:
            d.evidence.append(
                f"validation loss reached its minimum {_g(best_val)} at epoch {best_epoch}, then rose to {_g(last_val)} "
                f"(+{_g(100 * rise)}%) over {after} epochs while the training loss fell {_g(train_at_best)} -> {_g(run.last['train_loss'])}"
            )
        if gap > th.overfit_gap:
            d.evidence.append(f"train - validation accuracy gap {_g(gap)} ({_g(acc)} vs {_g(val_acc)}; > {_g(th.overfit_gap)})")
        es = cfg.train.early_stopping
        if not es.enabled:
            d.add_remedy("train.early_stopping.enabled=true", f"stop at the validation minimum and keep its weights: epoch {best_epoch} here", current=run.cfg)
        if cfg.model.dropout < 0.5:
            d.add_remedy("model.dropout=0.5", "dropout trains an ensemble of thinned nets that cannot co-adapt", current=run.cfg)
        if cfg.regularization.l2 == 0 and cfg.regularization.weight_decay == 0:
            d.add_remedy("regularization.l2=0.0001", "weight decay keeps the weights small: a smoother function", current=run.cfg)
        else:
            d.add_remedy(f"regularization.l2={_g(max(cfg.regularization.l2, 1e-5) * 10)}", "stronger weight decay", current=run.cfg)
        if cfg.data.train_size is not None:
            d.add_remedy("data.train_size=null", "more training data is the surest remedy: the training set was subsampled", current=run.cfg)
        return d
    val_rate = _rate([v for _, v in val], th.window)
    # a solved task is done, however fast its tiny loss still falls in relative terms
    if run.improving([v for _, v in val]) and last_epoch == best_epoch and not run.solved():
        d = Diagnosis("undertrained", evidence=[fit_line])
        d.evidence.append(f"validation loss still falling {_g(100 * val_rate)}% per epoch at the last epoch ({_g(last_val)} at epoch {last_epoch})")
        d.add_remedy(f"train.epochs={cfg.train.epochs * 2}", "both losses were still improving when the budget ran out", current=run.cfg)
        if not cfg.train.early_stopping.enabled:
            d.add_remedy("train.early_stopping.enabled=true", "with a larger budget, let early stopping find the end", current=run.cfg)
        return d
    d = Diagnosis("good-fit", evidence=[fit_line])
    d.evidence.append(
        f"validation accuracy {_g(val_acc)}, gap {_g(gap)} (<= {_g(th.overfit_gap)}); validation loss at its minimum "
        f"{_g(best_val)} at epoch {best_epoch} of {last_epoch}, {_g(100 * rise)}% above it at the end"
    )
    return d


def _general_warnings(run: _Run, d: Diagnosis) -> None:
    s = run.summary
    base = run.base
    if base.imbalanced(run.th.imbalance_share):
        kept = run.kept
        per_class = (s.get("per_class") or {}).get("recall") or {} if isinstance(s.get("per_class"), dict) else {}
        split = "val" if per_class.get("val") else "test"
        recall = per_class.get(split) or []
        shown = ", ".join(f"{base.class_name(c)!r} {_g(r)}" for c, r in enumerate(recall) if r is not None)
        d.warnings.append(
            f"imbalanced classes: {base.class_name(base.majority_class)!r} holds {_g(100 * base.majority)}% of the "
            f"training split, so accuracy flatters a net that favours it; balanced accuracy {_g(kept.get(f'{split}_balanced_accuracy'))} "
            f"on {'validation' if split == 'val' else 'test'}" + (f" (recall per class: {shown})" if shown else "")
        )
    if len(run.epochs) == 1:
        d.warnings.append("only one epoch: trends (still improving, rising validation loss) cannot be judged")
    if run.init and _finite(run.init.get("train_loss")) and run.init["train_loss"] > 2 * run.ln_c:
        d.warnings.append(
            f"initial loss {_g(run.init['train_loss'])} is far above ln(C) = {_g(run.ln_c)}: the initial logits are too large (check model.init)"
        )
    best, ran = s.get("best_epoch"), s.get("epochs_run")
    if s.get("restored_best") and best and ran and best < 0.5 * ran:
        val = {r["epoch"]: r.get("val_loss") for r in run.epochs if _finite(r.get("val_loss"))}
        at_best, at_end = val.get(best), val.get(max(val)) if val else None
        rose = at_best is not None and at_end is not None and at_end - at_best > max(
            run.th.overfit_rise * at_best, run.th.improving_floor * run.base.prior_loss
        )
        if rose:
            d.warnings.append(
                f"early stopping restored epoch {best}, far before the end (epoch {ran}): the validation loss rose "
                f"{_g(at_best)} -> {_g(at_end)} after it: most of the budget was spent overfitting"
            )
        else:
            d.warnings.append(
                f"early stopping restored epoch {best}, far before the end (epoch {ran}), yet the validation loss did "
                f"not rise after it ({_g(at_best)} -> {_g(at_end)}): not overfitting; the monitored "
                f"{s.get('monitor') or 'metric'} stopped improving, and most of the budget was spent without progress"
            )
