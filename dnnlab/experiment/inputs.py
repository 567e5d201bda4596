"""What a run is tied to (`inputs.json`: the resolved config's hash and the data's
fingerprint) and the checks that hold a resume or a fix to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from dnnlab import runs
from dnnlab.config import Config
from dnnlab.data import Dataset
from dnnlab.runs import shell_command

if TYPE_CHECKING:
    pass
from dnnlab.experiment.load import ExperimentError, load_data

# ---------------------------------------------------------------- what a run started with


def run_lock(run_dir: Path) -> runs.FolderLock:
    """The lock a process holds on a run folder while it trains in it: a second `run --resume`
    of the folder is refused (ExperimentError) while that process lives."""
    def busy(pid: int) -> ExperimentError:
        return ExperimentError(
            f"{run_dir}: process {pid} is training this run ({runs.RUN_LOCK}); wait for it or stop it" if pid
            else f"{run_dir / runs.RUN_LOCK}: cannot take the lock"
        )

    return runs.FolderLock(run_dir, runs.RUN_LOCK, busy)


def record_inputs(
    run_dir: Path, cfg: Config, ds: Dataset, found: Optional[Any] = None, origin: Optional[Any] = None,
    argv: Sequence[str] = (),
) -> None:
    """inputs.json: the resolved config and the fingerprint of the data (`data.fingerprint`), as
    found at `found` (a DataConfig; default cfg.data); with `origin` (`runs.origin`: the config
    file and its overrides, in order) and `argv` (the command line), its `command`; and preprocessing.json (`runs.write_preprocessing`)."""
    from dnnlab.data import fingerprint

    command = None
    if origin is not None:
        words = runs.origin_words(origin)
        command = {"config": words[0], "overrides": list(words[2::2]), "argv": list(argv)}
    runs.write_inputs(run_dir, cfg.model_dump(mode="json"), fingerprint(found or cfg.data, ds), command)
    if ds.preprocessing:  # what prediction needs: how raw inputs become these inputs
        runs.write_preprocessing(run_dir, ds.preprocessing)


def located(cfg: Config, inputs: Optional[dict[str, Any]]) -> Config:
    """`cfg` with data.path and data.test_path as the run recorded them (absolute), where they
    still exist: a run is continued, fixed or evaluated on its data from any folder."""
    found = {f["key"].removeprefix("data."): f["path"] for f in (inputs or {}).get("data", {}).get("files", [])}
    update = {key: path for key, path in found.items() if key in ("path", "test_path") and Path(path).exists()}
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)}) if update else cfg


def _afresh(run_dir: Path) -> str:
    return shell_command("dnnlab", "run", Path(run_dir) / runs.CONFIG, "--out", Path(run_dir).parent)


def check_config(run_dir: Path, saved: Config, inputs: Optional[dict[str, Any]]) -> None:
    """ExperimentError (exit 2) when the run's config.yaml is no longer the config it started
    with (inputs.json): only train.epochs may have grown, and logging (output only) changed."""
    if inputs is None:
        return  # a folder made before runs recorded their inputs
    now = saved.model_dump(mode="json")
    if runs.config_digest(now) == inputs["config_sha256"]:
        return
    from dnnlab.config import flatten

    old, new = flatten(inputs["config"]), flatten(now)
    changed = sorted(
        k for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and not k.startswith("logging.")
        and not (k == "train.epochs" and isinstance(new.get(k), int) and isinstance(old.get(k), int) and new[k] > old[k])
    )
    if changed:
        raise ExperimentError(
            f"{run_dir / runs.CONFIG} is not the config the run started with ({runs.INPUTS}): "
            f"{', '.join(f'{k} ({old.get(k)!r} -> {new.get(k)!r})' for k in changed)}; a run continues with its own "
            f"config (only train.epochs may grow): undo the edit, or train the edited config afresh: {_afresh(run_dir)}"
        )


def _files_changed(inputs: dict[str, Any]) -> list[str]:
    """The recorded data files whose size or modification time differ now (or that are gone)."""
    out = []
    for f in inputs["data"]["files"]:
        path = Path(f["path"])
        if "size" not in f:
            continue  # a folder: the digest decides
        if not path.is_file():
            out.append(f"{f['key']} {path} is gone")
            continue
        stat = path.stat()
        if stat.st_size != f.get("size") or stat.st_mtime_ns != f.get("mtime_ns"):
            out.append(f"{f['key']} {path} changed ({f.get('size')} -> {stat.st_size} bytes, modified since the run started)")
    return out


def check_data(run_dir: Path, ds: Dataset, inputs: Optional[dict[str, Any]]) -> None:
    """ExperimentError (exit 2) when `ds` is not the data the run started with: the digests of
    the loaded arrays differ (inputs.json)."""
    if inputs is None or ds.digest == inputs["data"]["digest"]:
        return
    what = "; ".join(_files_changed(inputs)) or f"its arrays are not those the run trained on ({ds.source})"
    raise ExperimentError(
        f"{run_dir}: the data differ from those the run started with: {what}; a run continues on its own data: "
        f"restore them, or train afresh on these: {_afresh(run_dir)}"
    )


def check_inputs(run_dir: Path) -> Optional[dict[str, Any]]:
    """`check_config` and the data of a finished run without training it (for `fix`): when a
    recorded file's size or modification time changed, the data are loaded and their digest
    compared. Returns the inputs (None for a folder without them); raises ExperimentError."""
    from dnnlab.config import ConfigError

    try:
        _, saved, _ = runs.load_run(run_dir)
        inputs = runs.read_inputs(run_dir)
    except (ConfigError, ValueError, OSError) as exc:
        raise ExperimentError(str(exc)) from None
    check_config(run_dir, saved, inputs)
    if inputs is not None and _files_changed(inputs):
        check_data(run_dir, load_data(located(saved, inputs)), inputs)
    return inputs
