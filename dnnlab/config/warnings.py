"""Options a config sets that the run will not honour: one message each, naming the key, its
value, what happens instead and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    # the thresholds that one task's verdict reads (docs/diagnosis.md#regression)
    if cfg.data.task == "regression":
        for key in _CLASSIFICATION_THRESHOLDS:
            if given(f"diagnosis.{key}"):
                ignored(f"diagnosis.{key}", "it is a classification threshold and data.task is regression (the fit is "
                        "judged on R^2: diagnosis.poor_train_r2, chance_r2, overfit_gap_r2)")
    else:
        for key in _REGRESSION_THRESHOLDS:
            if given(f"diagnosis.{key}"):
                ignored(f"diagnosis.{key}", "it is a regression threshold and data.task is classification")
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
_CLASSIFICATION_THRESHOLDS = ("target_train_accuracy", "poor_train_margin", "chance_skill", "overfit_gap", "imbalance_share")
_REGRESSION_THRESHOLDS = ("poor_train_r2", "chance_r2", "overfit_gap_r2")
_OPTIMIZER_HYPERPARAMETERS = tuple(dict.fromkeys(k for keys in OPTIMIZER_KEYS.values() for k in keys))
_SCHEDULE_HYPERPARAMETERS = tuple(dict.fromkeys(k for keys in SCHEDULE_KEYS.values() for k in keys))
# defaults that validation fills in, so that a dumped section shows them as given
_RESOLVED_DEFAULTS = {"model.depth": DEFAULT_DEPTH, "model.width": DEFAULT_WIDTH}


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
