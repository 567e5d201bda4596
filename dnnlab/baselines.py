"""Chance from the data: the training split's class prior, and the skill scale every verdict uses.

A net that predicts the prior for every example has learned nothing, whatever its accuracy: on a
table whose largest class holds 90% of the examples it is 90% accurate. So chance comes from the
training split's class counts (and from the loss's class weights, when `train.class_weight` sets
them), never from the number of classes alone:

- the prior q: each class's share of the training split (of its total weight, with class weights);
- chance accuracy: the largest class's share (`majority`), the accuracy of always predicting it;
  with class weights the fit is judged on balanced accuracy (the mean per-class recall), whose
  chance is 1/C;
- chance loss: the cross-entropy of predicting q for every example, H(q) (ln C when balanced);
- skill: 0 for the prior predictor, 1 for a perfect fit: (acc - chance) / (1 - chance) for an
  accuracy, 1 - loss / H(q) for a loss.

`of_summary` is the one place a run's baselines come from: the diagnosis, the report, `compare`,
`fix`, `data inspect` and the run's header all read them here. Under `data.task: regression`
(`RegressionBaselines`) chance is the training mean: the fit's skill is its R^2, the chance loss
1 (the standardized MSE of the mean). Imports only the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from dnnlab.runs.read import is_number


@dataclass(frozen=True)
class Baselines:
    """What a net that learned nothing scores on a run's data (see the module's docstring)."""

    counts: tuple[int, ...]  # training examples of each class
    weights: Optional[tuple[float, ...]] = None  # the loss's class weights; None: unweighted
    names: tuple[str, ...] = ()  # the class names, when the data have them

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def weighted(self) -> bool:
        return self.weights is not None

    @property
    def prior(self) -> tuple[float, ...]:
        """Each class's share of the training split (of its total weight, with class weights)."""
        weights = self.weights or (1.0,) * len(self.counts)
        mass = [n * w for n, w in zip(self.counts, weights)]
        total = sum(mass)
        return tuple(m / total for m in mass) if total > 0 else tuple(1.0 / len(mass) for _ in mass)

    @property
    def majority_class(self) -> int:
        return max(range(self.num_classes), key=lambda c: self.counts[c])

    @property
    def majority(self) -> float:
        """The largest class's share of the training split: the accuracy of always predicting it."""
        total = sum(self.counts)
        return self.counts[self.majority_class] / total if total > 0 else 1.0 / self.num_classes

    @property
    def prior_loss(self) -> float:
        """H(q): the cross-entropy of predicting the prior for every example (ln C when balanced)."""
        return -sum(q * math.log(q) for q in self.prior if q > 0)

    @property
    def fit_metric(self) -> str:
        """The accuracy a fit is judged on: `accuracy`, or `balanced_accuracy` when the loss is
        class-weighted (the net is asked to treat the classes alike, not to be right most often)."""
        return "balanced_accuracy" if self.weighted else "accuracy"

    @property
    def chance(self) -> float:
        """The fit measure's chance: the majority share, or 1/C (of the classes present) for
        balanced accuracy."""
        if self.weighted:
            return 1.0 / max(1, sum(1 for n in self.counts if n > 0))
        return self.majority

    def accuracy_skill(self, accuracy: Optional[float]) -> Optional[float]:
        """(accuracy - chance) / (1 - chance): 0 at chance, 1 for a perfect fit."""
        if not _number(accuracy):
            return None
        return (accuracy - self.chance) / (1 - self.chance) if self.chance < 1 else 0.0

    def accuracy_at(self, skill: float) -> float:
        """The accuracy of a skill: chance + skill * (1 - chance)."""
        return self.chance + skill * (1 - self.chance)

    def loss_skill(self, loss: Optional[float]) -> Optional[float]:
        """1 - loss / H(prior): 0 for predicting the prior, 1 for a loss of 0."""
        if not _number(loss):
            return None
        return 1 - loss / self.prior_loss if self.prior_loss > 0 else 0.0

    def imbalanced(self, share: float) -> bool:
        """Whether the largest class holds more than `share` of the training split."""
        return self.majority > share

    def imbalance_warning(self, share: float) -> Optional[str]:
        """What to say before training on imbalanced data (`imbalanced`), else None."""
        if not self.imbalanced(share):
            return None
        return (
            f"imbalanced classes: {self.class_name(self.majority_class)!r} holds {100 * self.majority:.1f}% of the "
            f"training split (more than diagnosis.imbalance_share {share:g}): a net that always predicts it is "
            f"{self.majority:.3f} accurate. dnnlab judges the fit against that prior, and reports balanced accuracy "
            "and each class's recall; train.class_weight: balanced makes every class weigh as much in the loss"
        )

    def class_name(self, c: int) -> str:
        return self.names[c] if c < len(self.names) else str(c)

    def chance_words(self) -> str:
        """Chance for the evidence: `0.101 (the largest class's share, about 1/10)`,
        `0.901 (the largest class's share: 'no')`."""
        if self.weighted:
            return f"{_g(self.chance)} (1/C, for balanced accuracy)"
        if self.majority < 1.5 / self.num_classes:  # about balanced
            return f"{_g(self.majority)} (the largest class's share, about 1/{self.num_classes})"
        return f"{_g(self.majority)} (the largest class's share: {self.class_name(self.majority_class)!r})"


@dataclass(frozen=True)
class RegressionBaselines:
    """What a net that learned nothing scores under `data.task: regression`: it predicts the
    training mean. R^2 is already on the skill scale (0: the mean predictor, 1: a perfect fit), so
    the fit is judged on it directly; the chance loss, the mean squared error of the mean on
    standardized targets, is 1. The same interface as `Baselines`."""

    mean: float = 0.0  # the training split's target mean and standard deviation
    std: float = 1.0
    counts: tuple[int, ...] = ()
    weights: Optional[tuple[float, ...]] = None
    names: tuple[str, ...] = ()
    num_classes: int = 1
    majority: float = 0.0
    majority_class: int = 0
    fit_metric: str = "r2"
    chance: float = 0.0
    prior_loss: float = 1.0
    regression: bool = True

    @property
    def weighted(self) -> bool:
        return False

    def accuracy_skill(self, r2: Optional[float]) -> Optional[float]:
        """R^2 is the skill itself."""
        return r2 if _number(r2) else None

    def accuracy_at(self, skill: float) -> float:
        return skill

    def loss_skill(self, loss: Optional[float]) -> Optional[float]:
        """1 - standardized MSE: about the R^2 (exactly it on the training split)."""
        return 1 - loss if _number(loss) else None

    def imbalanced(self, share: float) -> bool:
        return False

    def imbalance_warning(self, share: float) -> Optional[str]:
        return None

    def class_name(self, c: int) -> str:
        return str(c)

    def chance_words(self) -> str:
        return "0 (R^2 of predicting the training mean)"


_number = is_number


def _g(x: float) -> str:
    return f"{x:.3g}"


def divergence_limit(factor: float, initial_loss: float, num_classes: int, regression: bool = False) -> float:
    """The loss above which training has diverged (`train.divergence_factor`): `factor` times the
    larger of the initial loss and the loss of knowing nothing (ln C for C classes; 1, predicting
    the mean, for standardized regression targets). Infinite when the initial loss is not finite
    (that run has diverged at its start). The one rule of the loop, the diagnosis and `check`."""
    if not math.isfinite(initial_loss):
        return math.inf
    return factor * max(initial_loss, 1.0 if regression else math.log(num_classes))


def of_summary(summary: Mapping[str, Any], num_classes: Optional[int] = None) -> Baselines:
    """A run's baselines from its summary.json (`data.class_counts.train`, `loss.class_weights`,
    `data.classes`); a summary without counts (a killed run, or one written before they were
    recorded) gets balanced classes: chance 1/C, chance loss ln C."""
    data = summary.get("data") if isinstance(summary.get("data"), Mapping) else {}
    if data.get("task") == "regression":
        target = data.get("target") if isinstance(data.get("target"), Mapping) else {}
        mean, std = target.get("mean"), target.get("std")
        return RegressionBaselines(float(mean) if _number(mean) else 0.0, float(std) if _number(std) else 1.0)  # type: ignore[return-value]
    counts = (data.get("class_counts") or {}).get("train") if isinstance(data.get("class_counts"), Mapping) else None
    if not (isinstance(counts, list) and counts and all(isinstance(n, int) for n in counts)):
        c = int(data.get("num_classes") or num_classes or 10)
        counts = [1] * c
    loss = summary.get("loss") if isinstance(summary.get("loss"), Mapping) else {}
    weights = loss.get("class_weights")
    if not (isinstance(weights, list) and len(weights) == len(counts) and all(_number(w) for w in weights)):
        weights = None
    names = data.get("classes") if isinstance(data.get("classes"), list) else []
    return Baselines(tuple(counts), tuple(float(w) for w in weights) if weights else None, tuple(str(n) for n in names))


# ---------------------------------------------------------------- class weights and per-class recall


def class_weights(setting: Any, counts: Sequence[int], names: Sequence[str] = ()) -> Optional[list[float]]:
    """The loss's weight of each class for `train.class_weight`: None for `none`; for `balanced`
    n / (C * n_c) (scikit-learn's `compute_class_weight('balanced')`, a class absent from the
    training split weighs 0); for a map from class name to weight, those weights and 1 for the
    classes it leaves out.

    Raises ValueError naming the key for a class the data do not have.
    """
    if setting is None or setting == "none":
        return None
    n, c = sum(counts), len(counts)
    if setting == "balanced":
        return [n / (c * k) if k > 0 else 0.0 for k in counts]
    labels = [str(x) for x in names] if names else [str(i) for i in range(c)]
    out = [1.0] * c
    for key, weight in dict(setting).items():
        if str(key) not in labels:
            raise ValueError(
                f"train.class_weight.{key}: no class {str(key)!r} in the data; its classes are "
                f"{', '.join(labels)}"
            )
        out[labels.index(str(key))] = float(weight)
    return out


def class_recall(correct: Sequence[float], counts: Sequence[int]) -> list[Optional[float]]:
    """Each class's recall (correct / examples of the class); None for a class with no examples."""
    return [float(k) / n if n > 0 else None for k, n in zip(correct, counts)]


def balanced_accuracy(recall: Sequence[Optional[float]]) -> Optional[float]:
    """The mean recall over the classes that have examples (scikit-learn's
    `balanced_accuracy_score`); None when none has."""
    present = [r for r in recall if r is not None]
    return sum(present) / len(present) if present else None
