"""Options a config sets that the run will not honour: one message each, naming the key, its
value, what happens instead and the fix.

The rules are a table, `RULES`, read in its order (the order the messages print in). A rule
names the keys it is about, when one of them is not honoured, and why; a key is warned about
when the rule holds and the key was set (`config_warnings` says when a key counts as set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from dnnlab.config.names import (
    DEFAULT_DEPTH,
    DEFAULT_WIDTH,
    FILE_DATASETS,
    OPTIMIZER_KEYS,
    SCHEDULE_KEYS,
)
from dnnlab.config.plan import _unscanned_reason, stack_plan, training_loop
from dnnlab.config.schema import PretrainConfig, _section_model

if TYPE_CHECKING:
    from dnnlab.config.schema import Config


# ---------------------------------------------------------------- options set but not honoured


def config_warnings(cfg: Config, raw: dict[str, Any]) -> list[str]:
    """Options set explicitly in `raw` that the run will not honour, one message each, in the
    order of `RULES`.

    A key counts as set when `raw` holds it, except in a section that holds every key of its
    schema (what `dump_yaml` writes: a run's config.yaml, fixed.yaml), where only a value other
    than the default counts: there the presence of a key says nothing about what was chosen.

    Args:
        cfg: `validate(raw)`.
        raw: the mapping that was validated (the YAML file after `--set` overrides).
    Returns:
        Messages that name the dotted key, its value, what happens instead and the fix.
    """
    return [message for rule in RULES for message in rule.messages(cfg, raw)]


IGNORED = "{key}: {value} is ignored: {why}"
NOT_HONOURED = "{key}: {value} is not honoured: {why}"


@dataclass(frozen=True)
class Rule:
    """One rule: the `keys` it is about, `holds(cfg, key)` when that key's value is not
    honoured, `why(cfg, key)` in words, and the `message` they fill in. A rule with `if_set`
    false speaks whether or not the key was set."""

    name: str
    keys: tuple[str, ...]
    holds: Callable[[Config, str], bool]
    why: Callable[[Config, str], str]
    message: str = IGNORED
    if_set: bool = True

    def messages(self, cfg: Config, raw: dict[str, Any]) -> list[str]:
        """The rule's message for each of its keys that `raw` sets and `cfg` does not honour."""
        return [
            self.message.format(key=key, value=_show(_value(cfg, key)), why=self.why(cfg, key))
            for key in self.keys
            if self.holds(cfg, key) and (not self.if_set or _explicit(raw, key, _value(cfg, key)))
        ]


# the data keys that only some datasets read (data/); set for another, `config_warnings` says so
_DATA_KEY_READERS: dict[str, tuple[str, ...]] = {
    "test_path": FILE_DATASETS, "test_split": FILE_DATASETS, "label": ("csv",), "features": ("csv",),
    "header": ("csv",), "delimiter": ("csv",), "missing": ("csv", "npz"), "x_key": ("npz",), "y_key": ("npz",),
    "x_test_key": ("npz",), "y_test_key": ("npz",), "image_size": ("folder",), "channels": ("folder",),
}
_CLASSIFICATION_THRESHOLDS = ("target_train_accuracy", "poor_train_margin", "chance_skill", "overfit_gap", "imbalance_share")
_REGRESSION_THRESHOLDS = ("poor_train_r2", "chance_r2", "overfit_gap_r2")
_OPTIMIZER_HYPERPARAMETERS = tuple(dict.fromkeys(k for keys in OPTIMIZER_KEYS.values() for k in keys))
_SCHEDULE_HYPERPARAMETERS = tuple(dict.fromkeys(k for keys in SCHEDULE_KEYS.values() for k in keys))
# defaults that validation fills in, so that a dumped section shows them as given
_RESOLVED_DEFAULTS = {"model.depth": DEFAULT_DEPTH, "model.width": DEFAULT_WIDTH}


def _readers(key: str) -> tuple[str, ...]:
    return _DATA_KEY_READERS[key.removeprefix("data.")]


def _only_read_by(cfg: Config, key: str) -> str:
    readers = _readers(key)
    names = readers[0] if len(readers) == 1 else f"{', '.join(readers[:-1])} and {readers[-1]}"
    return (
        f"only data.dataset {names} read{'s' if len(readers) == 1 else ''} it, and "
        f"data.dataset is {cfg.data.dataset}; remove it"
    )


def _no_conv_blocks(cfg: Config, key: str) -> str:
    what = (
        "a resnet's layout is fixed (3x3 convs at 16/32/64 channels, no pooling)"
        if cfg.model.arch == "resnet" else "an mlp has no conv blocks"
    )
    return f"{what}; remove it, or set model.arch=cnn"


def _used_by(table: dict[str, tuple[str, ...]], key: str) -> str:
    name = key.removeprefix("optimizer.")
    return ", ".join(n for n, keys in table.items() if name in keys)


def _scanned(cfg: Config) -> bool:
    return stack_plan(cfg.model, cfg.train.stack, cfg.train.unroll)[0]


def _vmap_set(cfg: Config) -> bool:
    return cfg.train.seed_mode == "vmap"


RULES: tuple[Rule, ...] = (
    Rule(
        "digits-need-no-path", ("data.path",),
        lambda cfg, key: cfg.data.dataset == "digits",
        lambda cfg, key: "the digits are embedded in dnnlab; data.path is for mnist, fashion-mnist, cifar10 "
        "and your own csv, npz or folder data",
    ),
    Rule(
        "data-key-of-another-reader", tuple(f"data.{key}" for key in _DATA_KEY_READERS),
        lambda cfg, key: cfg.data.dataset not in _readers(key),
        _only_read_by,
    ),
    Rule(
        "test-path-and-test-split", ("data.test_split",),
        lambda cfg, key: cfg.data.dataset in FILE_DATASETS and bool(cfg.data.test_path),
        lambda cfg, key: "data.test_path gives the test set; remove one of them",
    ),
    Rule(
        "conv-keys-off-a-cnn", ("model.channels", "model.kernel", "model.pool"),
        lambda cfg, key: cfg.model.arch != "cnn",
        _no_conv_blocks,
    ),
    Rule(
        "block-keys-off-a-resnet", ("model.blocks", "model.shortcut"),
        lambda cfg, key: cfg.model.arch != "resnet",
        lambda cfg, key: f"only a resnet has residual blocks ({'an' if cfg.model.arch == 'mlp' else 'a'} "
        f"{cfg.model.arch}'s shortcuts are model.residual); remove it, or set model.arch=resnet",
    ),
    Rule(
        "width-without-hidden-layers", ("model.width",),
        lambda cfg, key: cfg.model.arch != "resnet" and cfg.model.hidden is None and cfg.model.depth == 0,
        lambda cfg, key: "model.depth is 0 (no hidden layers)",
    ),
    Rule(
        "leaky-slope-off-leaky-relu", ("model.leaky_slope",),
        lambda cfg, key: cfg.model.activation != "leaky_relu",
        lambda cfg, key: f"it is leaky_relu's slope and model.activation is {cfg.model.activation}",
    ),
    Rule(
        "maxout-pieces-off-maxout", ("model.maxout_pieces",),
        lambda cfg, key: cfg.model.activation != "maxout",
        lambda cfg, key: f"it is maxout's and model.activation is {cfg.model.activation}",
    ),
    Rule(
        "optimizer-key-unused", tuple(f"optimizer.{key}" for key in _OPTIMIZER_HYPERPARAMETERS),
        lambda cfg, key: key.removeprefix("optimizer.") not in OPTIMIZER_KEYS[cfg.optimizer.name],
        lambda cfg, key: f"optimizer {cfg.optimizer.name} does not use it (used by: {_used_by(OPTIMIZER_KEYS, key)})",
    ),
    Rule(
        "schedule-key-unused", tuple(f"optimizer.{key}" for key in _SCHEDULE_HYPERPARAMETERS),
        lambda cfg, key: key.removeprefix("optimizer.") not in SCHEDULE_KEYS[cfg.optimizer.schedule],
        lambda cfg, key: f"the {cfg.optimizer.schedule} schedule does not use it (used by: {_used_by(SCHEDULE_KEYS, key)})",
    ),
    Rule(
        "restore-best-without-early-stopping", ("train.early_stopping.restore_best",),
        lambda cfg, key: not cfg.train.early_stopping.enabled and cfg.train.early_stopping.restore_best,
        lambda cfg, key: "while early stopping is disabled: the last epoch's model is kept; "
        "set train.early_stopping.enabled=true to keep the best epoch's",
        message="{key}: {value} is ignored {why}",
    ),
    Rule(
        "patience-without-early-stopping", ("train.early_stopping.patience",),
        lambda cfg, key: not cfg.train.early_stopping.enabled,
        lambda cfg, key: "early stopping is disabled (every epoch runs); set train.early_stopping.enabled=true",
    ),
    Rule(
        "monitor-without-validation", ("train.early_stopping.monitor",),
        lambda cfg, key: cfg.data.validation_split == 0,
        lambda cfg, key: "data.validation_split is 0 (no validation set), so the best epoch is judged by "
        "train_loss; set data.validation_split above 0 (e.g. 0.1)",
    ),
    Rule(
        "scanned-stack-that-cannot-scan", ("train.stack",),
        lambda cfg, key: cfg.train.stack == "scanned" and not _scanned(cfg),
        lambda cfg, key: f"{_unscanned_reason(cfg.model, cfg.train.stack)}; the layers run unrolled",
        message=NOT_HONOURED, if_set=False,
    ),
    Rule(
        # a stack asked to scan and left unrolled is the rule above's, unroll and all
        "unroll-of-an-unscanned-stack", ("train.unroll",),
        lambda cfg, key: cfg.train.stack != "scanned" and cfg.train.unroll is not None and not _scanned(cfg),
        lambda cfg, key: f"it applies to a scanned stack only, and {_unscanned_reason(cfg.model, cfg.train.stack)}",
    ),
    Rule(
        "vmap-of-one-seed", ("train.seed_mode",),
        lambda cfg, key: _vmap_set(cfg) and cfg.train.seeds < 2,
        lambda cfg, key: "it applies to train.seeds > 1, and this run has one seed",
    ),
    Rule(
        "vmap-of-the-per-step-loop", ("train.seed_mode",),
        lambda cfg, key: _vmap_set(cfg) and cfg.train.seeds >= 2 and training_loop(cfg) != "scan",
        lambda cfg, key: f"the {cfg.train.seeds} seeds run sequentially, since the per-step loop (train.loop "
        f"{cfg.train.loop}: steps for a {cfg.model.arch}) is not vmapped; set train.loop=scan to vmap them "
        "(slow for convolutions on the CPU; docs/speed.md)",
        message=NOT_HONOURED,
    ),
    Rule(
        "probe-size-without-instruments", ("diagnosis.probe_size",),
        lambda cfg, key: not cfg.diagnosis.instruments,
        lambda cfg, key: "diagnosis.instruments is false (no probe batch)",
    ),
    # the thresholds that one task's verdict reads (docs/diagnosis.md#regression)
    Rule(
        "classification-threshold-in-regression", tuple(f"diagnosis.{key}" for key in _CLASSIFICATION_THRESHOLDS),
        lambda cfg, key: cfg.data.task == "regression",
        lambda cfg, key: "it is a classification threshold and data.task is regression (the fit is judged on "
        "R^2: diagnosis.poor_train_r2, chance_r2, overfit_gap_r2)",
    ),
    Rule(
        "regression-threshold-in-classification", tuple(f"diagnosis.{key}" for key in _REGRESSION_THRESHOLDS),
        lambda cfg, key: cfg.data.task != "regression",
        lambda cfg, key: "it is a regression threshold and data.task is classification",
    ),
    Rule(
        "reference-margin-without-reference", ("diagnosis.reference_margin",),
        lambda cfg, key: cfg.diagnosis.reference == "none",
        lambda cfg, key: "diagnosis.reference is none",
    ),
    Rule(
        "pretrain-keys-without-pretraining", tuple(f"pretrain.{key}" for key in PretrainConfig.model_fields),
        lambda cfg, key: cfg.model.pretrain == "none",
        lambda cfg, key: "model.pretrain is none (no pretraining); set model.pretrain=rbm",
    ),
)


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
