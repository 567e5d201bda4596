"""The names a run folder is made of (files, metrics, statuses), the exit codes, and the one
formatter of every printed command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where checkpoints are read or written: the CLI starts without it
    pass


CONFIG = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY = "summary.json"
REPORT = "report.md"
SEEDS_MANIFEST = "seeds.json"  # a multi-seed run folder (train.seeds): its seed-<s>/ members
SWEEP_MANIFEST = "sweep.json"  # a sweep folder: its members
MANIFESTS = (SWEEP_MANIFEST, SEEDS_MANIFEST)
CHECKPOINTS = ("best", "last")  # <tag>.npz
STATE, STATE_PREV = "state.npz", "state.prev.npz"  # what `run --resume` continues from
INPUTS = "inputs.json"  # what the run started with: its resolved config (and hash), its data's fingerprint
PREPROCESSING = "preprocessing.json"  # how raw inputs become the model's inputs (data.preprocessing): what predict reads
RUN_LOCK = "run.lock"  # the process training in the folder (`FolderLock`)

# the six evaluation-mode metrics every epoch records
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
# ... under data.task: regression: the loss (standardized MSE), and MSE, MAE and R^2 in the
# target's own units
REGRESSION_METRICS = tuple(f"{split}_{m}" for split in ("train", "val", "test") for m in ("loss", "mse", "mae", "r2"))
# each split's balanced accuracy (the mean per-class recall): in summary.json's final and best for
# every run, and in the records too when the classes are watched (`train.class_aware`)
CLASS_METRICS = ("train_balanced_accuracy", "val_balanced_accuracy", "test_balanced_accuracy")
# the metrics that rank runs (`--metric`, `--tune-metric`, sweep.tune_metric), in the order
# `--help` lists them: the six, the balanced accuracies of validation and test, and under
# regression R^2, MSE and MAE of each split (val_accuracy, the default, means val_r2 there)
RANKING_METRICS = (
    *METRICS,
    *CLASS_METRICS[1:],
    *(m for kind in ("_r2", "_mse", "_mae") for m in REGRESSION_METRICS if m.endswith(kind)),
)
# the statuses whose kept model counts in a mean over seeds; diverged, interrupted and killed
# runs are listed, never averaged in
FINISHED = ("completed", "stopped_early")

# the exit codes of the commands, and a run's status as one
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_VERDICT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
STATUS_EXIT = {"completed": EXIT_OK, "stopped_early": EXIT_OK, "diverged": EXIT_FAILED, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}


def shell_command(*words: Any) -> str:
    """The one formatter of every command dnnlab prints or writes (`dnnlab run --resume RUN_DIR`,
    a remedy's `--set key=value`): each word shell-quoted, so that a path with a space, a `$(...)`
    or a quote pastes as the word it is."""
    import shlex

    return shlex.join(str(w) for w in words)


def set_words(settings: Any) -> tuple[str, ...]:
    """The words of `--set a --set b`: `--set` before each override (`key=value`), in their order."""
    return tuple(w for s in settings or () for w in ("--set", str(s)))


def set_options(settings: Any) -> str:
    """`--set a --set b` as one shell-quoted line (a remedy's options)."""
    return shell_command(*set_words(settings))


def origin_words(origin: Any) -> tuple[str, ...]:
    """What every printed command that trains a run again starts from: a config file (a path), or
    the words the run was given, `(CONFIG, "--set", "key=value", ...)`, the user's overrides in
    their order (`origin`), so that a pasted remedy trains the same net but for the remedy."""
    if isinstance(origin, (str, bytes)) or hasattr(origin, "__fspath__"):
        return (str(origin),)
    return tuple(str(w) for w in origin)


def origin(config: Any, overrides: Any = ()) -> tuple[str, ...]:
    """The words that name a run's config as the user gave it: CONFIG, then each override as `--set`."""
    return (str(config), *set_words(overrides))
