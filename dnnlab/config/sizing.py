"""Sizes from the config alone: parameter counts, the training state's bytes against the
machine's memory, and a sweep's member count, refused before any JAX work.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Optional

from dnnlab.config.names import (
    DATASET_SHAPES,
    FALLBACK_MEMORY_BYTES,
    FILE_DATASETS,
    MAX_MODEL_BYTES,
    MAX_SWEEP_MEMBERS,
    NUM_CLASSES,
    ConfigError,
)

if TYPE_CHECKING:
    from dnnlab.config.schema import Config, DataConfig, ModelConfig


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
