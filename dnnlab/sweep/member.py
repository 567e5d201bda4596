"""One member of a sweep, run or continued from its saved state: the one code path, in this
process, in a worker process or in a Ray task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from dnnlab import runs
from dnnlab.config import Config, ConfigError, apply_overrides, data_seed, validate

if TYPE_CHECKING:
    from dnnlab.sweep.grid import Sweep


def failed_record(error: str) -> dict[str, Any]:
    """What sweep.json records of a member that failed (in this process or in its worker): its
    status and the error."""
    return {"status": "failed", "error": error}


def interrupted_record(folder: Optional[str] = None) -> dict[str, Any]:
    """What sweep.json records of a member stopped before it finished, with its run folder's
    name once it has one."""
    return {"status": "interrupted", **({"dir": folder} if folder else {})}


def run_member(
    folder: Path, manifest: dict[str, Any], member: dict[str, Any], cache: dict[str, Any],
    announce: Optional[Callable[[Path], None]] = None, plots: Optional[Callable[[Callable[[], Any]], None]] = None,
    writers: Sequence[runs.Writer] = (),
) -> dict[str, Any]:
    """Run one member of the sweep in `folder`, or continue it from its saved state.

    The one code path of a member, in this process, in a worker process or in a Ray task.
    Args: the sweep's manifest and the member's record (read, never written); `cache` keeps
    loaded datasets between the members of one process; `announce` is told the run folder as
    soon as it exists; `plots`, when given, is handed the drawing of the member's plots (its
    caller draws them while the next member trains); `writers` show its epochs live (the
    console). Returns what sweep.json records: dir,
    status, verdict and causes, or status failed with the error. KeyboardInterrupt propagates;
    the run folder says interrupted.
    """
    from dnnlab import data as datasets
    from dnnlab.experiment import ExperimentError, Shown

    # a member's printed commands start from the sweep's config, its --set and the member's overrides
    config_name = runs.origin(manifest.get("config_path", "config.yaml"), [*manifest.get("sets", []), *member["overrides"]])
    shown = Shown(writers, bool(writers), config_name, announce)
    # an interrupted or killed member with a saved state continues where it stopped
    previous = Path(folder) / member["dir"] if member.get("dir") else None
    try:
        outcome = None
        if previous is not None and runs.has_state(previous):
            outcome = _continued(previous, shown)
        if outcome is None:
            outcome = _started(folder, manifest, member, cache, shown, plots)
    except (ConfigError, datasets.DataError) as exc:
        return failed_record(str(exc))
    except ExperimentError as exc:
        if exc.code == runs.EXIT_INTERRUPTED:
            raise KeyboardInterrupt from None
        return failed_record(str(exc))
    except Exception as exc:  # a member's crash must not end the sweep
        return failed_record(f"{type(exc).__name__}: {exc}")
    return {
        "dir": outcome.run_dir.name, "status": outcome.summary["status"], "verdict": outcome.diagnosis.verdict,
        "causes": outcome.diagnosis.causes,
    }


def _continued(previous: Path, shown: Any) -> Any:
    """The member continued from its saved state in `previous`, completed; None when that state cannot be used."""
    from dnnlab.experiment import ExperimentError, finished_outcome, resume

    try:
        # None: it had finished, killed before sweep.json said so; it is read back
        outcome = resume(previous, (), shown) or finished_outcome(previous)
    except ExperimentError as exc:
        if exc.code == runs.EXIT_INTERRUPTED:
            raise KeyboardInterrupt from None
        outcome = None  # a state that cannot be used: the member starts over
    if outcome is not None:
        outcome.complete()
    return outcome


def _started(
    folder: Path, manifest: dict[str, Any], member: dict[str, Any], cache: dict[str, Any], shown: Any,
    plots: Optional[Callable[[Callable[[], Any]], None]],
) -> Any:
    """The member run from the start on its dataset (loaded once per process, in `cache`), completed or handed to `plots`."""
    from dnnlab import data as datasets
    from dnnlab.experiment import check_data, check_devices, execute

    base, name = manifest["base"], manifest["name"]
    raw = apply_overrides(base, member["overrides"] + [f"name={name}-{member['index']:03d}"])
    cfg: Config = validate(raw, source=f"member {member['index']}")
    key = json.dumps([cfg.data.model_dump(mode="json"), cfg.seed])
    if key not in cache:
        cache[key] = datasets.load(cfg.data, data_seed(cfg))
    # the memory and device checks of `dnnlab run`, before the member's folder exists
    check_data(cfg, cache[key])
    check_devices(cfg)
    outcome = execute(cfg, cache[key], Path(folder), shown)
    if plots is not None:
        plots(outcome.complete)
    else:
        outcome.complete()
    return outcome


def member_folder(sweep: Sweep, member: dict[str, Any]) -> Optional[str]:
    """The run folder of `member` when sweep.json does not name it yet: the newest folder with
    its name that no other member claims (a member that ran where no one reported its folder)."""
    if member.get("dir"):
        return member["dir"]
    claimed = {m.get("dir") for m in sweep.members}
    found = [p.name for p in sweep.path.glob(f"{sweep.manifest['name']}-{member['index']:03d}-*") if p.is_dir() and p.name not in claimed]
    return max(found) if found else None  # the folder names sort by their creation time
