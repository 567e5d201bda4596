"""The experiment config: schema, YAML loading, `--set` overrides and readable errors.

Everything a run needs is checked here, before any JAX work. Errors name the dotted key,
the value given and what is allowed; unknown keys get the closest valid key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The registries' names live here so the config can be checked without importing JAX;
# tests assert that the JAX-side registries hold exactly these names.
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
ARCHS = ("mlp", "cnn", "resnet")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "maxout", "elu", "gelu")
INITS = ("auto", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")
MONITORS = ("val_loss", "val_accuracy")

Dataset = Literal["digits", "mnist", "fashion-mnist", "cifar10"]
Arch = Literal["mlp", "cnn", "resnet"]
ShortcutName = Literal["identity", "none"]
NormName = Literal["none", "batch"]
StackName = Literal["auto", "unrolled", "scanned"]
PoolName = Literal["max", "none"]
NormalizeName = Literal["unit", "standard"]
ActivationName = Literal["sigmoid", "tanh", "relu", "leaky_relu", "prelu", "maxout", "elu", "gelu"]
InitName = Literal["auto", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal"]
OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
ScheduleName = Literal["constant", "step", "cosine", "warmup_cosine"]
Monitor = Literal["val_loss", "val_accuracy"]

DEFAULT_DEPTH = 2
DEFAULT_WIDTH = 256


class ConfigError(Exception):
    """A config that cannot be used; `str()` is the message for the user (one problem a line)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dataset: Dataset = Field("digits", description="digits (embedded) | mnist | fashion-mnist | cifar10")
    path: Optional[str] = Field(None, description="folder that holds the dataset's files")
    validation_split: float = Field(
        0.1, ge=0.0, lt=1.0, description="fraction of the training set held out for validation"
    )
    train_size: Optional[int] = Field(
        None, gt=0, description="subsample the training set to this many examples"
    )
    batch_size: int = Field(128, gt=0)
    split_seed: Optional[int] = Field(
        None, ge=0, lt=2**31,
        description="seeds the validation split and train_size subsample (default: the run's seed); "
        "the seeds of a train.seeds run share their first seed's split",
    )
    normalize: NormalizeName = Field(
        "unit", description="unit: pixels in [0, 1]; standard: per-channel zero mean, unit variance (training-set statistics)"
    )


class ModelConfig(_Section):
    arch: Arch = Field(
        "mlp",
        description="mlp | cnn (conv blocks, then the dense layers) | resnet (the CIFAR ResNet of He et al. 2016: "
        "a 3x3 conv, 3 stages of `blocks` residual blocks at 16/32/64 channels, global average pooling)",
    )
    channels: list[int] = Field([32, 64], description="cnn: output channels of each conv block")
    kernel: int = Field(3, ge=1, description="cnn: kernel size (odd), 'same' padding")
    pool: PoolName = Field("max", description="cnn: 2x2 max pooling after each conv block, or none")
    depth: Optional[int] = Field(None, ge=0, description=f"hidden layers (default {DEFAULT_DEPTH})")
    width: Optional[int] = Field(None, gt=0, description=f"units per hidden layer (default {DEFAULT_WIDTH})")
    hidden: Optional[list[int]] = Field(None, description="hidden widths, instead of depth/width")
    activation: ActivationName = "relu"
    leaky_slope: float = Field(0.01, gt=0.0, lt=1.0)
    maxout_pieces: int = Field(2, ge=2, description="linear pieces per maxout unit")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="drop rate of hidden units")
    input_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="drop rate of input units")
    init: InitName = Field("auto", description="auto: glorot for sigmoid/tanh, he for the ReLU family")
    residual: bool = Field(
        False, description="identity shortcuts around pairs of equal-width hidden layers (after the first)"
    )
    blocks: int = Field(3, ge=1, description="resnet: residual blocks per stage; depth = 6 * blocks + 2 (3: 20, 9: 56)")
    shortcut: ShortcutName = Field(
        "identity", description="resnet: identity shortcuts (zero-padded at stage changes), or none: the plain net"
    )
    norm: Optional[NormName] = Field(
        None,
        description="batch: batch normalization before each activation (running statistics at evaluation); "
        "default batch for resnet, none otherwise",
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
        given = [k for k in ("depth", "width") if data.get(k) is not None]
        if given:
            raise ValueError(
                f"both hidden and {'/'.join(given)} are given; use either hidden: [512, 256] "
                "or depth/width, not both"
            )
        if not isinstance(data["hidden"], list) or any(
            isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in data["hidden"]
        ):
            raise ValueError(f"hidden must be a list of positive integers, got {data['hidden']!r}")
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
    convolutions inside a while loop about 25x slower; bench/conv.py) and one scan per epoch otherwise."""
    if cfg.train.loop != "auto":
        return cfg.train.loop
    return "steps" if cfg.model.arch in ("cnn", "resnet") else "scan"


def data_seed(cfg: "Config") -> int:
    """The seed of the data split and subsample: data.split_seed, else the run's seed."""
    return cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed


def residual_blocks(widths: tuple[int, ...]) -> list[int]:
    """Indices i of the hidden layers that start a residual pair (i, i+1): layer 0 projects the
    input; then pairs (1, 2), (3, 4), ... whose input and both layers have the same width."""
    return [i for i in range(1, len(widths) - 1, 2) if widths[i - 1] == widths[i] == widths[i + 1]]


class OptimizerConfig(_Section):
    name: OptimizerName = "adam"
    lr: float = Field(0.001, gt=0.0, description="learning rate (peak, for schedules)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="momentum and nesterov")
    rho: float = Field(0.9, gt=0.0, lt=1.0, description="rmsprop's decay (alpha in the lecture)")
    b1: float = Field(0.9, ge=0.0, lt=1.0)
    b2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1.0e-8, gt=0.0)
    schedule: ScheduleName = "constant"
    step_epochs: int = Field(10, gt=0, description="step schedule: epochs between decays")
    step_factor: float = Field(0.1, gt=0.0, le=1.0, description="step schedule: lr multiplier per decay")
    warmup_epochs: int = Field(1, ge=0, description="warmup_cosine: epochs of linear warmup")
    min_lr_ratio: float = Field(
        0.0, ge=0.0, le=1.0, description="cosine schedules: final lr as a fraction of lr"
    )
    clip_norm: Optional[float] = Field(None, gt=0.0, description="global-norm gradient clipping")


class RegularizationConfig(_Section):
    l2: float = Field(0.0, ge=0.0, description="adds l2/2 * ||w||^2 to the loss")
    l1: float = Field(0.0, ge=0.0, description="adds l1 * ||w||_1 to the loss")
    weight_decay: float = Field(0.0, ge=0.0, description="decoupled decay: w -= lr * wd * w")
    include_biases: bool = Field(False, description="regularize biases too")


class EarlyStoppingConfig(_Section):
    enabled: bool = False
    monitor: Monitor = "val_loss"
    patience: int = Field(5, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = True


class TrainConfig(_Section):
    epochs: int = Field(20, gt=0)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    divergence_factor: float = Field(
        100.0,
        gt=1.0,
        description="stop as diverged when the training loss exceeds this multiple of the initial loss",
    )
    eval_batch_size: int = Field(2048, gt=0, description="examples per evaluation chunk")
    loop: Literal["auto", "scan", "steps"] = Field(
        "auto",
        description="scan: a whole epoch in one compiled lax.scan; steps: a Python loop over a compiled step; "
        "auto: steps for cnn and resnet (XLA's CPU convolutions are 20x slower inside a scan), scan otherwise",
    )
    train_eval_size: Optional[int] = Field(
        None, gt=0, description="measure the training metrics on a fixed, seeded subset of this many examples (default: all)"
    )
    stack: StackName = Field(
        "auto",
        description="how stacks of identical layers (an MLP's equal-width hidden layers, a resnet stage's blocks) "
        "are compiled: unrolled (fastest step, compile grows with depth), scanned (lax.scan over stacked "
        "parameters: compile flat in depth), auto: chosen by depth and device (README: Speed)",
    )
    unroll: Optional[int] = Field(
        None, ge=1, description="scanned stacks: layers per scan iteration (lax.scan's unroll); default: chosen by depth"
    )
    seed_mode: Literal["auto", "vmap", "sequential"] = Field(
        "auto",
        description="train.seeds > 1: vmap (one compiled program), sequential, or auto: vmap on accelerators "
        "and for small nets on the CPU, where one large model already fills the cores",
    )
    seeds: int = Field(
        1, ge=1,
        description="train this many copies that differ only in their seed (seed, seed+1, ...) in one compiled "
        "program (jax.vmap), or one after another where that is faster",
    )


class DiagnosisConfig(_Section):
    """Instruments and the thresholds of the verdict (README: "The diagnosis")."""

    instruments: bool = Field(True, description="record the per-layer instruments every epoch")
    probe_size: int = Field(512, gt=0, description="training examples in the fixed probe batch")
    target_train_accuracy: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="training accuracy that counts as good (default: from chance)"
    )
    poor_train_margin: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="training is poor below chance + margin * (1 - chance) accuracy",
    )
    min_progress: float = Field(
        0.1, gt=0.0, lt=1.0, description="the loss 'barely moved' if it fell by less than this fraction of its initial value"
    )
    window: int = Field(3, ge=2, description="epochs over which trends (still improving, plateau) are judged")
    improving_rate: float = Field(
        0.01, gt=0.0, description="mean relative loss decrease per epoch over the window that counts as still improving"
    )
    vanishing_ratio: float = Field(1e-3, gt=0.0, description="first/last layer gradient RMS below this is vanishing")
    vanishing_first_rms: float = Field(1e-4, gt=0.0, description="... when the first layer's gradient RMS is also below this")
    exploding_ratio: float = Field(70.0, gt=1.0, description="first/last layer gradient RMS above this is exploding")
    dead_fraction: float = Field(
        0.7, gt=0.0, le=1.0, description="a ReLU-family layer with this fraction of pre-activations <= 0 is dying"
    )
    saturated_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="a sigmoid/tanh layer with this fraction of |pre-activations| > 5 is saturated"
    )
    overfit_patience: int = Field(3, ge=1, description="epochs the validation loss must rise after its minimum")
    overfit_rise: float = Field(0.05, ge=0.0, description="... by at least this fraction of the minimum")
    overfit_gap: float = Field(0.1, gt=0.0, description="train minus validation accuracy beyond this is overfitting")
    lr_oscillation: float = Field(
        0.4, gt=0.0, le=1.0, description="fraction of epochs whose training loss rose that marks oscillation"
    )
    low_update_ratio: float = Field(1e-4, gt=0.0, description="update/weight ratio below this marks a learning rate too low")
    reference: Literal["linear", "none"] = Field(
        "linear",
        description="linear: also fit a softmax regression on the same training examples (cached) and call a net "
        "that fits its training set worse than it failed-training; none: no reference",
    )
    reference_margin: float = Field(
        0.05, ge=0.0, lt=1.0,
        description="training is poor when the kept model's training accuracy is below the reference's minus this "
        "(and its validation accuracy is not above the reference's plus this)",
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
    seeds: int = Field(1, ge=1, description="seeds per grid point: seed, seed+1, ...")

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
        return self


class Config(_Section):
    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0, lt=2**31, description="seeds the init, the splits, shuffling and dropout")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    regularization: RegularizationConfig = RegularizationConfig()
    train: TrainConfig = TrainConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()
    sweep: Optional[SweepConfig] = Field(None, description="used by `dnnlab sweep`; ignored by `dnnlab run`")

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        es = self.train.early_stopping
        if es.enabled and self.data.validation_split == 0:
            raise ValueError(
                "train.early_stopping.enabled needs a validation set: set data.validation_split "
                "above 0 (e.g. 0.1)"
            )
        return self


# ---------------------------------------------------------------- loading and errors


def read_yaml(path: Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file; ConfigError names the file (and line) when it cannot be used."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the path of a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML at {where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (name, data, model, ...), "
            f"got a {type(raw).__name__}"
        )
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with `KEY=VALUE` overrides applied; VALUE is parsed as YAML."""
    out = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.depth=8")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # a plain string that YAML cannot parse, e.g. "a: b: c"
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
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    return validate(raw, source=str(path))


def to_dict(cfg: Config) -> dict[str, Any]:
    """The fully resolved config as plain data (defaults included)."""
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text that `load_config` reads back to an equal Config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors' YAML validation."""
    schema = Config.model_json_schema()
    schema["title"] = "dnnlab config"
    return schema
