"""The experiment config: schema, YAML loading, `--set` overrides and readable errors.

Everything a run needs is checked here, before any JAX work. Errors name the dotted key,
the value given and what is allowed; unknown keys get the closest valid key.
"""

from __future__ import annotations

import difflib
import math
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

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
Monitor = Literal["val_loss", "val_accuracy", "val_balanced_accuracy"]
# the metrics that rank runs: runs.METRICS and the balanced accuracies of runs.CLASS_METRICS
MetricName = Literal[
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
    "val_balanced_accuracy", "test_balanced_accuracy",
]
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


def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1; in a config a boolean where a number belongs is a slip
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]  # an int field: YAML ints, never true/false
Float = Annotated[float, BeforeValidator(_not_bool)]  # a float field: finite (see _Section), never true/false


def _column_ref(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a column name or a 0-based column index")
    return value


ColumnRef = Annotated[Union[int, str], BeforeValidator(_column_ref)]  # a csv column: header name or index


def _device_count(value: Any) -> Any:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError("must be auto or a whole number of devices >= 1")
    return value


DeviceCount = Annotated[Union[Literal["auto"], int], BeforeValidator(_device_count)]  # train.devices


def _class_weight(value: Any) -> Any:
    if value in ("none", "balanced"):
        return value
    if not isinstance(value, dict) or not value:
        raise ValueError("must be none, balanced, or a map from class name to weight, e.g. {yes: 5.0}")
    out = {}
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
            raise ValueError(f"the weight of class {name!r} must be a number >= 0; got {weight!r}")
        out[str(name)] = float(weight)  # YAML reads a class named 1 as a number: names are strings
    return out


# train.class_weight: none, balanced, or {class name: weight}
ClassWeight = Annotated[Union[Literal["none", "balanced"], dict[str, float]], BeforeValidator(_class_weight)]


class ConfigError(Exception):
    """A config that cannot be used; `str()` is the message for the user (one problem a line)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    dataset: Dataset = Field(
        "digits",
        description="digits (embedded) | mnist | fashion-mnist | cifar10 | csv (a table) | npz (arrays) | folder "
        "(images in one folder per class): the last three read your own files at data.path (docs/data.md)",
    )
    path: Optional[str] = Field(
        None,
        description="mnist, fashion-mnist, cifar10: the folder that holds the dataset's files; csv, npz: the training "
        "file; folder: the folder of class folders (or of train/ and test/)",
    )
    validation_split: Float = Field(
        0.1, ge=0.0, lt=1.0, description="fraction of the training set held out for validation"
    )
    train_size: Optional[Int] = Field(
        None, gt=0, description="subsample the training set to this many examples"
    )
    batch_size: Int = Field(128, gt=0)
    split_seed: Optional[Int] = Field(
        None, ge=0, lt=2**31,
        description="seeds the validation split and train_size subsample (default: the run's seed); "
        "the seeds of a train.seeds run share their first seed's split",
    )
    normalize: NormalizeName = Field(
        "unit",
        description="unit: uint8 pixels divided by 255, any other numbers (a table's columns, npz floats) min-max "
        "scaled to [0, 1] per channel with the training split's minimum and maximum; standard: then shifted and "
        "scaled to zero mean and unit variance per channel, with the training split's statistics (values are no "
        "longer in [0, 1]; what a table needs). A table's every feature is its own channel",
    )
    test_path: Optional[str] = Field(
        None,
        description="csv, npz, folder: the test set in a file (or folder) of the same kind; without it the test set "
        "is data.test_split of data.path (or the npz's x_test/y_test, the folder's test/)",
    )
    test_split: Optional[Float] = Field(
        None, gt=0.0, lt=1.0,
        description=f"csv, npz, folder without a test set of their own: the fraction held out as the test set, "
        f"stratified and the same for every seed (default {DEFAULT_TEST_SPLIT})",
    )
    label: Optional[ColumnRef] = Field(
        None, description="csv: the label column, by header name or 0-based index (negative counts from the end; "
        "default: the last column)",
    )
    features: Optional[list[ColumnRef]] = Field(
        None, min_length=1, description="csv: the feature columns, by name or index (default: every other column)"
    )
    header: Optional[bool] = Field(
        None, description="csv: whether the first row names the columns (default: detected: a first row with a "
        "word above a column of numbers or a number above a column of words, or one that holds a column named by "
        "data.label or data.features)",
    )
    delimiter: Optional[str] = Field(
        None, min_length=1, max_length=1, description="csv: the field separator (default: detected among , ; tab |)"
    )
    missing: MissingName = Field(
        "error",
        description="csv, npz: a missing value (an empty cell, NA, NaN, ?) is an error giving their count and the "
        "first one; drop: drop the rows (examples) that hold one",
    )
    x_key: str = Field("x", min_length=1, description="npz: the array of inputs")
    y_key: str = Field("y", min_length=1, description="npz: the array of labels")
    x_test_key: str = Field("x_test", min_length=1, description="npz: the test inputs, when the file holds them")
    y_test_key: str = Field("y_test", min_length=1, description="npz: the test labels, when the file holds them")
    image_size: Optional[list[Int]] = Field(
        None, description="folder: resize every image to [H, W] (default: every image must have the first one's size)"
    )
    channels: Optional[Int] = Field(
        None, description="folder: 1 grayscale or 3 RGB (default: 1 when every image is grayscale, else 3)"
    )

    @model_validator(mode="after")
    def _image_size_pair(self) -> "DataConfig":
        size = self.image_size
        if size is not None and (len(size) != 2 or any(v <= 0 for v in size)):
            raise ValueError(f"image_size: give [H, W], two positive integers, e.g. [28, 28]; got {size}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels: 1 (grayscale) or 3 (RGB); got {self.channels}")
        return self


class ModelConfig(_Section):
    arch: Arch = Field(
        "mlp",
        description="mlp | cnn (conv blocks, then the dense layers) | resnet (the CIFAR ResNet of He et al. 2016: "
        "a 3x3 conv, 3 stages of `blocks` residual blocks at 16/32/64 channels, global average pooling)",
    )
    channels: list[Int] = Field([32, 64], description="cnn: output channels of each conv block")
    kernel: Int = Field(3, ge=1, description="cnn: kernel size (odd), 'same' padding")
    pool: PoolName = Field("max", description="cnn: 2x2 max pooling after each conv block, or none")
    depth: Optional[Int] = Field(
        None, ge=0, le=MAX_LAYERS, description=f"hidden layers (default {DEFAULT_DEPTH}; at most {MAX_LAYERS})"
    )
    width: Optional[Int] = Field(None, gt=0, description=f"units per hidden layer (default {DEFAULT_WIDTH})")
    hidden: Optional[list[Int]] = Field(None, description="hidden widths, instead of depth/width")
    activation: ActivationName = "relu"
    leaky_slope: Float = Field(0.01, gt=0.0, lt=1.0)
    maxout_pieces: Int = Field(2, ge=2, description="linear pieces per maxout unit")
    dropout: Float = Field(0.0, ge=0.0, lt=1.0, description="drop rate of hidden units")
    input_dropout: Float = Field(0.0, ge=0.0, lt=1.0, description="drop rate of input units")
    init: InitName = Field(
        "auto",
        description="auto: glorot_uniform for sigmoid/tanh, lecun_normal for maxout, he_normal for the rest of "
        "the ReLU family (the classifier: glorot_uniform)",
    )
    residual: bool = Field(
        False, description="identity shortcuts around pairs of equal-width hidden layers (after the first)"
    )
    blocks: Int = Field(
        3, ge=1, le=MAX_BLOCKS,
        description=f"resnet: residual blocks per stage; depth = 6 * blocks + 2 (3: 20, 9: 56; at most {MAX_BLOCKS})",
    )
    shortcut: ShortcutName = Field(
        "identity", description="resnet: identity shortcuts (zero-padded at stage changes), or none: the plain net"
    )
    norm: Optional[NormName] = Field(
        None,
        description="batch: batch normalization before each activation (running statistics at evaluation); "
        "default batch for resnet, none otherwise",
    )
    pretrain: PretrainName = Field(
        "none",
        description="rbm: before training, each hidden layer of a sigmoid mlp in turn is trained as a restricted "
        "Boltzmann machine (CD-k) on the layer below's hidden probabilities and initializes that layer (the "
        "settings: the pretrain section; docs/config.md); none: the ordinary initialization",
    )

    @model_validator(mode="before")
    @classmethod
    def _hidden_or_depth_width(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("arch") == "resnet":
            given = [k for k in ("depth", "width", "hidden") if data.get(k) is not None]
            if given:
                raise ValueError(
                    f"{'/'.join(given)}: a resnet has no dense hidden layers; its depth is set by model.blocks "
                    "(depth = 6 * blocks + 2: blocks 3 -> resnet-20, 9 -> resnet-56)"
                )
        if not isinstance(data, dict) or data.get("hidden") is None:
            return data
        # the value first: a mistyped list (`--set model.hidden=[1,2`) is the problem to report
        if not isinstance(data["hidden"], list) or any(
            isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in data["hidden"]
        ):
            raise ValueError(f"hidden must be a list of positive integers, e.g. [512, 256], got {data['hidden']!r}")
        if len(data["hidden"]) > MAX_LAYERS:
            raise ValueError(f"hidden: {len(data['hidden'])} layers; at most {MAX_LAYERS} hidden layers")
        given = [k for k in ("depth", "width") if data.get(k) is not None]
        if given:
            raise ValueError(
                f"both hidden and {'/'.join(given)} are given; use either hidden: [512, 256] "
                "or depth/width, not both"
            )
        return data

    @model_validator(mode="after")
    def _fill_depth_width(self) -> "ModelConfig":
        if self.hidden is None:
            # frozen model: defaults are resolved once, here, so config.yaml shows them
            if self.arch == "resnet":
                return self  # a resnet's depth is `blocks`; depth/width stay unset
            object.__setattr__(self, "depth", DEFAULT_DEPTH if self.depth is None else self.depth)
            object.__setattr__(self, "width", DEFAULT_WIDTH if self.width is None else self.width)
        return self

    @model_validator(mode="after")
    def _cnn_keys(self) -> "ModelConfig":
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel: must be odd for 'same' padding, got {self.kernel}")
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError(f"channels: give at least one positive channel count, got {self.channels}")
        if len(self.channels) > MAX_LAYERS:
            raise ValueError(f"channels: {len(self.channels)} conv blocks; at most {MAX_LAYERS}")
        return self

    @model_validator(mode="after")
    def _residual_needs_pairs(self) -> "ModelConfig":
        if self.residual and not residual_blocks(self.layer_widths):
            raise ValueError(
                f"residual: needs at least 3 hidden layers whose 2nd and 3rd have the first's width "
                f"(a projection, then pairs); got widths {list(self.layer_widths)}"
            )
        return self

    @model_validator(mode="after")
    def _fill_norm(self) -> "ModelConfig":
        if self.norm is None:
            object.__setattr__(self, "norm", "batch" if self.arch == "resnet" else "none")
        if self.arch == "resnet" and self.residual:
            raise ValueError("residual: is for mlp/cnn dense layers; a resnet sets its shortcuts with model.shortcut")
        return self

    @property
    def resnet_depth(self) -> int:
        """Weighted layers of the resnet: the stem conv, two convs per block, the classifier."""
        return 6 * self.blocks + 2

    @property
    def layer_widths(self) -> tuple[int, ...]:
        """Widths of the hidden (dense) layers, input to output; none for a resnet."""
        if self.arch == "resnet":
            return ()
        if self.hidden is not None:
            return tuple(self.hidden)
        return (self.width,) * self.depth  # type: ignore[operator]


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


def residual_blocks(widths: tuple[int, ...]) -> list[int]:
    """Indices i of the hidden layers that start a residual pair (i, i+1): layer 0 projects the
    input; then pairs (1, 2), (3, 4), ... whose input and both layers have the same width."""
    return [i for i in range(1, len(widths) - 1, 2) if widths[i - 1] == widths[i] == widths[i + 1]]


# ---------------------------------------------------------------- model size, before any JAX work


def _layer_counts(model: ModelConfig, fan_in: int, units: int, spatial: int = 1) -> tuple[int, int]:
    """(trainable parameters, activation values per example) of one dense or conv layer
    (fan_in = kernel area x input channels), as models._layer_params builds it."""
    pieces = model.maxout_pieces if model.activation == "maxout" else 1
    params = fan_in * units * pieces + units * pieces * (2 if model.norm == "batch" else 1)
    params += units if model.activation == "prelu" else 0  # its per-unit slope
    return params, spatial * units * (pieces + 1)  # pre-activations and outputs


def model_counts(model: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> tuple[int, int]:
    """(trainable parameters, activation values per example) of the model that models.build
    makes for `input_shape` ((H, W, C) or (D,)) and `num_classes`, counted without building it.

    The parameters are exact (tests/test_inputs.py holds them to models.param_count).
    """
    params = acts = 0

    def add(counts: tuple[int, int]) -> None:
        nonlocal params, acts
        params, acts = params + counts[0], acts + counts[1]

    if model.arch == "resnet":
        h, w, c_in = input_shape if len(input_shape) == 3 else (1, 1, math.prod(input_shape))
        add(_layer_counts(model, 9 * c_in, 16, h * w))
        c_in = 16
        for stage, c in enumerate((16, 32, 64)):
            if stage:
                h, w = (h + 1) // 2, (w + 1) // 2  # stride 2, 'SAME' padding
            for _ in range(model.blocks):
                add(_layer_counts(model, 9 * c_in, c, h * w))
                add(_layer_counts(model, 9 * c, c, h * w))
                c_in = c
        fan_in = 64
    else:
        fan_in = math.prod(input_shape)
        if model.arch == "cnn":
            h, w, c_in = input_shape if len(input_shape) == 3 else (1, 1, fan_in)
            for c in model.channels:
                add(_layer_counts(model, model.kernel**2 * c_in, c, h * w))
                if model.pool == "max":
                    h, w = h // 2, w // 2
                c_in = c
            fan_in = h * w * c_in
        for width in model.layer_widths:
            add(_layer_counts(model, fan_in, width))
            fan_in = width
    return params + fan_in * num_classes + num_classes, acts + num_classes


def training_bytes(cfg: "Config", input_shape: tuple[int, ...], num_classes: int) -> int:
    """A lower bound on the memory that training `cfg` takes: per seed, 4 float32 copies of the
    parameters (weights, gradients, two optimizer moments) and a training batch's activations
    twice (kept for the backward pass, and their gradients)."""
    params, acts = model_counts(cfg.model, input_shape, num_classes)
    return cfg.train.seeds * 4 * (4 * params + 2 * cfg.data.batch_size * acts)


def machine_memory_bytes() -> int:
    """The machine's physical memory (os.sysconf), or FALLBACK_MEMORY_BYTES where it cannot tell."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY_BYTES
    return total if total > 0 else FALLBACK_MEMORY_BYTES


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**50 else f"{n:.1e} bytes"


def size_error(
    cfg: "Config", input_shape: Optional[tuple[int, ...]] = None, num_classes: Optional[int] = None,
    limit_bytes: Optional[int] = None,
) -> Optional[str]:
    """Why `cfg`'s model is too large to train, or None: `training_bytes` over `limit_bytes`.

    Args:
        cfg: the validated config.
        input_shape, num_classes: the loaded dataset's (default: the published ones of data.dataset).
        limit_bytes: default: the machine's memory (`machine_memory_bytes`).
    Returns:
        One message naming the model keys, the estimate and the limit, or None when it fits.
    """
    if input_shape is None:
        input_shape, known_classes = schema_input(cfg.data)
        num_classes = known_classes if num_classes is None else num_classes
    shape = tuple(input_shape)
    classes = num_classes if num_classes is not None else NUM_CLASSES[cfg.data.dataset]
    limit = machine_memory_bytes() if limit_bytes is None else limit_bytes
    if limit_bytes is None:
        over = f"this machine's {_gib(limit)} of memory"
    elif limit_bytes == MAX_MODEL_BYTES:
        over = f"the {_gib(limit)} that dnnlab allows any run"
    else:
        over = f"the {_gib(limit)} limit"
    need = training_bytes(cfg, shape, classes)
    if need <= limit:
        return None
    params, _ = model_counts(cfg.model, shape, classes)
    m = cfg.model
    keys = (
        f"model.blocks {m.blocks}" if m.arch == "resnet"
        else f"model.hidden {list(m.hidden)}" if m.hidden is not None
        else f"model.depth {m.depth}, model.width {m.width}"
    )
    if m.arch == "cnn":
        keys += f", model.channels {list(m.channels)}"
    seeds = f" x {cfg.train.seeds} seeds" if cfg.train.seeds > 1 else ""
    inputs = "x".join(map(str, shape))
    return (
        f"model: too large to train: {keys} make {params:,} parameters for {inputs} inputs and {classes} classes "
        f"({cfg.data.dataset}); training needs at "
        f"least {_gib(need)} (parameters, gradients and optimizer state, and a batch of "
        f"{cfg.data.batch_size}'s activations{seeds}), over {over}; make the model smaller "
        f"(e.g. model.width, model.depth{', train.seeds' if seeds else ''}) or data.batch_size"
    )


def schema_input(data: DataConfig) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) that the config alone tells: the published ones of a built-in dataset;
    for the user's own files a lower bound (what the config fixes: a folder's image_size, a csv's
    features, else one value; 2 classes), so that only a model too large for any such data is refused
    before they are read."""
    if data.dataset not in FILE_DATASETS:
        return DATASET_SHAPES[data.dataset], NUM_CLASSES[data.dataset]  # type: ignore[return-value]
    if data.dataset == "folder":
        h, w = data.image_size or (1, 1)
        return (h, w, data.channels or 1), 2
    return (len(data.features) if data.dataset == "csv" and data.features else 1,), 2


def check_size(
    cfg: "Config", input_shape: Optional[tuple[int, ...]] = None, num_classes: Optional[int] = None,
    limit_bytes: Optional[int] = None,
) -> None:
    """Raise ConfigError when `cfg`'s model cannot fit this machine's memory (see `size_error`);
    call it after loading the data, before any JAX work."""
    problem = size_error(cfg, input_shape, num_classes, limit_bytes)
    if problem is not None:
        raise ConfigError(problem)


def sweep_size(grid: dict[str, list[Any]], variants: Optional[list[Any]], seeds: int) -> int:
    """Members of a sweep (sweep.expand's count) without listing them."""
    return math.prod(len(v) for v in grid.values()) * max(len(variants or ()), 1) * seeds


def sweep_size_error(n_members: int, yes: bool) -> Optional[str]:
    """Why a sweep of `n_members` members is refused (more than MAX_SWEEP_MEMBERS without --yes), or None."""
    if n_members <= MAX_SWEEP_MEMBERS or yes:
        return None
    return (
        f"the sweep has {n_members:,} members (the product of the grid's value counts, the variants and the seeds), "
        f"over {MAX_SWEEP_MEMBERS:,}; shrink the grid, or pass --yes to run them all"
    )


class OptimizerConfig(_Section):
    name: OptimizerName = "adam"
    lr: Float = Field(0.001, gt=0.0, description="learning rate (peak, for schedules)")
    momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="momentum and nesterov")
    rho: Float = Field(0.9, gt=0.0, lt=1.0, description="rmsprop's decay (alpha in the lecture)")
    b1: Float = Field(0.9, ge=0.0, lt=1.0)
    b2: Float = Field(0.999, ge=0.0, lt=1.0)
    eps: Float = Field(1.0e-8, gt=0.0)
    schedule: ScheduleName = "constant"
    step_epochs: Int = Field(10, gt=0, description="step schedule: epochs between decays")
    step_factor: Float = Field(0.1, gt=0.0, le=1.0, description="step schedule: lr multiplier per decay")
    warmup_epochs: Int = Field(1, ge=0, description="warmup_cosine: epochs of linear warmup")
    min_lr_ratio: Float = Field(
        0.0, ge=0.0, le=1.0, description="cosine schedules: final lr as a fraction of lr"
    )
    clip_norm: Optional[Float] = Field(None, gt=0.0, description="global-norm gradient clipping")


class RegularizationConfig(_Section):
    l2: Float = Field(0.0, ge=0.0, description="adds l2/2 * ||w||^2 to the loss")
    l1: Float = Field(0.0, ge=0.0, description="adds l1 * ||w||_1 to the loss")
    weight_decay: Float = Field(0.0, ge=0.0, description="decoupled decay: w -= lr * wd * w")
    include_biases: bool = Field(False, description="regularize biases too")


class EarlyStoppingConfig(_Section):
    enabled: bool = False
    monitor: Monitor = "val_loss"
    patience: Int = Field(5, ge=0)
    min_delta: Float = Field(0.0, ge=0.0)
    restore_best: bool = True


class TrainConfig(_Section):
    epochs: Int = Field(20, gt=0)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    class_weight: ClassWeight = Field(
        "none",
        description="weigh each example's loss by its class: none; balanced (n / (C * n_c), every class weighing "
        "as much in all); or a map from class name to weight (classes left out weigh 1). The loss is then the "
        "weighted mean, the reported losses are class-weighted, and the fit is judged on balanced accuracy",
    )
    divergence_factor: Float = Field(
        100.0,
        gt=1.0,
        description="stop as diverged when the training loss exceeds this multiple of the initial loss",
    )
    eval_batch_size: Int = Field(2048, gt=0, description="examples per evaluation chunk")
    loop: LoopName = Field(
        "auto",
        description="scan: a whole epoch in one compiled lax.scan; steps: a Python loop over a compiled step; "
        "auto: steps for cnn and resnet (XLA's CPU convolutions are about 11x slower inside a scan; bench/conv.py), "
        "scan otherwise",
    )
    train_eval_size: Optional[Int] = Field(
        None, gt=0, description="measure the training metrics on a fixed, seeded subset of this many examples (default: all)"
    )
    stack: StackName = Field(
        "auto",
        description="how a stack of identical layers (an mlp's or cnn's dense layers 2..L when they have equal "
        "widths and no residual pairs; a resnet stage's blocks 2..n) is compiled: unrolled (fastest step, compile "
        "grows with depth), scanned (lax.scan over the layers: compile flat in depth; a batch-normalized mlp or cnn "
        f"stays unrolled), auto: scanned for an mlp or cnn stack of at least {SCAN_FROM_LAYERS} layers without batch "
        "norm, unrolled otherwise, resnets always (docs/speed.md)",
    )
    unroll: Optional[Int] = Field(
        None,
        ge=1,
        description=f"scanned stacks: layers per scan iteration (lax.scan's unroll); default: {SCAN_UNROLL} when "
        "auto scans the stack, 1 under stack: scanned",
    )
    seed_mode: SeedModeName = Field(
        "auto",
        description="train.seeds > 1: vmap (one compiled program), sequential, or auto: vmap on accelerators and, "
        "on the CPU, for nets no wider than 128 units (a wider one already fills the cores); the per-step loop "
        "(train.loop steps, the default for cnn and resnet) always runs its seeds sequentially (docs/speed.md)",
    )
    seeds: Int = Field(
        1, ge=1,
        description="train this many copies that differ only in their seed (seed, seed+1, ...) in one compiled "
        "program (jax.vmap), or one after another where that is faster",
    )
    devices: DeviceCount = Field(
        "auto",
        description="data parallelism: split every batch over this many devices of the default backend (a 1-D "
        "jax.sharding mesh; parameters replicated, batch norm over the whole batch); auto: every device (on the CPU "
        "one, unless JAX_NUM_CPU_DEVICES is set; under `dnnlab run --distributed`, every process's). data.batch_size "
        "must divide by the count (docs/scale.md)",
    )


class DiagnosisConfig(_Section):
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
    reference: ReferenceName = Field(
        "linear",
        description="linear: also fit a softmax regression on the same training examples (cached) and call a net "
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


class SweepConfig(_Section):
    """What `dnnlab sweep` runs: the cartesian product of `grid`, each with `seeds` seeds."""

    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted key -> list of values, e.g. model.depth: [1, 2, 3]"
    )
    variants: list[dict[str, Any]] = Field(
        default_factory=list,
        description="named sets of overrides tried as one more axis, e.g. [{optimizer.name: sgd, optimizer.lr: 0.1}, ...]",
    )
    seeds: Int = Field(1, ge=1, description="seeds per grid point: seed, seed+1, ...")
    tune: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="one dotted key -> values, e.g. optimizer.lr: [0.001, 0.01, 0.1]: every grid point trains at each "
        "value (on the seeds tune_seeds names), and is compared at the value best by tune_metric",
    )
    tune_metric: MetricName = Field(
        "val_loss", description="what picks the tuned value: this metric of each trial's kept model (losses lowest, "
        "accuracies highest)",
    )
    tune_seeds: Literal["first", "all"] = Field(
        "first", description="first: the trials run on the first seed and the other seeds at the chosen value; all: "
        "every seed at every value, the mean over the seeds decides",
    )

    @model_validator(mode="after")
    def _non_empty_lists(self) -> "SweepConfig":
        for i, variant in enumerate(self.variants):
            if not variant:
                raise ValueError(f"variants[{i}]: give at least one KEY: VALUE")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{key}: give at least one value")
            if key.startswith("sweep") or key in ("name",):
                raise ValueError(f"grid.{key}: this key cannot be swept")
        if len(self.tune) > 1:
            raise ValueError(f"tune: one key at a time; got {', '.join(self.tune)}")
        for key, values in self.tune.items():
            if not values:
                raise ValueError(f"tune.{key}: give at least one value")
            if key.startswith("sweep") or key in ("name", "seed"):
                raise ValueError(f"tune.{key}: this key cannot be tuned")
            if key in self.grid or any(key in v for v in self.variants):
                raise ValueError(f"tune.{key}: the key is swept too (grid or variants); tune it or sweep it, not both")
        return self


class LoggingConfig(_Section):
    """Where a run's records go besides its folder: TensorBoard event files and MLflow."""

    tensorboard: bool = Field(
        True, description="write TensorBoard event files to RUN_DIR/tb/: every epoch's scalars, weight histograms, "
        "the config as hparams and the verdict as text",
    )
    histograms_every: Int = Field(5, ge=0, description="TensorBoard weight histograms every N epochs (0: never)")
    mlflow: Optional[str] = Field(
        None, min_length=1,
        description="MLflow tracking URI (e.g. sqlite:///mlflow.db) to log the finished run to; `--mlflow URI` "
        "overrides it; needs the extra: pip install -e '.[mlflow]'",
    )


class PretrainConfig(_Section):
    """Greedy layer-wise RBM pretraining (model.pretrain: rbm; dnnlab/pretrain.py)."""

    epochs: Int = Field(PRETRAIN_EPOCHS, ge=1, description="epochs of CD-k per hidden layer")
    lr: Float = Field(0.1, gt=0.0, description="the RBMs' learning rate (plain SGD on the CD-k statistics)")
    cd_steps: Int = Field(1, ge=1, le=100, description="k of CD-k: Gibbs steps from the data to the negative phase")
    batch_size: Int = Field(PRETRAIN_BATCH, gt=0, description="examples per CD-k update")
    init_scale: Float = Field(
        PRETRAIN_INIT_SCALE, gt=0.0, le=10.0,
        description="each RBM's weights start at this multiple of the layer's ordinary initial weights (model.init; "
        "glorot_uniform under auto)",
    )


class Config(_Section):
    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: Int = Field(0, ge=0, lt=2**31, description="seeds the init, the splits, shuffling and dropout")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    regularization: RegularizationConfig = RegularizationConfig()
    train: TrainConfig = TrainConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()
    logging: LoggingConfig = LoggingConfig()
    pretrain: PretrainConfig = Field(PretrainConfig(), description="the settings of model.pretrain: rbm")
    sweep: Optional[SweepConfig] = Field(None, description="used by `dnnlab sweep`; ignored by `dnnlab run`")

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        # an absurd model (width 1e9) is refused here, whatever the machine; `check_size` holds a
        # run to the machine's memory once the data are loaded
        problem = size_error(self, limit_bytes=MAX_MODEL_BYTES)
        if problem is not None:
            raise ValueError(problem)
        if self.data.dataset in FILE_DATASETS and not self.data.path:
            what = {"csv": "the CSV file", "npz": "the .npz file", "folder": "the folder of class folders"}
            raise ValueError(
                f"data.path: data.dataset {self.data.dataset} reads your own data; set data.path to "
                f"{what[self.data.dataset]} (docs/data.md)"
            )
        es = self.train.early_stopping
        if es.enabled and self.data.validation_split == 0:
            raise ValueError(
                "train.early_stopping.enabled needs a validation set: set data.validation_split "
                "above 0 (e.g. 0.1)"
            )
        return self

    @model_validator(mode="after")
    def _pretrain_supported(self) -> "Config":
        problem = pretrain_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self


def pretrain_problem(cfg: "Config") -> Optional[str]:
    """Why `cfg`'s model.pretrain cannot be honoured, or None: RBM pretraining is for the dense
    hidden layers of a sigmoid mlp (Bernoulli hidden units) on inputs in [0, 1] (Bernoulli
    visible units: data.normalize unit); anything else is refused before any JAX work."""
    m = cfg.model
    if m.pretrain == "none":
        return None
    fix = "set model.pretrain=none"
    if m.arch != "mlp":
        return f"model.pretrain: rbm pretrains the hidden layers of an mlp (model.arch mlp), not a {m.arch}; {fix}"
    if m.activation != "sigmoid":
        return (
            f"model.pretrain: rbm needs sigmoid hidden units (model.activation sigmoid: an RBM's hidden units are "
            f"Bernoulli, their probabilities a sigmoid), not {m.activation}; set model.activation=sigmoid, or {fix}"
        )
    if not m.layer_widths:
        return f"model.pretrain: rbm needs at least one hidden layer (model.depth is 0); {fix}"
    if m.norm != "none" or m.residual:
        what = "model.norm batch" if m.norm != "none" else "model.residual true"
        return f"model.pretrain: rbm pretrains plain sigmoid layers (a weight matrix and a bias), not with {what}; {fix}"
    if cfg.data.normalize != "unit":
        return (
            f"model.pretrain: rbm's first RBM has Bernoulli visible units, which need inputs in [0, 1] (data.normalize "
            f"unit), not standardized ones (Gaussian visible units are not supported); set "
            f"data.normalize=unit, or {fix}"
        )
    return None


# ---------------------------------------------------------------- loading and errors


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; anything larger is a mistake
MAX_YAML_DEPTH = 32  # a config nests 4 deep (sweep.variants[i].key); 3,000 deep overflowed the stack


class _YamlRefused(yaml.MarkedYAMLError):
    """YAML that parses but that a config may not use: an alias or anchor, deep nesting, a duplicate key."""


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases and anchors (a 371-byte "billion laughs" file expanded to
    gigabytes), with nesting capped at MAX_YAML_DEPTH and duplicate keys refused."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise _YamlRefused(
                problem=f"YAML aliases and anchors ({sign}{event.anchor}) are not allowed in a config; write the values out",
                problem_mark=event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlRefused(problem=f"nested more than {MAX_YAML_DEPTH} levels deep", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_keys(node: yaml.Node, path: str = "", lines: bool = True) -> None:
    """Refuse a key given twice in one mapping (YAML would keep the last silently); `path` is
    the dotted key of `node`, `lines` whether to name the lines (a file's, not a --set value's)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None:
                if key in seen:
                    where = f" (lines {seen[key]} and {line})" if lines else ""
                    raise _YamlRefused(
                        problem=f"{path}{key} is given twice{where}; merge them into one, or delete one",
                        problem_mark=key_node.start_mark,
                    )
                seen[key] = line
            _check_keys(value_node, f"{path}{key}." if key is not None else path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(item, f"{path.removesuffix('.')}[{i}].", lines)


_EMPTY = object()  # `_parse_yaml` of a document with no content


def _parse_yaml(text: str, key: str = "") -> Any:
    """The value of one YAML document through _ConfigLoader, or _EMPTY; raises yaml.YAMLError.
    `key`: the dotted key the document is the value of (a --set value's), for the messages."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return _EMPTY
        _check_keys(node, f"{key}." if key else "", lines=not key)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`line L, column C: problem` of a YAML error."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"


def _read_text(path: Path) -> str:
    """The text of a regular file of at most MAX_CONFIG_BYTES; ConfigError otherwise (a FIFO must not hang)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a folder; give the path of a YAML config file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file (a pipe or a device); give the path of a YAML config file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {info.st_size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes")
        try:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}); a config file is YAML") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file; ConfigError names the file (and line) when it cannot be used.

    Only a regular file of at most MAX_CONFIG_BYTES is read; aliases and anchors, nesting deeper
    than MAX_YAML_DEPTH, duplicate keys and an empty document are refused.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        raw = _parse_yaml(text)
    except _YamlRefused as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML at {_yaml_problem(exc)}") from None
    if raw is _EMPTY or raw is None:
        raise ConfigError(f"{path}: is empty; write the settings to train with, e.g. a copy of configs/quickstart.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (name, data, model, ...), "
            f"got a {type(raw).__name__}"
        )
    return raw


def parse_value(text: str, where: str, key: str = "") -> Any:
    """A `--set` or `--grid` VALUE of dotted `key` parsed as YAML (an empty VALUE is null).

    Raises ConfigError naming `where` (e.g. `--set 'model.depth=x'`) and the value.
    """
    if not text.strip():
        return None
    try:
        value = _parse_yaml(text, key)
    except _YamlRefused as exc:
        raise ConfigError(f"{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc).split(": ", 1)[-1]
        raise ConfigError(
            f"{where}: the value {text!r} is not valid YAML ({problem}); e.g. model.hidden=[512,256], "
            "or quote text: name='\"a: b\"'"
        ) from None
    return None if value is _EMPTY else value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with `KEY=VALUE` overrides applied; VALUE is parsed as YAML (`parse_value`)."""
    out = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.depth=8")
        value = parse_value(text, f"--set {item!r}", key)
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {item!r}: {prefix} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of `loc`, or None."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            ann = next((a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if ann is None:
                return None
        model = ann
    return model


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "config"
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        owner = _section_model(loc)
        known = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        parent = ".".join(str(p) for p in loc[:-1])
        if close:
            hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?"
        else:
            hint = f"valid keys{' of ' + parent if parent else ''}: {', '.join(known)}"
        return f"{path}: unknown key; {hint}"
    if kind == "literal_error":
        allowed = [str(a) for a in get_args(_literal_of(loc))] or []
        close = difflib.get_close_matches(str(given), allowed, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"{path}: {given!r} is not one of: {', '.join(allowed)}{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" and (not loc or isinstance(given, dict)):
        return f"{path + ': ' if loc else ''}{msg}"
    if kind == "model_type" or kind == "dict_type":
        return f"{path}: expected a section (a mapping of keys), got {given!r}"
    return f"{path}: {msg.replace('Input should be', 'must be')} (got {given!r})"


def _literal_of(loc: tuple[Any, ...]) -> Any:
    owner = _section_model(loc)
    if owner is None:
        return None
    field = owner.model_fields.get(str(loc[-1]))
    if field is None:
        return None
    ann = field.annotation
    # Optional[Literal[...]] -> Literal[...]
    for arg in get_args(ann) or ():
        if get_args(arg) and all(isinstance(a, str) for a in get_args(arg)):
            return arg
    return ann


def validate(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into a Config, or raise ConfigError with every problem."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(f"  {ln}" for ln in lines)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply `--set` overrides and validate it.

    Args:
        path: the YAML file.
        overrides: `KEY=VALUE` strings with dotted keys; values are parsed as YAML.
    Returns:
        The validated, frozen Config. Raises ConfigError with a readable message.
    """
    return load_config_with_warnings(path, overrides)[0]


def load_config_with_warnings(path: str | Path, overrides: list[str] | None = None) -> tuple[Config, list[str]]:
    """`load_config`, and the `config_warnings` of what the file and the overrides set.

    Returns:
        (the validated Config, one message per option set but not honoured). Raises ConfigError.
    """
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    cfg = validate(raw, source=str(path))
    return cfg, config_warnings(cfg, raw)


# ---------------------------------------------------------------- options set but not honoured


def config_warnings(cfg: Config, raw: dict[str, Any]) -> list[str]:
    """Options set explicitly in `raw` that the run will not honour, one message each.

    A key counts as set when `raw` holds it, except in a section that holds every key of its
    schema (what `dump_yaml` writes: a run's config.yaml, fixed.yaml), where only a value other
    than the default counts: there the presence of a key says nothing about what was chosen.

    Args:
        cfg: `validate(raw)`.
        raw: the mapping that was validated (the YAML file after `--set` overrides).
    Returns:
        Messages that name the dotted key, its value, what happens instead and the fix.
    """
    out: list[str] = []

    def given(key: str) -> bool:
        return _explicit(raw, key, _value(cfg, key))

    def ignored(key: str, why: str) -> None:
        out.append(f"{key}: {_show(_value(cfg, key))} is ignored: {why}")

    m, t, es = cfg.model, cfg.train, cfg.train.early_stopping
    d = cfg.data
    if d.dataset == "digits" and given("data.path"):
        ignored("data.path", "the digits are embedded in dnnlab; data.path is for mnist, fashion-mnist, cifar10 "
                "and your own csv, npz or folder data")
    for key, readers in _DATA_KEY_READERS.items():
        if d.dataset not in readers and given(f"data.{key}"):
            names = readers[0] if len(readers) == 1 else f"{', '.join(readers[:-1])} and {readers[-1]}"
            ignored(f"data.{key}", f"only data.dataset {names} read{'s' if len(readers) == 1 else ''} it, and "
                    f"data.dataset is {d.dataset}; remove it")
    if d.dataset in FILE_DATASETS and d.test_path and given("data.test_split"):
        ignored("data.test_split", "data.test_path gives the test set; remove one of them")
    if m.arch != "cnn":
        what = (
            "a resnet's layout is fixed (3x3 convs at 16/32/64 channels, no pooling)"
            if m.arch == "resnet" else "an mlp has no conv blocks"
        )
        for key in ("model.channels", "model.kernel", "model.pool"):
            if given(key):
                ignored(key, f"{what}; remove it, or set model.arch=cnn")
    if m.arch != "resnet":
        for key in ("model.blocks", "model.shortcut"):
            if given(key):
                ignored(key, f"only a resnet has residual blocks ({'an' if m.arch == 'mlp' else 'a'} {m.arch}'s "
                        "shortcuts are model.residual); "
                        "remove it, or set model.arch=resnet")
    if m.arch != "resnet" and m.hidden is None and m.depth == 0 and given("model.width"):
        ignored("model.width", "model.depth is 0 (no hidden layers)")
    if m.activation != "leaky_relu" and given("model.leaky_slope"):
        ignored("model.leaky_slope", f"it is leaky_relu's slope and model.activation is {m.activation}")
    if m.activation != "maxout" and given("model.maxout_pieces"):
        ignored("model.maxout_pieces", f"it is maxout's and model.activation is {m.activation}")
    o = cfg.optimizer
    for key in _OPTIMIZER_HYPERPARAMETERS:
        if key not in OPTIMIZER_KEYS[o.name] and given(f"optimizer.{key}"):
            users = ", ".join(n for n, keys in OPTIMIZER_KEYS.items() if key in keys)
            ignored(f"optimizer.{key}", f"optimizer {o.name} does not use it (used by: {users})")
    for key in _SCHEDULE_HYPERPARAMETERS:
        if key not in SCHEDULE_KEYS[o.schedule] and given(f"optimizer.{key}"):
            users = ", ".join(n for n, keys in SCHEDULE_KEYS.items() if key in keys)
            ignored(f"optimizer.{key}", f"the {o.schedule} schedule does not use it (used by: {users})")
    if not es.enabled:
        if es.restore_best and given("train.early_stopping.restore_best"):
            out.append(
                "train.early_stopping.restore_best: true is ignored while early stopping is disabled: the last "
                "epoch's model is kept; set train.early_stopping.enabled=true to keep the best epoch's"
            )
        if given("train.early_stopping.patience"):
            ignored("train.early_stopping.patience", "early stopping is disabled (every epoch runs); "
                    "set train.early_stopping.enabled=true")
    if cfg.data.validation_split == 0 and given("train.early_stopping.monitor"):
        ignored("train.early_stopping.monitor", "data.validation_split is 0 (no validation set), so the best epoch "
                "is judged by train_loss; set data.validation_split above 0 (e.g. 0.1)")
    scanned, _ = stack_plan(m, t.stack, t.unroll)
    if t.stack == "scanned" and not scanned:
        out.append(f"train.stack: scanned is not honoured: {_unscanned_reason(m, t.stack)}; the layers run unrolled")
    elif t.unroll is not None and not scanned and given("train.unroll"):
        ignored("train.unroll", f"it applies to a scanned stack only, and {_unscanned_reason(m, t.stack)}")
    if t.seed_mode == "vmap" and given("train.seed_mode"):
        if t.seeds < 2:
            ignored("train.seed_mode", "it applies to train.seeds > 1, and this run has one seed")
        elif training_loop(cfg) != "scan":
            out.append(
                f"train.seed_mode: vmap is not honoured: the {t.seeds} seeds run sequentially, since the per-step "
                f"loop (train.loop {t.loop}: steps for a {m.arch}) is not vmapped; set train.loop=scan to vmap them "
                "(slow for convolutions on the CPU; docs/speed.md)"
            )
    if not cfg.diagnosis.instruments and given("diagnosis.probe_size"):
        ignored("diagnosis.probe_size", "diagnosis.instruments is false (no probe batch)")
    if cfg.diagnosis.reference == "none" and given("diagnosis.reference_margin"):
        ignored("diagnosis.reference_margin", "diagnosis.reference is none")
    if m.pretrain == "none":
        for key in PretrainConfig.model_fields:
            if given(f"pretrain.{key}"):
                ignored(f"pretrain.{key}", "model.pretrain is none (no pretraining); set model.pretrain=rbm")
    return out


# the data keys that only some datasets read (data.py); set for another, `config_warnings` says so
_DATA_KEY_READERS: dict[str, tuple[str, ...]] = {
    "test_path": FILE_DATASETS, "test_split": FILE_DATASETS, "label": ("csv",), "features": ("csv",),
    "header": ("csv",), "delimiter": ("csv",), "missing": ("csv", "npz"), "x_key": ("npz",), "y_key": ("npz",),
    "x_test_key": ("npz",), "y_test_key": ("npz",), "image_size": ("folder",), "channels": ("folder",),
}
_OPTIMIZER_HYPERPARAMETERS = tuple(dict.fromkeys(k for keys in OPTIMIZER_KEYS.values() for k in keys))
_SCHEDULE_HYPERPARAMETERS = tuple(dict.fromkeys(k for keys in SCHEDULE_KEYS.values() for k in keys))
# defaults that validation fills in, so that a dumped section shows them as given
_RESOLVED_DEFAULTS = {"model.depth": DEFAULT_DEPTH, "model.width": DEFAULT_WIDTH}


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


def _value(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _explicit(raw: dict[str, Any], dotted: str, value: Any) -> bool:
    """Whether `raw` sets `dotted` (see `config_warnings`: a complete section counts non-defaults only)."""
    *parents, key = dotted.split(".")
    section: Any = raw
    for part in parents:
        section = section.get(part) if isinstance(section, dict) else None
    if not isinstance(section, dict) or key not in section:
        return False
    owner = _section_model(tuple(dotted.split(".")))
    if owner is None or not set(owner.model_fields) <= set(section):
        return True
    default = _RESOLVED_DEFAULTS.get(dotted, owner.model_fields[key].default)
    return value != default


def _show(value: Any) -> str:
    """A value as the YAML a user writes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The fully resolved config as plain data (defaults included)."""
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text that `load_config` reads back to an equal Config."""
    return yaml.dump(to_dict(cfg), Dumper=_PlainDumper, sort_keys=False)


class _PlainDumper(yaml.SafeDumper):
    """SafeDumper that writes a shared value out each time: `read_yaml` refuses aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors' YAML validation."""
    schema = Config.model_json_schema()
    schema["title"] = "dnnlab config"
    return schema
