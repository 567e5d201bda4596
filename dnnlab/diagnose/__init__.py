"""The recipe as rules: read a run's records and say what is wrong, with evidence and remedies.

1. Look at the TRAINING set first. Poor on training data is not overfitting: training failed
   (or it is still improving: undertrained). The causes come from the instruments. Poor is
   measured on the skill scale of `dnnlab.baselines`: chance is the training split's class
   prior, so a net that predicts the majority class of an imbalanced table fit nothing.
2. Only when training is good is validation looked at: overfitting, undertrained or good-fit.
3. Remedies follow the problem: training problems get activation / optimizer changes, never
   dropout or L2; overfitting gets early stopping, dropout and regularization.

Every threshold is a key of the config's `diagnosis:` section.
Lives here: `evidence` (the verdicts, causes, remedies and the run as the rules read it),
`training` (divergence, and the training set's causes: DETECTORS in order, CAUSE_REMEDIES by name), `validation` (the
validation set's verdicts and the warnings).
May import: config, runs, baselines. No JAX.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

from dnnlab.config import Config
from dnnlab.diagnose.evidence import VERDICTS, Diagnosis, _finite, _Run, solved
from dnnlab.diagnose.training import (
    CAUSE_REMEDIES,
    LR_CAUSES,
    _diverged,
    _judge_training,
)
from dnnlab.diagnose.validation import _general_warnings, _judge_generalization

# every cause a diagnosis can name (the registry in `training`, in its order)
CAUSES = tuple(CAUSE_REMEDIES)

__all__ = [
    "CAUSES",
    "LR_CAUSES",
    "VERDICTS",
    "Diagnosis",
    "across_seeds",
    "solved",
]



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
    else:
        d = _judge_training(run)
        if d is None:
            d = _judge_generalization(run)
        _general_warnings(run, d)
    _provisional(run, d)
    return d


def _provisional(run: _Run, d: Diagnosis) -> None:
    """A run that did not finish: its verdict is provisional, and one stopped (interrupted or
    killed) before its epoch budget is resumed first: `dnnlab run --resume RUN_DIR` trains the
    epochs it has left, so a remedy of more epochs is not one."""
    status = run.summary.get("status")
    if status and status not in ("unfinished", "interrupted", "failed"):
        return
    d.provisional = True
    why = {
        "interrupted": "the run was interrupted",
        "failed": f"the run failed ({run.summary.get('reason', 'see summary.json')})",
    }.get(status, "the run never finished (no summary.json: it was killed, or is still running)")
    line = f"{why}: a provisional verdict after {len(run.epochs)} of {run.cfg.train.epochs} epochs"
    if status != "failed" and len(run.epochs) < run.cfg.train.epochs:
        d.resume = True
        d.remedies = [r for r in d.remedies if r.set.partition("=")[0] != "train.epochs"]
        line += f"; resume it to train the other {run.cfg.train.epochs - len(run.epochs)} (dnnlab run --resume RUN_DIR) before changing anything"
    d.warnings.insert(0, line)


def across_seeds(diagnoses: Sequence[tuple[int, Diagnosis]]) -> Diagnosis:
    """The verdict on the seeds of one config, given each (seed, its Diagnosis) in seed order.

    The verdict most seeds got (a tie goes to the first seed's among them), with the causes,
    evidence and remedies of the first seed that got it, after a line that says how the seeds
    split; the warnings of every seed, once each; provisional when any seed's verdict is.
    """
    if not diagnoses:
        return Diagnosis("undertrained", evidence=["no seed finished: nothing to judge yet"])
    counts = Counter(d.verdict for _, d in diagnoses)
    top = max(counts.values())
    seed, chosen = next((s, d) for s, d in diagnoses if counts[d.verdict] == top)
    n = len(diagnoses)
    if counts[chosen.verdict] == n:
        split = f"all {n} seeds: {chosen.verdict}" if n > 1 else f"seed {seed}: {chosen.verdict}"
    else:
        split = f"{counts[chosen.verdict]} of {n} seeds: {chosen.verdict} (" + ", ".join(
            f"seed {s}: {d.verdict}" for s, d in diagnoses if d.verdict != chosen.verdict) + ")"
    warnings: list[str] = []
    for _, d in diagnoses:
        warnings += [w for w in d.warnings if w not in warnings]
    if n > 1:
        split += f"; the evidence and remedies are seed {seed}'s"
    return Diagnosis(
        chosen.verdict, list(chosen.causes), [split, *chosen.evidence],
        list(chosen.remedies), warnings, any(d.provisional for _, d in diagnoses),
    )
