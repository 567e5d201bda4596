"""The verdict rules on synthetic histories: each verdict and cause, and the edge cases."""

from __future__ import annotations

import io
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from dnnlab import config
from dnnlab.console import print_diagnosis
from dnnlab.diagnose import CAUSES, diagnose

LN10 = math.log(10)
SUMMARY = {"status": "completed", "data": {"num_classes": 10}}


def history(train_loss, train_acc, val_loss=None, val_acc=None, **per_epoch):
    """Records for epochs 0..N from lists (index 0 = at initialization). An instrument given as a
    tuple is a per-epoch series; anything else (a per-layer list, a number) is the same every epoch."""
    out = []
    for e in range(len(train_loss)):
        r = {"epoch": e, "train_loss": train_loss[e], "train_accuracy": train_acc[e]}
        if val_loss is not None:
            r["val_loss"], r["val_accuracy"] = val_loss[e], val_acc[e]
        for key, values in per_epoch.items():
            r[key] = values[e] if isinstance(values, tuple) else values
        out.append(r)
    return out


def cfg(**dotted):
    raw = config.apply_overrides({}, [f"{k}={v}" for k, v in dotted.items()])
    return config.validate(raw)


HEALTHY = {"grad_ratio": 0.3, "grad_rms": [0.01, 0.02, 0.03], "update_ratio": [1e-3, 1e-3, 1e-3], "nonpositive_fraction": [0.5, 0.5], "dead_fraction": [0.0, 0.0]}


def remedy_keys(d):
    return [r.set.split("=")[0] for r in d.remedies]


def test_vanishing_gradients_in_a_deep_sigmoid_net():
    n = 10
    h = history([2.33] + [2.31] * n, [0.1] * (n + 1), [2.31] * (n + 1), [0.1] * (n + 1),
                grad_ratio=4e-6, grad_rms=[1e-8, 1e-6, 1e-4, 1e-2], update_ratio=[1e-8, 1e-6, 1e-4, 1e-2],
                saturated_pre_fraction=[0.0, 0.0, 0.0])
    d = diagnose(h, cfg(**{"model.activation": "sigmoid", "optimizer.name": "sgd", "optimizer.lr": 0.1, "model.depth": 10}), SUMMARY)
    assert d.verdict == "failed-training" and d.causes == ["vanishing-gradients"]
    assert any("ratio 4e-06 at epoch 0" in e for e in d.evidence)
    assert any("training accuracy 0.1 " in e and "chance is 0.1" in e for e in d.evidence)
    assert remedy_keys(d)[:2] == ["model.activation", "model.norm"]
    # complete changes: ReLU comes with Adam at Adam's usual learning rate (not SGD's)
    assert d.remedies[0].sets == ["model.activation=relu", "optimizer.name=adam", "optimizer.lr=0.001"]
    assert d.remedies[1].sets == ["model.norm=batch"]
    assert "model.dropout" not in remedy_keys(d) and not any(k.startswith("regularization") for k in remedy_keys(d))


def test_overfitting_names_the_best_epoch_and_gets_early_stopping_dropout_l2():
    train_loss = [2.3] + [1.0 / (e + 1) for e in range(1, 21)]
    val_loss = [2.3, 0.9, 0.7, 0.6, 0.55] + [0.55 + 0.03 * k for k in range(1, 17)]
    h = history(train_loss, [0.1] + [1.0] * 20, val_loss, [0.1] + [0.8] * 20)
    d = diagnose(h, cfg(), SUMMARY)
    assert d.verdict == "overfitting" and d.causes == []
    assert any("minimum 0.55 at epoch 4" in e for e in d.evidence)
    assert any("gap 0.2" in e for e in d.evidence)
    assert remedy_keys(d)[:3] == ["train.early_stopping.enabled", "model.dropout", "regularization.l2"]
    assert "epoch 4" in d.remedies[0].why


def test_one_rising_epoch_is_not_overfitting():
    train_loss = [2.3, 1.0, 0.5, 0.3, 0.2, 0.15, 0.12, 0.1]
    val_loss = [2.3, 1.0, 0.6, 0.4, 0.35, 0.33, 0.32, 0.40]
    h = history(train_loss, [0.1] + [0.95] * 7, val_loss, [0.1] + [0.92] * 7)
    assert diagnose(h, cfg(), SUMMARY).verdict == "good-fit"


def test_a_failing_net_is_never_called_overfitting_even_with_rising_validation_loss():
    train_loss = [2.3, 2.29, 2.29, 2.28, 2.28, 2.28, 2.28]
    val_loss = [2.3, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7]
    h = history(train_loss, [0.1] * 7, val_loss, [0.1] * 7, **HEALTHY)
    d = diagnose(h, cfg(**{"model.dropout": 0.5}), SUMMARY)
    assert d.verdict == "failed-training"
    assert d.remedies and all("model.dropout=0" in r.sets for r in d.remedies)
    assert any("dropout is on" in w for w in d.warnings)


def test_diverged_with_nan_at_epoch_1():
    h = [{"epoch": 0, "train_loss": 2.3, "train_accuracy": 0.1}, {"epoch": 1, "train_loss": None, "train_accuracy": 0.1, "running_loss": None}]
    d = diagnose(h, cfg(**{"optimizer.lr": 10.0}), {**SUMMARY, "status": "diverged"})
    assert d.verdict == "diverged" and "lr-too-high" in d.causes
    assert any("non-finite at epoch 1" in e for e in d.evidence)
    # lr 10 is far above Adam's usual 1e-3: the remedy goes there, not to a tenth (still 1000x)
    assert d.remedies[0].set == "optimizer.lr=0.001"


def test_diverged_with_exploding_gradients():
    h = history([2.3, 1e5], [0.1, 0.1], grad_ratio=(1.0, 500.0))
    d = diagnose(h, cfg(), {**SUMMARY, "status": "diverged"})
    assert d.verdict == "diverged" and d.causes == ["lr-too-high", "exploding-gradients"]


def test_lr_too_high_when_the_loss_oscillates():
    losses = [2.3, 2.0, 2.2, 1.9, 2.3, 2.0, 2.4, 2.1, 2.5]
    h = history(losses, [0.1] + [0.3] * 8, losses, [0.1] + [0.3] * 8, **HEALTHY)
    d = diagnose(h, cfg(**{"optimizer.lr": 0.5}), SUMMARY)
    assert d.verdict == "failed-training" and "lr-too-high" in d.causes
    assert d.remedies[0].set == "optimizer.lr=0.001"  # Adam's usual lr
    # within 10x of the usual lr: a tenth of it
    near = diagnose(h, cfg(**{"optimizer.lr": 0.005}), SUMMARY)
    assert near.remedies[0].set == "optimizer.lr=0.0005"
    clip = next(r for r in near.remedies if r.set == "optimizer.clip_norm=1.0")
    assert clip.sets == ["optimizer.clip_norm=1.0", "optimizer.lr=0.0005"]


def test_lr_too_low_when_the_loss_barely_moves_with_tiny_updates():
    losses = [2.30 - 0.002 * e for e in range(9)]
    h = history(losses, [0.1] * 9, losses, [0.1] * 9, grad_ratio=0.5, grad_rms=[0.01, 0.01], update_ratio=[1e-7, 1e-7])
    d = diagnose(h, cfg(**{"optimizer.name": "sgd", "optimizer.lr": 1e-5}), SUMMARY)
    assert d.verdict == "failed-training" and d.causes == ["lr-too-low"]
    assert d.remedies[0].set == "optimizer.lr=0.1"  # SGD's usual lr: 10x of 1e-5 would still crawl
    near = diagnose(h, cfg(**{"optimizer.name": "sgd", "optimizer.lr": 0.02}), SUMMARY)
    assert near.remedies[0].set == "optimizer.lr=0.2"


def test_plateau_when_healthy_steps_do_not_move_the_loss():
    losses = [2.30] * 9
    h = history(losses, [0.1] * 9, losses, [0.1] * 9, **HEALTHY)
    d = diagnose(h, cfg(**{"optimizer.name": "sgd", "optimizer.lr": 0.01}), SUMMARY)
    assert d.verdict == "failed-training" and d.causes == ["plateau"]


def test_dead_units_and_saturation():
    losses = [2.3] * 6
    dead = history(losses, [0.1] * 6, losses, [0.1] * 6, **{**HEALTHY, "nonpositive_fraction": [0.95, 0.5], "dead_fraction": [0.9, 0.0]})
    d = diagnose(dead, cfg(), SUMMARY)
    assert "dead-units" in d.causes and "model.activation" in remedy_keys(d)
    assert any("hidden layer 1: 0.95" in e for e in d.evidence)
    sat = history(losses, [0.1] * 6, losses, [0.1] * 6, grad_ratio=0.5, grad_rms=[0.01, 0.01], saturated_pre_fraction=[0.8, 0.1])
    d = diagnose(sat, cfg(**{"model.activation": "tanh"}), SUMMARY)
    assert d.causes == ["saturation"] and d.remedies[0].set == "model.activation=relu"


def test_undertrained_when_poor_but_still_falling_clearly():
    losses = [2.3, 2.0, 1.8, 1.6, 1.45, 1.3]
    h = history(losses, [0.1, 0.3, 0.35, 0.4, 0.45, 0.5], losses, [0.1, 0.3, 0.35, 0.4, 0.45, 0.5], **HEALTHY)
    d = diagnose(h, cfg(**{"train.epochs": 5}), SUMMARY)
    assert d.verdict == "undertrained" and d.remedies[0].set == "train.epochs=15"


def test_an_interrupted_run_is_resumed_before_it_gets_more_epochs():
    losses = [2.3, 2.0, 1.8, 1.6, 1.45, 1.3]
    h = history(losses, [0.1, 0.3, 0.35, 0.4, 0.45, 0.5], losses, [0.1, 0.3, 0.35, 0.4, 0.45, 0.5], **HEALTHY)
    d = diagnose(h, cfg(**{"train.epochs": 20}), {**SUMMARY, "status": "interrupted"})
    assert d.verdict == "undertrained" and d.provisional and d.resume
    assert "train.epochs" not in remedy_keys(d)
    assert "after 5 of 20 epochs; resume it to train the other 15 (dnnlab run --resume RUN_DIR)" in d.warnings[0]
    # killed (no summary) is resumed too; a failed run, or one that ran its whole budget, is not
    assert diagnose(h, cfg(**{"train.epochs": 20}), {}).resume
    assert not diagnose(h, cfg(**{"train.epochs": 20}), {**SUMMARY, "status": "failed"}).resume
    full = diagnose(h, cfg(**{"train.epochs": 5}), {**SUMMARY, "status": "interrupted"})
    assert not full.resume and full.remedies[0].set == "train.epochs=15"
    shown = Console(width=200, file=io.StringIO())
    print_diagnosis(shown, d.to_dict(), "c.yaml", "runs/x")
    assert "try: dnnlab run --resume runs/x" in " ".join(shown.file.getvalue().split())


def test_undertrained_when_good_but_validation_still_improving():
    train = [2.3, 0.8, 0.5, 0.4, 0.35, 0.3]
    val = [2.3, 0.9, 0.7, 0.6, 0.5, 0.42]
    h = history(train, [0.1, 0.8, 0.85, 0.87, 0.88, 0.9], val, [0.1, 0.78, 0.82, 0.84, 0.85, 0.86])
    assert diagnose(h, cfg(), SUMMARY).verdict == "undertrained"


def test_insufficient_capacity_when_converged_and_poor():
    losses = [2.3, 1.7, 1.6, 1.55, 1.55, 1.55, 1.55]
    h = history(losses, [0.1] + [0.45] * 6, losses, [0.1] + [0.45] * 6, **HEALTHY)
    d = diagnose(h, cfg(), SUMMARY)
    assert d.verdict == "failed-training" and d.causes == ["insufficient-capacity"]
    assert d.remedies[0].set == "model.width=512"


def test_user_target_raises_the_bar():
    train = [2.3, 0.5, 0.45, 0.44, 0.44, 0.44]
    h = history(train, [0.1, 0.8, 0.82, 0.82, 0.82, 0.82], train, [0.1, 0.8, 0.81, 0.81, 0.81, 0.81], **HEALTHY)
    assert diagnose(h, cfg(), SUMMARY).verdict == "good-fit"
    d = diagnose(h, cfg(**{"diagnosis.target_train_accuracy": 0.95}), SUMMARY)
    assert d.verdict == "failed-training" and any("your target" in e for e in d.evidence)


def test_edge_cases_one_epoch_no_epochs_no_validation():
    one = history([2.3, 0.5], [0.1, 0.9], [2.3, 0.6], [0.1, 0.88])
    d = diagnose(one, cfg(), SUMMARY)
    assert d.verdict == "good-fit" and any("only one epoch" in w for w in d.warnings)
    assert diagnose(one[:1], cfg(), {**SUMMARY, "status": "interrupted"}).verdict == "undertrained"
    noval = history([2.3, 0.5, 0.3, 0.2, 0.1, 0.05], [0.1, 0.9, 0.95, 0.97, 0.99, 1.0])
    d = diagnose(noval, cfg(**{"data.validation_split": 0}), SUMMARY)
    assert d.verdict == "good-fit" and any("no validation split" in w for w in d.warnings)


def test_early_stopping_restored_far_before_the_end_is_a_warning():
    train = [2.3] + [0.5 / e for e in range(1, 13)]
    val = [2.3, 0.6, 0.5] + [0.5 + 0.001 * k for k in range(1, 11)]
    h = history(train, [0.1] + [0.95] * 12, val, [0.1] + [0.93] * 12)
    d = diagnose(h, cfg(), {**SUMMARY, "restored_best": True, "best_epoch": 2, "epochs_run": 12})
    assert any("restored epoch 2, far before the end" in w for w in d.warnings)


@settings(max_examples=150, deadline=None)
@given(
    losses=st.lists(st.floats(1.5, 3.0), min_size=2, max_size=15),
    acc=st.floats(0.0, 0.5),
    val_shift=st.floats(-0.5, 2.0),
    dropout=st.sampled_from([0.0, 0.5]),
    ratio=st.sampled_from([1e-7, 0.3, 200.0]),
)
def test_poor_training_is_never_overfitting_and_never_gets_dropout_or_l2(losses, acc, val_shift, dropout, ratio):
    n = len(losses)
    h = history([2.3] + losses, [0.1] + [acc] * n, [2.3] + [l + val_shift for l in losses], [0.1] + [acc] * n,
                grad_ratio=ratio, grad_rms=[ratio * 1e-3, 1e-3], update_ratio=[1e-3, 1e-3])
    d = diagnose(h, cfg(**{"model.dropout": dropout}), SUMMARY)
    assert d.verdict in ("failed-training", "undertrained")
    assert set(d.causes) <= set(CAUSES)
    for r in d.remedies:
        assert not r.set.startswith("regularization.") and r.set not in ("model.dropout=0.5", "train.early_stopping.enabled=true")


def test_remedies_never_repeat_the_current_setting_and_only_relu_units_die():
    losses = [2.30] * 9
    h = history(losses, [0.1] * 9, losses, [0.1] * 9, **HEALTHY)
    d = diagnose(h, cfg(**{"optimizer.name": "adam", "optimizer.lr": 0.001}), SUMMARY)
    assert d.causes == ["plateau"] and "optimizer.name=adam" not in [r.set for r in d.remedies]
    dying = history([2.3] * 6, [0.1] * 6, [2.3] * 6, [0.1] * 6, **{**HEALTHY, "nonpositive_fraction": [0.95, 0.5]})
    assert "dead-units" not in diagnose(dying, cfg(**{"model.activation": "leaky_relu"}), SUMMARY).causes
    assert "dead-units" in diagnose(dying, cfg(**{"model.activation": "relu"}), SUMMARY).causes


def test_a_finite_loss_beyond_the_divergence_factor_is_diverged():
    h = history([2.3, 500.0], [0.1, 0.1])
    d = diagnose(h, cfg(), {**SUMMARY, "status": "diverged"})
    assert d.verdict == "diverged" and any("500 (> 100x the initial loss) at epoch 1" in e for e in d.evidence)


def test_dropout_on_an_undertrained_poor_fit_is_warned_too():
    losses = [2.3, 2.0, 1.8, 1.6, 1.45, 1.3]
    h = history(losses, [0.1, 0.2, 0.22, 0.25, 0.27, 0.3], losses, [0.1, 0.2, 0.22, 0.25, 0.27, 0.3], **HEALTHY)
    d = diagnose(h, cfg(**{"model.dropout": 0.5}), SUMMARY)
    assert d.verdict == "undertrained" and d.remedies and all("model.dropout=0" in r.sets for r in d.remedies)
    assert any("dropout is on" in w for w in d.warnings)
