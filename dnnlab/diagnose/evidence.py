"""What the rules read and write: the names of the verdicts and causes, a Remedy, a Diagnosis,
and the run as the rules see it (derived once from its records).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from dnnlab import baselines
from dnnlab.config import Config, DiagnosisConfig
from dnnlab.runs import kept_metrics, set_options

VERDICTS = ("good-fit", "overfitting", "failed-training", "diverged", "undertrained")
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
        return set_options(self.sets)


@dataclass
class Diagnosis:
    verdict: str
    causes: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    remedies: list[Remedy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    provisional: bool = False  # the run never finished (killed, or still running)
    resume: bool = False  # it stopped before its epoch budget: `dnnlab run --resume` comes first

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
        # data.task: regression: the fit is the R^2 (already a skill), judged on its own thresholds
        self.regression = bool(getattr(self.base, "regression", False))
        if self.regression:
            self.target = self.th.poor_train_r2
            self.chance_threshold, self.gap_threshold, self.fit_name = self.th.chance_r2, self.th.overfit_gap_r2, "R^2"
        else:
            self.target = self.th.target_train_accuracy or self.base.accuracy_at(self.th.poor_train_margin)
            self.chance_threshold, self.gap_threshold, self.fit_name = self.th.chance_skill, self.th.overfit_gap, "accuracy"
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
        return skill is not None and skill < self.chance_threshold

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
        if self.regression:
            return f"training R^2 {_g(accuracy)}"
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
        if self.regression:
            return (
                f"training R^2 {_g(self.fit(kept))} vs {_g(self.fit(ref))} for least squares on the same examples "
                f"(validation {_g(self.fit(kept, 'val'))} vs {_g(self.fit(ref, 'val'))})"
            )
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


def solved(history: list[dict[str, Any]], cfg: Config, summary: Optional[dict[str, Any]] = None) -> bool:
    """Whether the run had solved its task at its last epoch (`diagnosis.solved_skill`): such a
    run is never undertrained, and `dnnlab fix` never calls a change to it a fix."""
    run = _Run(history, cfg, summary or {})
    return bool(run.epochs) and run.solved()
