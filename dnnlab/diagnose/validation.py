"""Then validation: overfitting, undertrained or a good fit, and the warnings of any verdict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnnlab.diagnose.evidence import Diagnosis, _finite, _g, _rate, _skill
from dnnlab.diagnose.training import _instrument_findings

if TYPE_CHECKING:
    from dnnlab.diagnose.evidence import _Run


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
        if run.regression:
            fit_line += f"; least squares reaches {_g(ref)} on the same examples"
        else:
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
    if rising or gap > run.gap_threshold:
        d = Diagnosis("overfitting", evidence=[fit_line])
        if rising:
            d.evidence.append(
                f"validation loss reached its minimum {_g(best_val)} at epoch {best_epoch}, then rose to {_g(last_val)} "
                f"(+{_g(100 * rise)}%) over {after} epochs while the training loss fell {_g(train_at_best)} -> {_g(run.last['train_loss'])}"
            )
        if gap > run.gap_threshold:
            d.evidence.append(f"train - validation {run.fit_name} gap {_g(gap)} ({_g(acc)} vs {_g(val_acc)}; > {_g(run.gap_threshold)})")
        _add_overfitting_remedies(d, run, best_epoch)
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
        f"validation {run.fit_name} {_g(val_acc)}, gap {_g(gap)} (<= {_g(run.gap_threshold)}); validation loss at its minimum "
        f"{_g(best_val)} at epoch {best_epoch} of {last_epoch}, {_g(100 * rise)}% above it at the end"
    )
    return d


def _add_overfitting_remedies(d: Diagnosis, run: _Run, best_epoch: int) -> None:
    """The remedies of overfitting, in order: early stopping, dropout, weight decay, the whole training set."""
    cfg = run.cfg
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
    if run.regression:
        if run.init and _finite(run.init.get("train_loss")) and run.init["train_loss"] > 3 * run.base.prior_loss:
            d.warnings.append(
                f"initial loss {_g(run.init['train_loss'])} is far above 1, the squared error of predicting the mean "
                "on standardized targets: the initial outputs are too large (check model.init)"
            )
    elif run.init and _finite(run.init.get("train_loss")) and run.init["train_loss"] > 2 * run.ln_c:
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
