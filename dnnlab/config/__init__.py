"""The experiment config: names, schema, YAML loading, `--set` overrides, readable errors,
the options set but not honoured, sizing and the loop/stack policy.

Everything a run needs is checked here, before any JAX work. Errors name the dotted key, the
value given and what is allowed; unknown keys get the closest valid key.

Lives here: `names` (the Literals every registry is held to, key tables, limits, ConfigError),
`types` (the field types and the section base), `schema` (the pydantic sections and Config),
`diagnosis` (the diagnosis section: the instruments and the verdict's thresholds), `load` (the
guarded YAML loader, `--set`, the errors, dumping), `warnings` (RULES: what a config sets that a
run will not honour), `sizing` (model counts and memory, refused before JAX), `plan` (loop,
stack and data-seed policy).
May import: the standard library, yaml, pydantic. Imported by everything else.
"""

from __future__ import annotations

from dnnlab.config.load import (
    apply_overrides,
    dump_yaml,
    flatten,
    json_schema,
    load_config,
    load_config_with_warnings,
    read_yaml,
    safe_yaml,
    validate,
)
from dnnlab.config.names import (
    ACTIVATIONS,
    DATASET_SHAPES,
    DEFAULT_TEST_SPLIT,
    FILE_DATASETS,
    NUM_CLASSES,
    OPTIMIZER_KEYS,
    OPTIMIZERS,
    PRETRAIN_BATCH,
    PRETRAIN_EPOCHS,
    SCHEDULE_KEYS,
    ActivationName,
    Arch,
    ConfigError,
    Dataset,
    InitializerName,
    InitName,
    OptimizerName,
    ScheduleName,
    StackName,
)
from dnnlab.config.plan import data_seed, stack_length, stack_plan, training_loop
from dnnlab.config.schema import (
    Config,
    DataConfig,
    DiagnosisConfig,
    EarlyStoppingConfig,
    ModelConfig,
    OptimizerConfig,
    PretrainConfig,
    RegularizationConfig,
    pretrain_problem,
    residual_blocks,
)
from dnnlab.config.sizing import (
    check_size,
    machine_memory_bytes,
    model_counts,
    size_error,
    sweep_size,
    sweep_size_error,
)
from dnnlab.config.warnings import config_warnings

__all__ = [
    "ACTIVATIONS",
    "ActivationName",
    "Arch",
    "Config",
    "ConfigError",
    "DATASET_SHAPES",
    "DEFAULT_TEST_SPLIT",
    "DataConfig",
    "Dataset",
    "DiagnosisConfig",
    "EarlyStoppingConfig",
    "FILE_DATASETS",
    "InitName",
    "InitializerName",
    "ModelConfig",
    "NUM_CLASSES",
    "OPTIMIZERS",
    "OPTIMIZER_KEYS",
    "OptimizerConfig",
    "OptimizerName",
    "PRETRAIN_BATCH",
    "PRETRAIN_EPOCHS",
    "PretrainConfig",
    "RegularizationConfig",
    "SCHEDULE_KEYS",
    "ScheduleName",
    "StackName",
    "apply_overrides",
    "check_size",
    "config_warnings",
    "data_seed",
    "dump_yaml",
    "flatten",
    "json_schema",
    "load_config",
    "load_config_with_warnings",
    "machine_memory_bytes",
    "model_counts",
    "pretrain_problem",
    "read_yaml",
    "safe_yaml",
    "residual_blocks",
    "size_error",
    "stack_length",
    "stack_plan",
    "sweep_size",
    "sweep_size_error",
    "training_loop",
    "validate",
]
