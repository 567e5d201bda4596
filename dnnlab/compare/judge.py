"""The one judge of "better beyond the noise", and what reads it.

A difference between two means over seeds (B minus A) counts only beyond its noise
(`noise_band`: the largest of half a point, the seeds' spreads added, and, for a proportion,
1.96 standard errors of the split sizes); `beyond` makes the call (+1, -1, or 0 within the
noise), and `shift` makes it for two groups on one measure of one split. Three readers:

- the comparative verdict (`classify`, `CALLS`): the calls on training and on validation;
- `dnnlab fix` (`dnnlab.sweep.fix`): whether a remedy's training or validation measure rose or
  fell against the control's;
- claims (`check`, on `Side`s): that B is higher, lower, the same as or not lower than A, as
  the lecture's reproduction states them. A "same" claim also needs a noise no wider than
  `same_within`: within a wide noise, "the same" is not shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from dnnlab import runs
from dnnlab.compare.groups import Group

TOLERANCE = 0.005  # accuracy differences below half a point are "the same" ...
# ... and so are those within the seeds' spread or 1.96 two-proportion standard errors of the split sizes


def _noise(pa: float, na: Optional[float], pb: float, nb: Optional[float]) -> float:
    """1.96 standard errors of a difference of two accuracies measured on na and nb examples."""
    if not na or not nb:
        return 0.0
    return 1.96 * math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)


def noise_band(
    a: tuple[float, float, Optional[float]], b: tuple[float, float, Optional[float]], proportion: bool = True
) -> float:
    """The noise of a difference between two means over seeds, each side (mean, standard deviation
    over the seeds, examples it was measured on): the largest of half a point (TOLERANCE, in the
    measure's own units), the seeds' spread (the two standard deviations added), and, for a
    proportion such as an accuracy, 1.96 standard errors of the split sizes (math.inf examples:
    a known constant, such as chance). The one rule of every comparative verdict."""
    (ma, sa, na), (mb, sb, nb) = a, b
    return max(TOLERANCE, sa + sb, _noise(ma, na, mb, nb) if proportion else 0.0)


def _r2_noise(ra: float, na: Optional[float], rb: float, nb: Optional[float]) -> float:
    """1.96 standard errors of a difference of two R^2 measured on na and nb examples: the
    large-sample variance of R^2, 4 R^2 (1 - R^2)^2 / n (R^2 clipped to [0, 1])."""
    if not na or not nb:
        return 0.0
    var = lambda r, n: 4 * min(max(r, 0.0), 1.0) * (1 - min(max(r, 0.0), 1.0)) ** 2 / n  # noqa: E731
    return 1.96 * math.sqrt(var(ra, na) + var(rb, nb))


def tolerance(a: Group, b: Group, split: str, measure: str = "accuracy") -> float:
    """The noise of a difference in `split` accuracy (or `measure`: loss) between two groups:
    `noise_band` of their means and spreads over the seeds. A loss has no split-size term (the
    runs do not record the per-example losses' spread)."""
    (ma, sa), (mb, sb) = a.stat(f"{split}_{measure}"), b.stat(f"{split}_{measure}")
    if ma is None or mb is None:
        return TOLERANCE
    if measure == "r2":  # the seeds' spread and the split sizes, as for an accuracy
        return max(TOLERANCE, sa + sb, _r2_noise(ma, a.size(split), mb, b.size(split)))
    proportion = measure in ("accuracy", "balanced_accuracy")
    return noise_band((ma, sa, a.size(split, measure)), (mb, sb, b.size(split, measure)), proportion=proportion)


def beyond(difference: float, noise: float) -> int:
    """The call on a difference (B minus A): 1 when B is higher beyond the noise, -1 when it is
    lower beyond it, 0 within it (a difference as large as the noise is within it)."""
    return 1 if difference > noise else -1 if difference < -noise else 0


@dataclass(frozen=True)
class Shift:
    """B against A on one measure of one split: each side's mean over its seeds, and the noise of
    their difference (`tolerance`)."""

    a: Optional[float]
    b: Optional[float]
    noise: float

    @property
    def call(self) -> Optional[int]:
        """`beyond` on B minus A; None when a side has no mean (no seed finished)."""
        return None if self.a is None or self.b is None else beyond(self.b - self.a, self.noise)


def shift(a: Group, b: Group, split: str, measure: str = "accuracy") -> Shift:
    """Group `b` against group `a` on the kept models' `split` `measure` (accuracy,
    balanced_accuracy, r2 or loss), judged against `tolerance`."""
    return Shift(a.stat(f"{split}_{measure}")[0], b.stat(f"{split}_{measure}")[0], tolerance(a, b, split, measure))


# the comparative call of B against A, by its calls on training and on validation: a relation
# between two runs, so "failed-to-train" (B trains worse than A, and is not overfitting) is no
# diagnosis verdict (failed-training: a run that fit nothing); B may well have fit its training set
CALLS = {
    (-1, -1): ("failed-to-train", "worse on training AND validation: it trains worse, it is not overfitting"),
    (1, -1): ("overfits", "better on training but worse on validation: it overfits relative to the other"),
    (1, 1): ("improves-both", "better on training and validation"),
    (-1, 1): ("generalizes-better", "worse on training, better on validation: less overfitting"),
    (0, -1): ("generalizes-worse", "the same on training, worse on validation"),
    (0, 1): ("generalizes-better", "the same on training, better on validation"),
    (-1, 0): ("trains-worse", "worse on training, the same on validation"),
    (1, 0): ("trains-better", "better on training, the same on validation"),
    (0, 0): ("similar", "the same on training and validation (within the noise)"),
}


def classify(d_train: float, d_val: float, tol_train: float, tol_val: float) -> tuple[str, str]:
    """A comparative call from the accuracy differences (B minus A): (code, words)."""
    return CALLS[(beyond(d_train, tol_train), beyond(d_val, tol_val))]


# ---------------------------------------------------------------- claims

MIN_SEEDS = 2  # a side with fewer seeds has no spread to judge by
SAME_WITHIN = 0.03  # a "same" claim also needs a noise band no wider than 3 points
CLAIMS = ("higher", "lower", "same", "not lower")  # what B is claimed to be against A


@dataclass(frozen=True)
class Side:
    """One side of a check: the mean and spread of a measure over the seeds that finished."""

    label: str
    mean: Optional[float]
    std: float = 0.0
    finished: int = 0  # seeds that finished (completed or stopped early)
    seeds: int = 0  # seeds that were asked for
    examples: Optional[float] = None  # examples an accuracy was measured on (math.inf: a constant)
    constant: bool = False  # a known value (chance), not a measurement
    unfinished: str = ""  # what became of the seeds that did not finish: "2 diverged"

    def show(self) -> str:
        if self.constant:
            return f"{self.label} {self.mean:.4f}"
        if self.mean is None:
            return f"{self.label}: none of {self.seeds} seeds finished"
        missing = f" ({self.finished} of {self.seeds} seeds; {self.unfinished})" if self.finished < self.seeds else ""
        return f"{self.label} {self.mean:.4f} ± {self.std:.4f}{missing}"


def _tally(outcomes: list[str]) -> str:
    return ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))


def side(group: Group, metric: str, label: str) -> Side:
    """`metric` of the kept models of a group's seeds, by `runs.seed_stats` (the seeds that
    finished; the others are named by their status)."""
    mean, std, n = runs.seed_stats([r.summary for r in group.runs], metric)
    lost = _tally([r.status for r in group.runs if r.status not in runs.FINISHED])
    if n < len(group.runs) and not lost:
        lost = f"{len(group.runs) - n} without {metric}"
    return Side(label, mean, std, n, len(group.runs), group.size(metric.split("_")[0]), unfinished=lost)


def values_side(label: str, values: list[Optional[float]], examples: Optional[float] = None) -> Side:
    """A side from one value per seed (None: the seed has none), by the same rule as `side`."""
    summaries = [{"status": "completed", "final": {"value": v}} if v is not None else {} for v in values]
    mean, std, n = runs.seed_stats(summaries, "value")
    return Side(label, mean, std, n, len(values), examples, unfinished=f"{len(values) - n} missing" if n < len(values) else "")


def constant(label: str, value: float) -> Side:
    return Side(label, value, 0.0, examples=math.inf, constant=True)


@dataclass(frozen=True)
class Check:
    """One claimed relation between two sides, judged against the noise."""

    what: str
    a: Side
    b: Side
    claim: str
    difference: Optional[float]  # b minus a
    tolerance: Optional[float]
    ok: bool
    why: str

    def text(self) -> str:
        if self.difference is None or self.tolerance is None:
            return f"{self.what}: {self.b.show()} against {self.a.show()}: **no**, {self.why}"
        return (
            f"{self.what}: {self.b.show()} against {self.a.show()}: difference {self.difference:+.4f}, "
            f"noise ±{self.tolerance:.4f}: **{'yes' if self.ok else 'no'}**, {self.why}"
        )


def check(what: str, a: Side, b: Side, claim: str, proportion: bool = True, same_within: float = SAME_WITHIN) -> Check:
    """Judge the claim that `b` is `claim` (higher, lower, same, not lower) against `a`.

    An effect counts only beyond the noise (`noise_band` and `beyond`, the rule of the
    comparative verdict); one within it is a "no". "same" and "not lower" hold within the noise,
    and only where the noise is no wider than `same_within`. Every seed of each side must have
    finished (a diverged, failed or missing seed is a "no": the training itself is what varies),
    and each side needs MIN_SEEDS of them.
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim {claim!r}: choose one of {', '.join(CLAIMS)}")
    short = [s for s in (a, b) if not s.constant and (s.mean is None or s.finished < max(s.seeds, MIN_SEEDS))]
    if short:
        names = "; ".join(f"{s.label}: {s.finished} of {s.seeds} seeds finished{f' ({s.unfinished})' if s.unfinished else ''}" for s in short)
        return Check(what, a, b, claim, None, None, False, f"not judged: {names}; every seed must finish, and at least {MIN_SEEDS}")
    assert a.mean is not None and b.mean is not None
    d = b.mean - a.mean
    tol = noise_band((a.mean, a.std, a.examples), (b.mean, b.std, b.examples), proportion)
    call = beyond(d, tol)
    if claim in ("higher", "lower"):
        sign = 1 if claim == "higher" else -1
        if call == sign:
            return Check(what, a, b, claim, d, tol, True, f"{claim} beyond the noise")
        if call == -sign:
            return Check(what, a, b, claim, d, tol, False, f"{'lower' if claim == 'higher' else 'higher'} beyond the noise: the opposite of the claim")
        return Check(what, a, b, claim, d, tol, False, f"the same within the noise: {claim} needs a difference beyond {sign * tol:+.4f}")
    if call == -1 or (claim == "same" and call == 1):
        return Check(what, a, b, claim, d, tol, False, f"{'differs' if claim == 'same' else 'lower'} beyond the noise: the claim says {claim}")
    if tol > same_within:
        return Check(what, a, b, claim, d, tol, False, f"within the noise, but the noise ({tol:.4f}) is wider than {same_within} and cannot show that they are {claim}")
    return Check(what, a, b, claim, d, tol, True, "within the noise" if claim == "same" else "not lower beyond the noise")
