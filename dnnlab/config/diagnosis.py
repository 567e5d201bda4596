"""The diagnosis section of the config: whether the instruments run, and the thresholds of the
verdict (docs/diagnosis.md), each with what it means.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from dnnlab.config.names import ReferenceName
from dnnlab.config.types import Float, Int, Section


class DiagnosisConfig(Section):
    """Instruments and the thresholds of the verdict (docs/diagnosis.md)."""

    instruments: bool = Field(True, description="record the per-layer instruments every epoch")
    probe_size: Int = Field(512, gt=0, description="training examples in the fixed probe batch")
    target_train_accuracy: Optional[Float] = Field(
        None, gt=0.0, le=1.0, description="training accuracy that counts as good (default: from the skill scale)"
    )
    poor_train_margin: Float = Field(
        0.5, gt=0.0, lt=1.0,
        description="training is poor when its accuracy skill, (accuracy - chance) / (1 - chance) with chance "
        "the majority class's share of the training split, is below this",
    )
    chance_skill: Float = Field(
        0.1, gt=0.0, lt=1.0,
        description="a training accuracy skill below this is at chance: the net predicts the prior (one class, "
        "on imbalanced data) and has not started to learn",
    )
    min_progress: Float = Field(
        0.1, gt=0.0, lt=1.0, description="the loss 'barely moved' if it fell by less than this fraction of its initial value"
    )
    window: Int = Field(3, ge=2, description="epochs over which trends (still improving, plateau) are judged")
    improving_rate: Float = Field(
        0.01, gt=0.0, description="mean relative loss decrease per epoch over the window that counts as still improving"
    )
    improving_floor: Float = Field(
        0.001, ge=0.0,
        description="... when the loss also falls by more than this fraction of the prior's cross-entropy per epoch "
        "(an absolute floor: a loss near 0 that halves is done, not still improving)",
    )
    solved_skill: Float = Field(
        0.99, gt=0.0, le=1.0,
        description="a task is solved, never undertrained, when the training and validation accuracy skills are "
        "both at least this, or the validation loss skill (1 - loss / the prior's cross-entropy) is",
    )
    vanishing_ratio: Float = Field(1e-3, gt=0.0, description="first/last layer gradient RMS below this is vanishing")
    vanishing_first_rms: Float = Field(1e-4, gt=0.0, description="... when the first layer's gradient RMS is also below this")
    exploding_ratio: Float = Field(70.0, gt=1.0, description="first/last layer gradient RMS above this is exploding")
    dead_fraction: Float = Field(
        0.7, gt=0.0, le=1.0, description="a ReLU-family layer with this fraction of pre-activations <= 0 is dying"
    )
    saturated_fraction: Float = Field(
        0.5, gt=0.0, le=1.0, description="a sigmoid/tanh layer with this fraction of |pre-activations| > 5 is saturated"
    )
    overfit_patience: Int = Field(3, ge=1, description="epochs the validation loss must rise after its minimum")
    overfit_rise: Float = Field(0.05, ge=0.0, description="... by at least this fraction of the minimum")
    overfit_gap: Float = Field(0.1, gt=0.0, description="train minus validation accuracy beyond this is overfitting")
    lr_oscillation: Float = Field(
        0.4, gt=0.0, le=1.0, description="fraction of epochs whose training loss rose that marks oscillation"
    )
    low_update_ratio: Float = Field(1e-4, gt=0.0, description="update/weight ratio below this marks a learning rate too low")
    poor_train_r2: Float = Field(
        0.3, gt=0.0, lt=1.0,
        description="regression (data.task): training is poor when its R^2 (the skill against predicting the training "
        "mean: 0 predicts the mean, 1 is perfect) is below this",
    )
    chance_r2: Float = Field(
        0.05, gt=0.0, lt=1.0,
        description="regression: a training R^2 below this is at chance: the net predicts the mean and has not started "
        "to learn",
    )
    overfit_gap_r2: Float = Field(
        0.2, gt=0.0, description="regression: train minus validation R^2 beyond this is overfitting"
    )
    reference: ReferenceName = Field(
        "linear",
        description="linear: also fit a softmax regression (least squares under regression) on the same training examples (cached) and call a net "
        "that fits its training set worse than it failed-training; none: no reference",
    )
    reference_margin: Float = Field(
        0.11, ge=0.0, lt=1.0,
        description="training is poor when the kept model's training accuracy skill is below the reference's minus "
        "this (and its validation accuracy is not above the reference's); 0.11 of skill is 0.1 of accuracy on a "
        "balanced 10-class problem",
    )
    imbalance_share: Float = Field(
        0.7, gt=0.0, lt=1.0,
        description="the data are imbalanced when the largest class holds more than this share of the training "
        "split: a warning, balanced accuracy per epoch and in the final table, `fix` judged on balanced accuracy",
    )
    penalty_share: Float = Field(
        0.2, gt=0.0, lt=1.0,
        description="over-regularization: the L2/L1 penalty is at least this share of the training loss at the "
        "last epoch while the training set is fit poorly",
    )
    shrunk_weights: Float = Field(
        0.5, gt=0.0, lt=1.0,
        description="over-regularization: ... or the weights' norm fell to at most this fraction of the same "
        "net's at epoch 0 (L2, L1 or weight decay on)",
    )
