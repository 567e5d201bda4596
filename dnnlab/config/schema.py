"""The config's schema: frozen pydantic sections that forbid unknown keys, their cross-field
rules, and `Config` (the diagnosis section, thresholds and all, is `config.diagnosis`'s).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, get_args

from pydantic import BaseModel, Field, model_validator

from dnnlab.config.diagnosis import DiagnosisConfig
from dnnlab.config.names import (
    CLASSIFICATION_MONITORS,
    DEFAULT_DEPTH,
    DEFAULT_TEST_SPLIT,
    DEFAULT_WIDTH,
    FILE_DATASETS,
    MAX_BLOCKS,
    MAX_LAYERS,
    PRETRAIN_BATCH,
    PRETRAIN_EPOCHS,
    PRETRAIN_INIT_SCALE,
    REGRESSION_DATASETS,
    REGRESSION_MONITORS,
    SCAN_FROM_LAYERS,
    SCAN_UNROLL,
    ActivationName,
    Arch,
    Dataset,
    InitName,
    LoopName,
    MetricName,
    MissingName,
    Monitor,
    NormalizeName,
    NormName,
    OptimizerName,
    PoolName,
    PretrainName,
    ScheduleName,
    SeedModeName,
    ShortcutName,
    StackName,
    TaskName,
)
from dnnlab.config.types import ClassWeight, ColumnRef, DeviceCount, Float, Int, Section


class DataConfig(Section):
    dataset: Dataset = Field(
        "digits",
        description="digits (embedded) | mnist | fashion-mnist | cifar10 | csv (a table) | npz (arrays) | folder "
        "(images in one folder per class): the last three read your own files at data.path (docs/data.md)",
    )
    task: TaskName = Field(
        "classification",
        description="classification: the label is a class; regression (csv, npz): the label column (or y array) is a "
        "number, one target per example, trained with mean squared error on targets standardized with the training "
        "split's mean and standard deviation and reported in the target's own units (MSE, MAE, R^2)",
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


class ModelConfig(Section):
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
        return data  # both hidden and depth/width: after the fields, so that `depth: x` is its own error

    @model_validator(mode="after")
    def _fill_depth_width(self) -> "ModelConfig":
        given = [k for k in ("depth", "width") if getattr(self, k) is not None]
        if self.hidden is not None and given:
            raise ValueError(
                f"both hidden and {'/'.join(given)} are given; use either hidden: [512, 256] or depth/width, not "
                f"both (to override {given[0]} of a config with hidden, add --set model.hidden=null; "
                "--set model.hidden=[...] alone replaces a config's depth and width)"
            )
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


def residual_blocks(widths: tuple[int, ...]) -> list[int]:
    """Indices i of the hidden layers that start a residual pair (i, i+1): layer 0 projects the
    input; then pairs (1, 2), (3, 4), ... whose input and both layers have the same width."""
    return [i for i in range(1, len(widths) - 1, 2) if widths[i - 1] == widths[i] == widths[i + 1]]


class OptimizerConfig(Section):
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


class RegularizationConfig(Section):
    l2: Float = Field(0.0, ge=0.0, description="adds l2/2 * ||w||^2 to the loss")
    l1: Float = Field(0.0, ge=0.0, description="adds l1 * ||w||_1 to the loss")
    weight_decay: Float = Field(0.0, ge=0.0, description="decoupled decay: w -= lr * wd * w")
    include_biases: bool = Field(False, description="regularize biases too")


class EarlyStoppingConfig(Section):
    enabled: bool = False
    monitor: Monitor = "val_loss"
    patience: Int = Field(5, ge=0)
    min_delta: Float = Field(0.0, ge=0.0)
    restore_best: bool = True


class TrainConfig(Section):
    epochs: Int = Field(20, gt=0)
    keep_state: bool = Field(
        False,
        description="keep the resume state (state.npz, state.prev.npz: the weights, the optimizer's moments and the "
        "best model) of a run that finished, so that `run --resume --set train.epochs=N` can train it longer; "
        "an interrupted or failed run keeps it always",
    )
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


class SweepConfig(Section):
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


class LoggingConfig(Section):
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


class PretrainConfig(Section):
    """Greedy layer-wise RBM pretraining (model.pretrain: rbm; dnnlab/train/pretrain.py)."""

    epochs: Int = Field(PRETRAIN_EPOCHS, ge=1, description="epochs of CD-k per hidden layer")
    lr: Float = Field(0.1, gt=0.0, description="the RBMs' learning rate (plain SGD on the CD-k statistics)")
    cd_steps: Int = Field(1, ge=1, le=100, description="k of CD-k: Gibbs steps from the data to the negative phase")
    batch_size: Int = Field(PRETRAIN_BATCH, gt=0, description="examples per CD-k update")
    init_scale: Float = Field(
        PRETRAIN_INIT_SCALE, gt=0.0, le=10.0,
        description="each RBM's weights start at this multiple of the layer's ordinary initial weights (model.init; "
        "glorot_uniform under auto)",
    )


class Config(Section):
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
        if self.data.dataset in FILE_DATASETS and not self.data.path:
            what = {"csv": "the CSV file", "npz": "the .npz file", "folder": "the folder of class folders"}
            raise ValueError(
                f"data.path: data.dataset {self.data.dataset} reads your own data; set data.path to "
                f"{what[self.data.dataset]} (docs/data.md)"
            )
        if self.data.task == "regression" and self.data.dataset not in REGRESSION_DATASETS:
            kind = "a folder of class folders" if self.data.dataset == "folder" else "a built-in classification dataset"
            raise ValueError(
                f"data.task: regression reads numeric targets from your own table or arrays (data.dataset csv or npz); "
                f"data.dataset {self.data.dataset} is {kind}: set data.task=classification, or data.dataset to csv or npz"
            )
        if self.data.task == "regression" and self.train.class_weight != "none":
            raise ValueError(
                "train.class_weight: weighs classes, and data.task: regression has none; remove train.class_weight"
            )
        es = self.train.early_stopping
        wrong = CLASSIFICATION_MONITORS if self.data.task == "regression" else REGRESSION_MONITORS
        if es.monitor in wrong:
            allowed = "val_loss or val_r2" if self.data.task == "regression" else "val_loss, val_accuracy or val_balanced_accuracy"
            raise ValueError(
                f"train.early_stopping.monitor: {es.monitor} is not measured under data.task {self.data.task}; "
                f"monitor {allowed}"
            )
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
