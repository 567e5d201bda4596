"""The run's plots are fit for reading: labelled axes, whole-number epochs, an accuracy at chance
drawn on the chance line (not noise blown up to fill the axis), fractions on 0-1."""

from __future__ import annotations

import pytest

from dnnlab import report, runs


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """The figures the plots would write, by file name, still open."""
    drawn = {}

    def capture(path, fig, dpi=90):
        drawn[path.name] = fig

    monkeypatch.setattr(runs, "write_figure", capture)
    monkeypatch.setattr("matplotlib.pyplot.close", lambda fig=None: None)
    return drawn


def _history(epochs, acc, sat):
    return [
        {"epoch": e, "train_loss": 2.30 - 0.001 * e, "val_loss": 2.30, "train_accuracy": acc + 0.001 * (e % 2),
         "val_accuracy": acc, "grad_rms": [1e-6, 1e-3, 1e-1], "saturated_fraction": [sat, sat + 0.01 * e]}
        for e in range(epochs + 1)
    ]


def test_an_accuracy_at_chance_is_a_flat_line_on_the_chance_line_with_labelled_axes(figures, tmp_path):
    summary = {"best_epoch": 3, "data": {"class_counts": {"train": [10] * 10}}}
    report.write_plots(tmp_path, _history(5, 0.10, 0.02), summary)
    loss_ax, fit_ax = figures["curves.png"].axes
    low, high = fit_ax.get_ylim()
    assert low < 0.1 and high >= 1.0  # chance to a perfect fit, not 0.097-0.104
    assert any(abs(line.get_ydata()[0] - 0.1) < 1e-9 and "chance" in line.get_label() for line in fit_ax.get_lines())
    assert any(abs(line.get_ydata()[0] - 2.302585) < 1e-5 for line in loss_ax.get_lines())  # ln 10, the prior's loss
    for ax in (loss_ax, fit_ax):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    (grad_ax,) = figures["gradients.png"].axes
    assert grad_ax.get_ylabel() == "gradient RMS" and grad_ax.get_yscale() == "log"
    (sat_ax,) = figures["saturated.png"].axes
    assert sat_ax.get_ylabel() == "fraction of outputs"
    assert sat_ax.get_ylim()[0] <= 0 and sat_ax.get_ylim()[1] >= 1  # 0.02-0.07 is not a curve across the axis
    assert all(float(t).is_integer() for t in sat_ax.get_xticks() if 0 <= t <= 5)


def test_an_imbalanced_chance_and_a_regression_fit_are_marked_where_they_are(figures, tmp_path):
    report.write_plots(tmp_path, _history(2, 0.9, 0.0), {"data": {"class_counts": {"train": [90, 10]}}})
    fit_ax = figures["curves.png"].axes[1]
    assert any("chance 0.9" in line.get_label() for line in fit_ax.get_lines())
    assert fit_ax.get_ylim()[0] < 0.9
    history = [{"epoch": e, "train_loss": 1.0, "train_r2": r2, "val_r2": r2} for e, r2 in enumerate((-7.0, 0.3, 0.6))]
    report.write_plots(tmp_path, history, {"data": {"task": "regression"}})
    fit_ax = figures["curves.png"].axes[1]
    assert fit_ax.get_ylabel() == "R^2"
    assert -1.1 <= fit_ax.get_ylim()[0] < 0 and fit_ax.get_ylim()[1] >= 1  # R^2 -7 at init does not flatten the rest
