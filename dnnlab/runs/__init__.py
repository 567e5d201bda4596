"""Run folders: their file names, atomic writes, metrics.jsonl, summary.json, checkpoints,
resume states and manifests, the writers, and reading them back with the rules every reader
shares (the kept model's metrics, the statistics over seeds).

This package is the one owner of the run folder's format: training writes through `RunDir`,
summary.json is written only by `write_summary`, and diagnose, compare, evaluate and the CLI
read through `load_run`, `read_manifest` and `kept_metrics`. Every file is written to a temp
file in the same folder and renamed into place (never through a symlink), so a killed run
leaves each finished epoch readable and never a half-written file.

Lives here: `names` (file, metric and status names, exit codes, the one command formatter),
`files` (atomic writes, folders, locks, the inputs a run is tied to), `summary` (the stub of a
run that ended without its own summary, and the epochs a history holds), `writers` (the Writer
interface, its fan-out and background thread, the run folder's writer), `read` (reading runs,
states and manifests back), `cache` (the cache folder and whether compiled programs are kept).
May import: the standard library, config (lazily), numpy (lazily). The CLI starts without numpy.
"""

from __future__ import annotations

from dnnlab.runs.cache import (
    cache_exposure,
    cache_problem,
    cache_root,
    compiled_cache_off,
)
from dnnlab.runs.files import (
    FolderLock,
    atomic_write_bytes,
    atomic_write_text,
    config_digest,
    new_run_dir,
    write_figure,
    write_inputs,
    write_manifest,
    write_preprocessing,
    write_summary,
)
from dnnlab.runs.names import (
    CLASS_METRICS,
    CONFIG,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_VERDICT,
    FINISHED,
    INPUTS,
    MANIFESTS,
    METRICS,
    METRICS_FILE,
    REGRESSION_METRICS,
    PREPROCESSING,
    REPORT,
    RUN_LOCK,
    SEEDS_MANIFEST,
    STATE,
    STATE_PREV,
    STATUS_EXIT,
    SUMMARY,
    SWEEP_MANIFEST,
    origin,
    origin_words,
    shell_command,
)
from dnnlab.runs.read import (
    StateError,
    is_number,
    kept_checkpoint,
    kept_metrics,
    load_checkpoint,
    load_run,
    member_dirs,
    nonfinite_array,
    read_inputs,
    read_manifest,
    read_metrics,
    read_preprocessing,
    run_folder_problem,
    read_state,
    read_summary,
    seed_stats,
)
from dnnlab.runs.summary import epochs_run, stub_summary
from dnnlab.runs.writers import Background, MultiWriter, RunDir, Writer

__all__ = [
    "Background",
    "CLASS_METRICS",
    "CONFIG",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_VERDICT",
    "FINISHED",
    "FolderLock",
    "INPUTS",
    "MANIFESTS",
    "METRICS",
    "REGRESSION_METRICS",
    "METRICS_FILE",
    "PREPROCESSING",
    "MultiWriter",
    "REPORT",
    "RUN_LOCK",
    "RunDir",
    "SEEDS_MANIFEST",
    "STATE",
    "STATE_PREV",
    "STATUS_EXIT",
    "SUMMARY",
    "SWEEP_MANIFEST",
    "StateError",
    "Writer",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_exposure",
    "cache_problem",
    "cache_root",
    "compiled_cache_off",
    "config_digest",
    "epochs_run",
    "is_number",
    "kept_checkpoint",
    "kept_metrics",
    "load_checkpoint",
    "load_run",
    "member_dirs",
    "new_run_dir",
    "nonfinite_array",
    "origin",
    "origin_words",
    "read_inputs",
    "read_manifest",
    "read_metrics",
    "read_preprocessing",
    "read_state",
    "read_summary",
    "run_folder_problem",
    "seed_stats",
    "shell_command",
    "stub_summary",
    "write_figure",
    "write_inputs",
    "write_manifest",
    "write_preprocessing",
    "write_summary",
]
