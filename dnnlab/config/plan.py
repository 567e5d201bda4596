"""Policies the config decides before any JAX work: the training loop, whether a stack is
scanned, the data split's seed, the residual pairs of an MLP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from dnnlab.config.names import SCAN_FROM_LAYERS, SCAN_UNROLL

if TYPE_CHECKING:
    from dnnlab.config.schema import Config, ModelConfig


def training_loop(cfg: "Config") -> str:
    """`train.loop` resolved: auto is the per-step loop for convolutional nets (XLA:CPU runs
    convolutions inside a while loop about 11x slower; bench/conv.py) and one scan per epoch otherwise."""
    if cfg.train.loop != "auto":
        return cfg.train.loop
    return "steps" if cfg.model.arch in ("cnn", "resnet") else "scan"


def stack_length(model: ModelConfig) -> int:
    """Layers in the model's scannable stack: an mlp's or cnn's dense layers 2..L of equal width (no
    residual pairs), or a resnet stage's blocks 2..n (per stage); 0 when there is none."""
    if model.arch == "resnet":
        return model.blocks - 1
    widths = model.layer_widths
    if model.residual or len(widths) < 3 or len(set(widths[1:])) != 1:
        return 0
    return len(widths) - 1


def stack_plan(model: ModelConfig, stack: str = "auto", unroll: Optional[int] = None) -> tuple[bool, int]:
    """`train.stack` and `train.unroll` resolved: (scanned, layers per scan iteration).

    A stack shorter than 2 layers, and a batch-normalized mlp or cnn, is always unrolled; auto
    scans an mlp or cnn stack of SCAN_FROM_LAYERS layers or more and keeps resnets unrolled (their
    convolutions run about 11x slower inside a scan on XLA:CPU; bench/conv.py). The same rule as
    models.plan_stack (tests/test_registries.py holds the two equal).
    """
    if stack == "unrolled" or stack_length(model) < 2 or (model.arch != "resnet" and model.norm == "batch"):
        return False, 1
    if stack == "scanned":
        return True, unroll or 1
    if model.arch != "resnet" and stack_length(model) >= SCAN_FROM_LAYERS:
        return True, unroll or SCAN_UNROLL
    return False, 1


def data_seed(cfg: "Config") -> int:
    """The seed of the data split and subsample: data.split_seed, else the run's seed."""
    return cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed


def _unscanned_reason(model: ModelConfig, stack: str) -> str:
    """Why `stack_plan` leaves the model's stack unrolled, in words."""
    n = stack_length(model)
    if stack == "unrolled":
        return "train.stack is unrolled"
    if n < 2:
        if model.arch == "resnet":
            return f"a resnet with model.blocks {model.blocks} has no stack of 2 or more identical blocks per stage"
        return (
            f"this {model.arch} has no stack of 2 or more identical dense layers (layers 2..L of equal width, "
            f"no residual pairs; widths {list(model.layer_widths)})"
        )
    if model.arch != "resnet" and model.norm == "batch":
        return f"a batch-normalized {model.arch} stack is never scanned"
    if model.arch == "resnet":
        return "train.stack auto keeps resnets unrolled; set train.stack=scanned"
    return f"train.stack auto scans stacks of {SCAN_FROM_LAYERS} or more layers only (this one has {n}); set train.stack=scanned"
