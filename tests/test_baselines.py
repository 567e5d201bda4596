"""Chance from the data: the skill scale, the prior's cross-entropy, per-class recall and the
class-weighted loss, against oracles (hand-computed numbers, scikit-learn, NumPy); and the rules
that read them, on hand-built histories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dnnlab import baselines, config
from dnnlab.baselines import Baselines
from dnnlab.diagnose import diagnose, solved

from conftest import make_cfg


def labels(*counts):
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


@pytest.mark.parametrize("counts, majority, entropy", [
    ((100,) * 10, 0.1, math.log(10)),
    ((900, 100), 0.9, -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))),  # 0.325083
    ((800, 150, 50), 0.8, 0.612869),  # 0.178515 + 0.284568 + 0.149787: -(0.8 ln 0.8 + 0.15 ln 0.15 + 0.05 ln 0.05)
])
def test_chance_is_the_prior_and_its_cross_entropy(counts, majority, entropy):
    from sklearn.metrics import log_loss

    base = Baselines(counts)
    assert base.majority == pytest.approx(majority) and base.chance == pytest.approx(majority)
    assert base.prior_loss == pytest.approx(entropy, abs=1e-6)
    # the oracle: the cross-entropy of predicting the training split's class shares for every example
    y = labels(*counts)
    prior = np.bincount(y) / len(y)
    assert base.prior_loss == pytest.approx(log_loss(y, np.tile(prior, (len(y), 1))), rel=1e-9)
    # the skill scale: 0 at chance, 1 for a perfect fit, the bar of a poor fit halfway
    assert base.accuracy_skill(majority) == pytest.approx(0.0) and base.accuracy_skill(1.0) == pytest.approx(1.0)
    assert base.accuracy_at(0.5) == pytest.approx(majority + 0.5 * (1 - majority))
    assert base.loss_skill(base.prior_loss) == pytest.approx(0.0) and base.loss_skill(0.0) == 1.0
    assert base.loss_skill(base.prior_loss / 2) == pytest.approx(0.5)


def test_the_skill_scale_keeps_ten_balanced_classes_where_they_were():
    base = Baselines((100,) * 10)
    # the poor-training bar at skill 0.5 is today's 0.55; the reference margin 0.11 of skill ~ 0.1 of accuracy
    assert base.accuracy_at(config.DiagnosisConfig().poor_train_margin) == pytest.approx(0.55)
    assert config.DiagnosisConfig().reference_margin * (1 - base.chance) == pytest.approx(0.099)
    # on a 90/10 table the same bar is 0.95, and the majority predictor's 0.9 is skill 0
    table = Baselines((900, 100))
    assert table.accuracy_at(0.5) == pytest.approx(0.95) and table.accuracy_skill(0.9) == pytest.approx(0.0)
    assert table.imbalanced(0.7) and not Baselines((60, 40)).imbalanced(0.7)


def test_class_weights_balanced_are_scikit_learns_and_weigh_every_class_alike():
    from sklearn.utils.class_weight import compute_class_weight

    counts = (800, 150, 50)
    y = labels(*counts)
    weights = baselines.class_weights("balanced", counts)
    assert weights == pytest.approx(compute_class_weight("balanced", classes=np.arange(3), y=y).tolist())
    # the weighted prior is uniform: chance loss ln(C), and the fit is judged on balanced accuracy at 1/C
    base = Baselines(counts, tuple(weights))
    assert base.prior == pytest.approx((1 / 3,) * 3) and base.prior_loss == pytest.approx(math.log(3))
    assert base.fit_metric == "balanced_accuracy" and base.chance == pytest.approx(1 / 3)
    assert baselines.class_weights({"yes": 4.0}, (90, 10), ("no", "yes")) == [1.0, 4.0]
    assert baselines.class_weights("none", counts) is None
    with pytest.raises(ValueError, match=r"train.class_weight.maybe: no class 'maybe'.*no, yes"):
        baselines.class_weights({"maybe": 2.0}, (90, 10), ("no", "yes"))


def test_balanced_accuracy_and_recall_are_scikit_learns():
    from sklearn.metrics import balanced_accuracy_score, recall_score

    rng = np.random.default_rng(0)
    y = labels(80, 15, 5)
    pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, 3, len(y)))
    correct = [int(np.sum((y == c) & (pred == c))) for c in range(3)]
    recall = baselines.class_recall(correct, np.bincount(y).tolist())
    assert recall == pytest.approx(recall_score(y, pred, average=None).tolist())
    assert baselines.balanced_accuracy(recall) == pytest.approx(balanced_accuracy_score(y, pred))
    # a class without examples has no recall and is left out of the mean, as in scikit-learn
    assert baselines.class_recall([3, 0], [4, 0]) == [0.75, None] and baselines.balanced_accuracy([0.75, None]) == 0.75


def test_the_class_weighted_loss_is_numpys_weighted_mean():
    import jax
    import jax.numpy as jnp

    from dnnlab import models, train

    cfg = make_cfg(**{"model.depth": 1, "model.width": 8})
    model = models.build(cfg.model, (5,), 3, models.plan_stack(cfg.model, "auto", None))
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 5)).astype(np.float32), np.array([0, 0, 0, 1, 1, 2, 2])
    w = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)  # the last example is padding
    cw = np.array([0.5, 2.0, 4.0], np.float32)
    logits = np.asarray(model.apply(params, jnp.asarray(x), train=False)[0], np.float64)
    ce = -(logits[np.arange(7), y] - np.log(np.exp(logits).sum(1)))
    expected = np.sum(w * cw[y] * ce) / np.sum(w * cw[y])
    loss = train.loss_fn(params, None, jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), None, model=model,
                         reg=cfg.regularization, class_weights=jnp.asarray(cw))[0]
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    plain = train.loss_fn(params, None, jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), None, model=model, reg=cfg.regularization)[0]
    assert float(plain) == pytest.approx(np.sum(w * ce) / np.sum(w), rel=1e-5)


def test_class_weights_are_data_one_program_serves_every_weighting(digits, monkeypatch):
    """Runs that differ only in their class weights share their compiled programs (the weights
    are an input), each trains with its own weights, and the reported losses are the weighted
    means: the evaluation's per-class sums against a NumPy weighting of the same model."""
    import jax.monitoring

    from dnnlab import train

    monkeypatch.setenv("DNNLAB_NO_COMPILE_CACHE", "1")
    train.clear_programs()
    compiles: list[str] = []

    def listen(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    results, counts = [], []
    try:
        for weight in ("balanced", {"0": 5.0}, {"3": 0.5, "7": 2.0}):
            before = len(compiles)
            cfg = make_cfg(**{"model.width": 32, "train.epochs": 2, "train.class_weight": weight, "diagnosis.instruments": False})
            results.append(train.fit(cfg, digits, progress=False))
            counts.append(len(compiles) - before)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert counts[0] >= 2 and counts[1:] == [0, 0], counts
    assert len({r.history[-1]["train_loss"] for r in results}) == 3
    s = results[1].summary
    assert s["loss"]["weighted"] and s["loss"]["class_weights"] == [5.0] + [1.0] * 9
    # the weighted validation loss of the last model, by NumPy from its logits
    from dnnlab import models

    model = models.build(make_cfg(**{"model.width": 32}).model, digits.input_shape, 10, models.plan_stack(make_cfg().model, "auto", None))
    logits = np.asarray(model.apply(results[1].params, digits.val.x, train=False)[0], np.float64)
    ce = -(logits[np.arange(len(digits.val.y)), digits.val.y] - np.log(np.exp(logits).sum(1)))
    cw = np.array(s["loss"]["class_weights"])[digits.val.y]
    assert s["final"]["val_loss"] == pytest.approx(np.sum(cw * ce) / np.sum(cw), rel=1e-5)
    # class weights make every record carry the balanced accuracy the fit is judged on
    assert all("train_balanced_accuracy" in r for r in results[1].history)


# ---------------------------------------------------------------- the rules, on hand-built histories

IMBALANCED = {"status": "completed", "data": {"num_classes": 2, "classes": ["no", "yes"], "class_counts": {"train": [900, 100]}}}
HEALTHY = {"grad_ratio": 0.3, "grad_rms": [0.01, 0.02, 0.03], "update_ratio": [1e-3, 1e-3, 1e-3], "nonpositive_fraction": [0.5, 0.5], "dead_fraction": [0.0, 0.0]}


def records(train_loss, train_acc, val_loss, val_acc, **per_epoch):
    out = []
    for e in range(len(train_loss)):
        r = {"epoch": e, "train_loss": train_loss[e], "train_accuracy": train_acc[e], "val_loss": val_loss[e], "val_accuracy": val_acc[e]}
        r.update({k: (v[e] if isinstance(v, tuple) else v) for k, v in per_epoch.items()})
        out.append(r)
    return out


def test_a_net_stuck_at_the_prior_of_a_90_10_table_is_failed_training_with_a_plateau():
    n = 10
    h = records([0.69] + [0.325] * n, [0.5] + [0.9] * n, [0.69] + [0.326] * n, [0.5] + [0.9] * n, **HEALTHY)
    summary = {**IMBALANCED, "per_class": {"epoch": n, "recall": {"train": [1.0, 0.0]}}}
    d = diagnose(h, make_cfg(), summary)
    assert d.verdict == "failed-training" and d.causes == ["plateau"]
    assert any("training accuracy 0.9 (skill 0.00) at epoch 10 is below 0.95" in e and "'no'" in e
               and "predicts 'no' for every example" in e for e in d.evidence)
    assert any("loss skill" in e and "prior's cross-entropy 0.325" in e for e in d.evidence)
    assert "train.class_weight=balanced" in [r.set for r in d.remedies]
    assert any(w.startswith("imbalanced classes: 'no' holds 90%") for w in d.warnings)
    # the same numbers on balanced classes (chance 0.5) were a good fit before, and still are
    balanced = {"status": "completed", "data": {"num_classes": 2, "class_counts": {"train": [500, 500]}}}
    assert diagnose(h, make_cfg(), balanced).verdict == "good-fit"


def test_a_solved_task_is_not_undertrained_however_fast_its_tiny_loss_falls():
    # 1.0 everywhere, a validation loss of 0.015 still falling 7% per epoch (palmerpenguins)
    val = [1.05, 0.2, 0.05, 0.03, 0.022, 0.019, 0.0165, 0.0153]
    h = records([1.05, 0.2, 0.04, 0.02, 0.012, 0.01, 0.008, 0.007], [0.4] + [1.0] * 7, val, [0.4] + [1.0] * 7, **HEALTHY)
    summary = {"status": "completed", "data": {"num_classes": 3, "class_counts": {"train": [146, 119, 68]}}}
    d = diagnose(h, make_cfg(), summary)
    assert d.verdict == "good-fit" and solved(h, make_cfg(), summary)
    # the same curve short of solved (validation accuracy 0.9, loss 0.3 and falling) is undertrained
    h2 = records([2.3, 1.0, 0.5, 0.3, 0.2], [0.1, 0.8, 0.95, 0.98, 0.99], [2.3, 1.0, 0.6, 0.4, 0.3], [0.1, 0.7, 0.85, 0.88, 0.9], **HEALTHY)
    assert diagnose(h2, make_cfg(), {"status": "completed", "data": {"num_classes": 10}}).verdict == "undertrained"


def test_instruments_that_contradict_a_good_fit_are_warned():
    h = records([2.3, 1.0, 0.5, 0.3, 0.3, 0.3], [0.1, 0.8, 0.95, 0.98, 0.98, 0.98], [2.3, 1.0, 0.6, 0.45, 0.45, 0.45],
                [0.1, 0.7, 0.9, 0.93, 0.93, 0.93], grad_ratio=1e-5, grad_rms=[1e-7, 1e-3], update_ratio=[1e-3, 1e-3])
    d = diagnose(h, make_cfg(), {"status": "completed", "data": {"num_classes": 10}})
    assert d.verdict == "good-fit"
    assert any(w.startswith("vanishing-gradients although the net fits its training set: first/last layer") for w in d.warnings)


def test_the_early_stopping_warning_says_overfitting_only_when_the_validation_loss_rose():
    n = 12
    flat = records([0.69] + [0.3] * n, [0.5] + [0.95] * n, [0.69] + [0.32] * n, [0.5] + [0.94] * n, **HEALTHY)
    summary = {"status": "stopped_early", "restored_best": True, "best_epoch": 2, "epochs_run": n, "monitor": "val_loss",
               "data": {"num_classes": 2}}
    d = diagnose(flat, make_cfg(), summary)
    (warning,) = [w for w in d.warnings if w.startswith("early stopping restored epoch 2")]
    assert "not overfitting" in warning and "spent overfitting" not in warning
    rising = records([0.69] + [0.3 - 0.01 * e for e in range(n)], [0.5] + [0.95] * n,
                     [0.69, 0.4, 0.32] + [0.32 + 0.02 * e for e in range(1, n - 1)], [0.5] + [0.94] * n, **HEALTHY)
    d = diagnose(rising, make_cfg(), summary)
    assert any("most of the budget was spent overfitting" in w for w in d.warnings)


def test_over_regularization_is_named_first_with_its_evidence_and_removed_in_every_remedy():
    n = 8
    h = records([2.6] + [2.3] * n, [0.1] + [0.1] * n, [2.6] + [2.3] * n, [0.1] * (n + 1),
                weight_norm=tuple([[20.0, 20.0, 5.0]] + [[3.0, 3.0, 1.0]] * n), **HEALTHY)
    summary = {"status": "completed", "data": {"num_classes": 10}, "penalty": {"l2": 9.0, "epoch": n}}
    d = diagnose(h, make_cfg(**{"regularization.l2": 1.0, "model.dropout": 0.5}), summary)
    assert d.verdict == "failed-training" and d.causes[0] == "over-regularization"
    assert any("the l2 penalty is 79.6% of the training loss at epoch 8 (9 of 11.3" in e for e in d.evidence)
    assert any("the weights' norm is 0.152 of the same net's at epoch 0 (28.7 -> 4.36" in e for e in d.evidence)
    assert d.remedies[0].set == "regularization.l2=0" and "model.dropout=0" in d.remedies[0].sets
    assert all("regularization.l2=0" in r.sets and "model.dropout=0" in r.sets for r in d.remedies)
    # a small penalty that leaves the weights alone is no cause: a warning, as before
    light = records([2.6] + [2.3] * n, [0.1] + [0.1] * n, [2.6] + [2.3] * n, [0.1] * (n + 1),
                    weight_norm=tuple([[20.0, 20.0, 5.0]] * (n + 1)), **HEALTHY)
    d = diagnose(light, make_cfg(**{"regularization.l2": 1e-5}), {**summary, "penalty": {"l2": 0.002, "epoch": n}})
    assert "over-regularization" not in d.causes and any("regularization is on" in w for w in d.warnings)


def test_fix_never_calls_a_change_to_a_solved_run_a_fix(tmp_path):
    """A run diagnosed undertrained by older rules although it had solved its task (1.0 on
    training and validation): a longer run that is then called something else is no fix."""
    from dnnlab import runs
    from dnnlab.sweep import fix
    from dnnlab.compare import Group, load_record

    val = [1.05, 0.2, 0.05, 0.03, 0.022, 0.019, 0.0165, 0.0153]
    history = records([1.05, 0.2, 0.04, 0.02, 0.012, 0.01, 0.008, 0.007], [0.4] + [1.0] * 7, val, [0.4] + [1.0] * 7)
    folders = []
    for name, final in (("control", history[-1]), ("longer", {**history[-1], "val_loss": 0.01})):
        folder = tmp_path / name
        folder.mkdir()
        writer = runs.RunDir(folder, make_cfg())
        for r in history:
            writer.write(r["epoch"], {k: v for k, v in r.items() if k != "epoch"})
        runs.write_summary(folder, {"status": "completed", "epochs_run": 7, "final": final,
                                    "data": {"num_classes": 3, "train": 333, "val": 33, "class_counts": {"train": [146, 119, 68]}}})
        folders.append(folder)
    assert fix._solved([str(folders[0])])
    control, longer = Group({}, [load_record(folders[0])]), Group({}, [load_record(folders[1])])
    remedy = {"set": "train.epochs=14", "sets": ["train.epochs=14"]}
    result = fix._judge_one("undertrained", remedy, control, longer, [{"status": "completed"}], solved=True)
    assert result.fixed is False and "already solved" in result.words
    assert fix._judge_one("undertrained", remedy, control, longer, [{"status": "completed"}]).fixed is True


def test_early_stopping_and_compare_rank_by_validation_balanced_accuracy(tmp_path):
    import json

    from typer.testing import CliRunner

    from dnnlab.cli import app
    from dnnlab.runs import read_metrics, read_summary

    result = CliRunner().invoke(app, [
        "sweep", "configs/quickstart.yaml", "--grid", "model.width=16,64", "--out", str(tmp_path), "--quiet",
        "--set", "train.epochs=4", "--set", "train.early_stopping.enabled=true",
        "--set", "train.early_stopping.monitor=val_balanced_accuracy", "--metric", "val_balanced_accuracy",
    ])
    assert result.exit_code == 0, result.output
    (sweep,) = tmp_path.iterdir()
    members = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    for member in members:
        history, summary = read_metrics(member), read_summary(member)
        values = [r["val_balanced_accuracy"] for r in history[1:]]
        assert summary["monitor"] == "val_balanced_accuracy" and summary["best_epoch"] == 1 + values.index(max(values))
    compared = CliRunner().invoke(app, ["compare", str(sweep), "--json", "--metric", "val_balanced_accuracy"])
    table = json.loads(compared.output)
    best = max(table["groups"], key=lambda g: g["val_balanced_accuracy"]["mean"])
    assert compared.exit_code == 0 and table["metric"] == "val_balanced_accuracy" and table["best"] == best["label"]


def test_data_inspect_names_chance_and_warns_of_imbalance(tmp_path):
    from typer.testing import CliRunner

    from dnnlab.cli import app

    rng = np.random.default_rng(0)
    rows = ["a,b,label"] + [f"{x:.3f},{y:.3f},{'rare' if i % 10 == 0 else 'common'}" for i, (x, y) in enumerate(rng.normal(size=(400, 2)))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: csv, path: {tmp_path / 't.csv'}, label: label}}\n")
    out = CliRunner().invoke(app, ["data", "inspect", str(cfg)])
    assert out.exit_code == 0, out.output
    # the training split after the stratified test and validation splits: 0.899 of it is 'common'
    assert "chance: always predicting 'common' is 0.899 accurate" in out.output
    assert "warning: imbalanced classes: 'common' holds 89.9% of the training split" in out.output
    assert "train.class_weight: balanced" in out.output
    balanced = CliRunner().invoke(app, ["data", "inspect", str(cfg), "--set", "diagnosis.imbalance_share=0.95"])
    assert balanced.exit_code == 0 and "warning" not in balanced.output
