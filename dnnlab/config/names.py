"""The names of every choice (Literal types, so the config is checked without importing JAX),
the tables of keys each optimizer and schedule reads, the defaults and limits, and ConfigError.
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

# The names of every registry live here, as Literal types, so that the config can be checked
# without importing JAX. tests/test_registries.py holds each registry to exactly its type's names:
# data.LOADERS (Dataset), models.ARCHITECTURES (Arch), activations.REGISTRY (ActivationName),
# models.INITIALIZERS (InitializerName), optim.OPTIMIZERS (OptimizerName), optim.SCHEDULES
# (ScheduleName).
BuiltinDataset = Literal["digits", "mnist", "fashion-mnist", "cifar10"]
FileDataset = Literal["csv", "npz", "folder"]  # the user's own files at data.path (docs/data.md)
Dataset = Literal[BuiltinDataset, FileDataset]
Arch = Literal["mlp", "cnn", "resnet"]
ActivationName = Literal["sigmoid", "tanh", "relu", "leaky_relu", "prelu", "maxout", "elu", "gelu"]
InitializerName = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal"]
InitName = Literal["auto", InitializerName]  # auto: picked from the activation (models._initializer)
OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
ScheduleName = Literal["constant", "step", "cosine", "warmup_cosine"]
ShortcutName = Literal["identity", "none"]
NormName = Literal["none", "batch"]
PoolName = Literal["max", "none"]
NormalizeName = Literal["unit", "standard"]
MissingName = Literal["error", "drop"]
TaskName = Literal["classification", "regression"]
Monitor = Literal["val_loss", "val_accuracy", "val_balanced_accuracy", "val_r2"]
# the monitors that hold for one task only (early stopping refuses the other task's)
CLASSIFICATION_MONITORS = ("val_accuracy", "val_balanced_accuracy")
REGRESSION_MONITORS = ("val_r2",)
# the metrics that rank runs (sweep.tune_metric): runs.RANKING_METRICS, in its order (runs imports
# config, not the other way, so the Literal is spelt out; tests/test_registries.py holds the two equal)
MetricName = Literal[
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
    "val_balanced_accuracy", "test_balanced_accuracy",
    "train_r2", "val_r2", "test_r2", "train_mse", "val_mse", "test_mse", "train_mae", "val_mae", "test_mae",
]
# the datasets that can hold numeric targets (data.task: regression)
REGRESSION_DATASETS = ("csv", "npz")
LoopName = Literal["auto", "scan", "steps"]
StackName = Literal["auto", "unrolled", "scanned"]
SeedModeName = Literal["auto", "vmap", "sequential"]
ReferenceName = Literal["linear", "none"]
PretrainName = Literal["none", "rbm"]

ACTIVATIONS: tuple[str, ...] = get_args(ActivationName)
# Each dataset's images (H, W, C) and classes as published; data.py refuses files whose labels
# fall outside the classes, and `check_size` sizes a model for the images. None for the user's
# own files (FileDataset): their shape and classes are known once they are read.
FILE_DATASETS: tuple[str, ...] = get_args(FileDataset)
DATASET_SHAPES: dict[str, Optional[tuple[int, int, int]]] = {
    "digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion-mnist": (28, 28, 1), "cifar10": (32, 32, 3),
    **{name: None for name in FILE_DATASETS},
}
NUM_CLASSES: dict[str, Optional[int]] = {
    "digits": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10, **{name: None for name in FILE_DATASETS},
}
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)

# The optimizer-section keys that each optimizer and each schedule reads (optim.OPTIMIZERS,
# optim.SCHEDULES); any other is ignored, and `config_warnings` says so when it is set.
# tests/test_registries.py checks both ways: each listed key changes the update, no other does.
OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "adagrad": ("eps",),
    "rmsprop": ("rho", "eps"),
    "adam": ("b1", "b2", "eps"),
    "adamw": ("b1", "b2", "eps"),
}
SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("step_epochs", "step_factor"),
    "cosine": ("min_lr_ratio",),
    "warmup_cosine": ("warmup_epochs", "min_lr_ratio"),
}

DEFAULT_DEPTH = 2
DEFAULT_WIDTH = 256
# How `train.stack: auto` compiles a stack (see `stack_plan`; measured in bench/depth.py, docs/speed.md).
SCAN_FROM_LAYERS = 512  # an mlp or cnn stack of at least this many layers is scanned
SCAN_UNROLL = 8  # layers per scan iteration when auto scans
# Caps that refuse absurd models before any JAX work (a depth of 1e6 compiles for minutes).
MAX_LAYERS = 1024  # hidden (dense) layers, and conv blocks
MAX_BLOCKS = 200  # resnet blocks per stage: resnet-1202, the deepest net of He et al. 2016
# `check_size`: the training state that any config must fit in, whatever the machine (the
# schema's check, with the dataset's published image size), and the fallback for the machine's
# memory where os.sysconf cannot tell it.
MAX_MODEL_BYTES = 64 << 30
FALLBACK_MEMORY_BYTES = 8 << 30
MAX_SWEEP_MEMBERS = 10_000  # a larger sweep needs --yes
DEFAULT_TEST_SPLIT = 0.2  # data.test_split of csv, npz and folder data without a test set
# the pretrain section's defaults: measured on the digits (6 sigmoid layers of 256, plain SGD;
# bench/pretrain.py, docs/config.md "Greedy layer-wise pretraining")
PRETRAIN_EPOCHS = 20
PRETRAIN_BATCH = 16
PRETRAIN_INIT_SCALE = 1.0


class ConfigError(Exception):
    """A config that cannot be used; `str()` is the message for the user (one problem a line)."""
