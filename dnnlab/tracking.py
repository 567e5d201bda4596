"""A run's records outside its folder: TensorBoard event files while it trains, MLflow after.

TensorBoard: `TensorBoard` is a `runs.Writer` that writes `RUN_DIR/tb/` with tensorboardX (no
TensorFlow): every epoch's scalars (named by `scalars`), weight histograms every
`logging.histograms_every` epochs from the parameter arrays the run already copies to the host
for its checkpoint, and, once the run is diagnosed, the config as hparams with the kept
model's metrics and the verdict, causes and remedies as text. A resumed run rewrites the
folder: what was written up to its saved epoch is carried into a new event file, the rest (a
killed run's later epochs, an earlier report) is dropped, so every epoch is there once.

MLflow: `log_to_mlflow` reads a finished run folder (or a multi-seed, sweep or fix folder: a
parent MLflow run with one child per member) and logs params, per-epoch metrics, tags and
artifacts. It never fails the run: a store that cannot be reached gives warnings that say what
was not logged. tensorboardX and mlflow are imported only here, and only when used.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from dnnlab import runs

if TYPE_CHECKING:
    import numpy as np

    from dnnlab.config import Config
    from dnnlab.diagnose import Diagnosis

TB_DIR = "tb"
# bench/epoch.py: 64 fixed-width bins cost about a third of tensorboardX's default
# ("tensorflow", ~1,500 exponential bins) on the Fashion MLP's 650k weights
HISTOGRAM_BINS = 64
MLFLOW_EXTRA = "pip install -e '.[mlflow]'"
# what `scalars` names the records' keys; the rest are instruments
NAMES = {
    "train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test",
    "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val", "test_accuracy": "accuracy/test",
    "lr": "lr", "running_loss": "running/loss", "running_accuracy": "running/accuracy", "seconds": "time/epoch_seconds",
    "train_balanced_accuracy": "balanced_accuracy/train", "val_balanced_accuracy": "balanced_accuracy/val",
    "test_balanced_accuracy": "balanced_accuracy/test",
    # data.task: regression, in the target's own units
    **{f"{split}_{m}": f"{m}/{split}" for split in ("train", "val", "test") for m in ("mse", "mae", "r2")},
}
NOT_SCALARS = ("epoch", "seed")
REPORT_TAGS = ("_hparams_/", "hparams/", "kept/", "diagnosis/", "status/")  # written once, when the run is diagnosed
ARTIFACTS = (runs.REPORT, runs.CONFIG, runs.SUMMARY)  # and the plots (*.png)


class TrackingError(Exception):
    """Logging that cannot start (MLflow not installed); `str()` is the message, exit code 2."""

    code = runs.EXIT_BAD_INPUT


# ---------------------------------------------------------------- names shared by both


def _layer_names(record: dict[str, Any]) -> Callable[[int, int], str]:
    """(index, length of the list) -> layer name: layer1, layer2, ..., and `output` for the
    classifier, the last entry of the weight statistics (one longer than the unit statistics)."""
    weights = record.get("grad_rms") or record.get("weight_norm")
    n_weights = len(weights) if isinstance(weights, list) else 0
    width = len(str(max(n_weights, 1)))

    def name(i: int, length: int) -> str:
        return "output" if length == n_weights and i == length - 1 else f"layer{i + 1:0{width}d}"

    return name


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """One epoch's record as flat scalar names: `loss/train` ... `accuracy/test`, `lr`,
    `running/loss`, `time/epoch_seconds`, and `instruments/<layer>/<name>` for the per-layer
    instruments (`instruments/<name>` for a network-wide one). Nulls (non-finite values in
    metrics.jsonl) are left out; the names are the same in TensorBoard and MLflow."""
    layer = _layer_names(record)
    out: dict[str, float] = {}

    def add(tag: str, value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            out[tag] = float(value)

    for key, value in record.items():
        if key in NOT_SCALARS:
            continue
        if key in NAMES:
            add(NAMES[key], value)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, list):  # an instrument with several values per layer
                    for j, w in enumerate(v):
                        add(f"instruments/{layer(i, len(value))}/{key}/{j}", w)
                else:
                    add(f"instruments/{layer(i, len(value))}/{key}", v)
        else:
            add(f"instruments/{key}", value)
    return out


def kept_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The kept model's balanced accuracies and each class's recall (summary.json's per_class):
    `kept/balanced_accuracy/<split>`, `kept/recall/<split>/<class>`; the same names in
    TensorBoard and MLflow."""
    out = {}
    for key, value in runs.kept_metrics(summary).items():
        if key in runs.CLASS_METRICS and _finite(value):
            out[f"kept/balanced_accuracy/{key.split('_')[0]}"] = float(value)
    per_class = summary.get("per_class") if isinstance(summary.get("per_class"), dict) else {}
    names = (summary.get("data") or {}).get("classes") or []
    for split, recall in (per_class.get("recall") or {}).items():
        for c, r in enumerate(recall or []):
            if _finite(r):
                out[f"kept/recall/{split}/{names[c] if c < len(names) else c}"] = float(r)
    return out


def flat_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The config as dotted keys, its `sweep` section left out (it is not a parameter of the run)."""
    from dnnlab.compare import flatten

    return flatten({k: v for k, v in raw.items() if k != "sweep"})


# the settings the HParams tab shows for every run, whatever their value; any other setting only
# when it is not the default (the config file or --set chose it) or differs between the members of
# a sweep or multi-seed folder, so that the tab holds what was chosen, not every threshold
MAIN_HPARAMS = (
    "data.dataset", "data.batch_size", "model.arch", "model.activation", "model.depth", "model.width", "model.hidden",
    "model.dropout", "optimizer.name", "optimizer.lr", "regularization.l1", "regularization.l2",
    "regularization.weight_decay", "train.epochs", "seed",
)
NOT_HPARAMS = ("name", "logging.")  # what the run is called and where it writes: no setting of the net


def hparams_of(raw: dict[str, Any], varied: Any = ()) -> dict[str, Any]:
    """The settings of a config (`raw`: its model_dump) for TensorBoard's HParams: MAIN_HPARAMS,
    the settings that are not the default, and `varied` (the keys that differ from member to
    member of the folder the run belongs to); nulls are left out, lists are JSON text."""
    from dnnlab.config import validate

    defaults = flat_config(validate({}).model_dump(mode="json"))
    shown = set(MAIN_HPARAMS) | set(varied)
    return {
        k: (v if isinstance(v, (bool, int, float, str)) else _text(v))
        for k, v in flat_config(raw).items()
        if v is not None and (k in shown or (v != defaults.get(k) and not k.startswith(NOT_HPARAMS)))
    }


def varied_keys(run_dir: Path) -> list[str]:
    """The keys the members of the sweep or multi-seed folder holding `run_dir` differ in (their
    `params` in the manifest); [] for a run on its own."""
    manifest = _enclosing(Path(run_dir))
    members = (manifest or {}).get("members") or []
    return sorted({k for m in members if isinstance(m, dict) and isinstance(m.get("params"), dict) for k in m["params"]})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def diagnosis_markdown(diagnosis: dict[str, Any]) -> str:
    """The verdict, causes, evidence and remedies as Markdown (TensorBoard's text dashboard)."""
    lines = [f"**verdict**: {diagnosis.get('verdict', '?')}" + (" (provisional)" if diagnosis.get("provisional") else "")]
    causes = diagnosis.get("causes") or []
    lines += ["", f"**causes**: {', '.join(causes) if causes else 'none'}"]
    if diagnosis.get("evidence"):
        lines += ["", "**evidence**:", ""] + [f"- {e}" for e in diagnosis["evidence"]]
    remedies = diagnosis.get("remedies") or []
    lines += ["", "**remedies**:" if remedies else "**remedies**: none", ""]
    for r in remedies:
        sets = runs.shell_command(*(w for s in r.get("sets") or [r.get("set", "")] for w in ("--set", s)))
        lines.append(f"- `{sets}`: {r.get('why', '')}")
    return "\n".join(lines)


# ---------------------------------------------------------------- TensorBoard


class TensorBoard(runs.Writer):
    """Writes one run's TensorBoard events to RUN_DIR/tb/, flushed every epoch."""

    def __init__(self, run_dir: Path, cfg: Config, resume: Optional[tuple[int, list[dict[str, Any]]]] = None) -> None:
        """A writer for `run_dir`; `resume`: (the saved epoch the run continues after, the
        records up to it), when it continues a run (`_carry_over`). The event file is opened
        (and tensorboardX imported) by the first call that writes, in the run's writer thread."""
        self.cfg = cfg
        self.folder = Path(run_dir) / TB_DIR
        self.resume = resume
        self.every = cfg.logging.histograms_every
        self.epoch: Optional[int] = None  # the epoch last written
        self.histogram_epoch: Optional[int] = None
        self._tb: Any = None

    @property
    def tb(self) -> Any:
        """tensorboardX's SummaryWriter, opened on first use."""
        if self._tb is None:
            SummaryWriter = _tensorboardx().SummaryWriter

            earlier = sorted(self.folder.glob("events.out.tfevents.*")) if self.resume is not None else []
            # flush_secs: the writer flushes itself each epoch, its timer need not; the suffix
            # keeps a resumed run's new file apart from one written in the same second
            self._tb = SummaryWriter(logdir=str(self.folder), flush_secs=3600, filename_suffix=f".{secrets.token_hex(3)}")
            if self.resume is not None:
                self._carry_over(earlier, *self.resume)
        return self._tb

    def start(self, info: dict[str, Any]) -> None:
        self.tb  # noqa: B018 - opens the event file (the import's cost falls in the writer thread)

    def _carry_over(self, earlier: list[Path], epoch: int, history: list[dict[str, Any]]) -> None:
        """Write the records up to `epoch` again from metrics.jsonl's history (a kill can cut an
        event file short of epochs that metrics.jsonl and the state hold), copy the weight
        histograms up to `epoch` from what earlier processes wrote, and delete their files:
        epochs after the saved one (written before a kill) and an earlier report (hparams,
        verdict) are left out, so the folder holds every epoch once."""
        for record in history:
            self._scalars(record["epoch"], record)
        for path in earlier:
            for event in _read_events(path):
                if not event.HasField("summary") or event.step > epoch:
                    continue
                keep = [v for v in event.summary.value if v.WhichOneof("value") == "histo" and not v.tag.startswith(REPORT_TAGS)]
                if not keep:
                    continue
                if len(keep) < len(event.summary.value):
                    trimmed = type(event)()
                    trimmed.CopyFrom(event)
                    trimmed.summary.ClearField("value")
                    trimmed.summary.value.extend(keep)
                    event = trimmed
                self.tb.file_writer.add_event(event, step=event.step, walltime=event.wall_time)
        self.tb.flush()
        for path in earlier:
            path.unlink(missing_ok=True)

    def write(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._scalars(epoch, metrics)
        self.epoch = epoch
        self.tb.flush()  # a live TensorBoard sees each epoch

    def _scalars(self, epoch: int, metrics: dict[str, Any]) -> None:
        # one event with every scalar of the epoch (TensorBoard reads each value as its own
        # tag): a fifth of the cost of one event per scalar
        tb = self.tb
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars(metrics).items()]
        tb.file_writer.add_summary(Summary(value=values), epoch)

    def checkpoint(self, tag: str, arrays: dict[str, np.ndarray]) -> None:
        # the parameters the run copied to the host for last.npz after the epoch it just wrote
        # (a resumed run's first `last` comes before any epoch: its histograms are carried over)
        epoch = self.epoch
        if tag != "last" or epoch is None or epoch == self.histogram_epoch or not self.every or epoch % self.every:
            return
        self.histogram_epoch = epoch
        import numpy as np

        self.tb  # noqa: B018 - opened (and tensorboardX imported) before its modules are used
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import histogram

        values = [
            value
            for name, array in arrays.items() if array.size and np.issubdtype(array.dtype, np.floating)
            for value in histogram(f"weights/{name}", array, bins=HISTOGRAM_BINS).value
        ]
        self.tb.file_writer.add_summary(Summary(value=values), epoch)  # one event for every array
        self.tb.flush()

    def report(self, summary: dict[str, Any], diagnosis: Diagnosis) -> None:
        """After the diagnosis: the config's chosen settings (`hparams_of`) as hparams with the kept model's metrics, and the
        verdict as text, at the run's last epoch; then the event file is closed."""
        self.tb  # noqa: B018 - opened (and tensorboardX imported) before its modules are used
        from tensorboardX.summary import hparams

        step = int(summary.get("epochs_run") or 0)
        wanted = runs.METRICS + runs.CLASS_METRICS + runs.REGRESSION_METRICS
        kept = {f"hparams/{k}": v for k, v in runs.kept_metrics(summary).items() if k in wanted and _finite(v)}
        values = hparams_of(self.cfg.model_dump(mode="json"), varied_keys(self.folder.parent))
        for part in hparams(values, kept):
            self.tb.file_writer.add_summary(part, step)
        for tag, value in {**kept, **kept_scalars(summary)}.items():
            self.tb.add_scalar(tag, value, step)
        self.tb.add_text("diagnosis", diagnosis_markdown(diagnosis.to_dict()), step)
        self.tb.add_text("status", str(summary.get("status")), step)
        self.close()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


# what tensorboardX imports whenever it is installed, for features dnnlab never uses: PyTorch
# (its writer module, for torch tensors: 1.3 s of every run on 2 cores) and boto3 (its record
# writer, for s3:// folders: 0.12 s; a run folder is a local path)
_HIDDEN_FROM_TENSORBOARDX = ("torch", "boto3")


def _tensorboardx() -> Any:
    """tensorboardX, imported with `_HIDDEN_FROM_TENSORBOARDX` hidden during the import only, and
    only those that nothing has imported yet."""
    import sys

    if "tensorboardX" in sys.modules:
        import tensorboardX

        return tensorboardX
    hidden = [name for name in _HIDDEN_FROM_TENSORBOARDX if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import tensorboardX
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return tensorboardX


_finite = runs.is_number


def open_board(cfg: Config, run_dir: Path, resume: Any = None) -> Optional[TensorBoard]:
    """The run's TensorBoard writer, or None when `logging.tensorboard` is off; `resume` (a
    `train.Resume`) continues the event files after its saved epoch."""
    if not cfg.logging.tensorboard:
        return None
    return TensorBoard(run_dir, cfg, None if resume is None else (resume.epoch, resume.history))


def _read_events(path: Path) -> Iterator[Any]:
    """The Event protos of one event file (TFRecord framing: length, its CRC, data, its CRC);
    a record cut short by a kill, and what follows it, are skipped."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto.event_pb2 import Event

    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            return
        try:
            yield Event.FromString(data[start:end])
        except DecodeError:
            return
        pos = end + 4


# ---------------------------------------------------------------- MLflow


def require_mlflow() -> None:
    """Raise TrackingError (exit 2) with the install command when MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(f"logging.mlflow / --mlflow needs MLflow, an optional extra: {MLFLOW_EXTRA}") from None


def check_uri(uri: str) -> None:
    """TrackingError (exit 2) when MLflow cannot use `uri` as a tracking store (an unknown scheme;
    a plain folder, whose file store MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE is set):
    said before anything trains, not after. Only the client is made: no server is contacted."""
    require_mlflow()
    _short_retries()
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri)
    except Exception as exc:  # MlflowException and its kin: the URI names no store MLflow can use
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TrackingError(
            f"--mlflow / logging.mlflow {uri!r}: MLflow cannot use it as a tracking store ({type(exc).__name__}: "
            f"{first[:300]}{'...' if len(first) > 300 else ''}); give sqlite:///mlflow.db, http://host:5000 or another store it accepts"
        ) from None


def _short_retries() -> None:
    # MLflow retries an unreachable server 7 times with exponential backoff (minutes); a run
    # that has finished only needs to know soon. Settings the user made are kept.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


_RUN_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "diverged": "FAILED", "failed": "FAILED"}
RUN_DIR_TAG = "dnnlab.run_dir"


class _Store:
    """One tracking store for one command; after the first failure it logs nothing more and
    collects what it left out."""

    def __init__(self, uri: str) -> None:
        _short_retries()
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.error: Optional[str] = None
        self.not_logged: list[str] = []
        self.experiments: dict[str, str] = {}

    def attempt(self, what: Optional[str], fn: Callable[[], Any]) -> Any:
        """fn(), or None once the store has failed (then `what` is recorded as not logged)."""
        if self.error is None:
            try:
                return fn()
            except Exception as exc:  # any failure of the store: the run folder is what counts
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                self.error = f"{type(exc).__name__}: {first[:200]}{'...' if len(first) > 200 else ''}"
        if what is not None:
            self.not_logged.append(what)
        return None

    def experiment(self, name: str) -> str:
        if name not in self.experiments:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self.experiments[name] = self.client.create_experiment(name)
                except Exception:  # created meanwhile by another process
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found is not None:
                self.experiments[name] = found.experiment_id
        return self.experiments[name]

    def existing(self, experiment_id: str, folder: Path) -> list[Any]:
        """The MLflow runs logged from `folder` before (newest first)."""
        path = str(folder.resolve())
        if "'" in path:
            return []
        return self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{path}'", order_by=["attributes.start_time DESC"]
        )


def _millis(path: Path) -> Optional[int]:
    try:
        return int(path.stat().st_mtime * 1000)
    except OSError:
        return None


def _log_leaf(store: _Store, experiment_id: str, run_dir: Path, loaded: tuple[Any, Any, Any], parent_id: Optional[str]) -> str:
    """One run folder (`loaded`: what `runs.load_run` read from it) as an MLflow run, replacing
    the one logged from it before if the folder changed since; returns the MLflow run's id."""
    from mlflow.entities import Metric, Param

    history, cfg, summary = loaded
    raw = cfg.model_dump(mode="json")
    diagnosis = summary.get("diagnosis") or {}
    status = str(summary.get("status") or "unfinished")
    epochs = str(summary.get("epochs_run", max(len(history) - 1, 0)))
    for old in store.existing(experiment_id, run_dir):
        if old.data.tags.get("status") == status and old.data.tags.get("dnnlab.epochs_run") == epochs and old.info.status != "RUNNING":
            return old.info.run_id  # logged already, and the folder has not changed since
        store.client.delete_run(old.info.run_id)
    tags = {
        RUN_DIR_TAG: str(run_dir.resolve()), "dnnlab.epochs_run": epochs, "status": status,
        "verdict": str(diagnosis.get("verdict", "")), "causes": ", ".join(diagnosis.get("causes") or []),
    }
    if parent_id is not None:
        tags["mlflow.parentRunId"] = parent_id
    start = _millis(run_dir / runs.CONFIG)
    run = store.client.create_run(experiment_id, start_time=start, tags=tags, run_name=run_dir.name)
    run_id = run.info.run_id
    params = [Param(k, _text(v)) for k, v in flat_config(raw).items()]
    metrics, t = [], float(start or time.time() * 1000)
    for record in history:
        t += 1000 * float(record.get("seconds") or 0)
        metrics += [Metric(k, v, int(t), int(record["epoch"])) for k, v in scalars(record).items() if math.isfinite(v)]
    last_epoch = int(history[-1]["epoch"]) if history else 0
    metrics += [Metric(k, v, int(t), last_epoch) for k, v in kept_scalars(summary).items()]
    for i in range(0, len(params), 100):  # MLflow's limits per log_batch call
        store.client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        store.client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for path in [run_dir / name for name in ARTIFACTS] + sorted(run_dir.glob("*.png")):
        if path.exists():
            store.client.log_artifact(run_id, str(path))
    ended = _millis(run_dir / runs.SUMMARY)
    store.client.set_terminated(run_id, _RUN_STATUS.get(status, "KILLED"), end_time=ended)
    return run_id


def _log_parent(store: _Store, experiment_id: str, folder: Path, kind: str, manifest: dict[str, Any]) -> str:
    """A sweep, fix or multi-seed folder as the parent MLflow run (the one logged before is reused)."""
    from mlflow.entities import Param, RunTag

    members = manifest["members"]
    statuses = [m.get("status") for m in members]
    verdicts = sorted({str(m["verdict"]) for m in members if m.get("verdict")})
    open_members = [s for s in statuses if s not in ("completed", "stopped_early", "diverged", "failed")]
    status = manifest.get("status") if kind == "seeds" else ("completed" if not open_members else "unfinished")
    tags = {RUN_DIR_TAG: str(folder.resolve()), "dnnlab.kind": kind, "status": str(status), "verdicts": ", ".join(verdicts)}
    fix = manifest.get("fix")
    if isinstance(fix, dict):
        tags.update({"dnnlab.kind": "fix", "fix.run": str(fix.get("run")), "fix.verdict": str(fix.get("verdict")),
                     "fixed": "yes" if (folder / "fixed.yaml").exists() else "no"})
    found = store.existing(experiment_id, folder)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = store.client.create_run(experiment_id, start_time=_millis(folder), run_name=folder.name, tags=tags).info.run_id
        if kind == "sweep":
            params = {"sweep.grid." + k: v for k, v in (manifest.get("grid") or {}).items()}
            params.update({"sweep.seeds": manifest.get("seeds"), "sweep.variants": manifest.get("variants") or []})
        else:  # the seeds' shared config
            params = flat_config(runs.load_run(folder)[1].model_dump(mode="json"))
        items = [Param(k, _text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            store.client.log_batch(run_id, params=items[i : i + 100])
    store.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    names = [runs.SWEEP_MANIFEST, runs.SEEDS_MANIFEST, runs.CONFIG, runs.SUMMARY, "compare.md", "fixed.yaml"]
    for path in [folder / n for n in names] + sorted(folder.glob("*.png")):
        if path.exists():
            store.client.log_artifact(run_id, str(path))
    store.client.set_terminated(run_id, "FINISHED" if not open_members else "KILLED")
    return run_id


def _enclosing(folder: Path) -> Optional[dict[str, Any]]:
    """The manifest of the sweep or multi-seed folder that lists `folder` as a member, if any."""
    try:
        found = runs.read_manifest(folder.parent)
    except ValueError:
        return None
    if found is None or not any(m.resolve() == folder.resolve() for m in runs.member_dirs(folder.parent, found[1])):
        return None
    return found[1]


def _experiment_name(folder: Path, manifest: Optional[dict[str, Any]]) -> str:
    """The MLflow experiment: the config's name (a sweep's base config's; a fix goes with the
    run it fixes); a member of a sweep, logged alone, goes with its sweep."""
    if manifest is None and (outer := _enclosing(folder)) is not None:
        return _experiment_name(folder.parent, outer)
    base = (manifest or {}).get("base")
    if isinstance(base, dict) and base.get("name"):
        return str(base["name"])
    if manifest is not None and manifest.get("name"):
        return str(manifest["name"])
    try:
        return runs.load_run(folder)[1].name
    except Exception:
        return "dnnlab"


@dataclass
class Logged:
    """What `log_to_mlflow` did: the MLflow run of the folder (a sweep's, fix's or multi-seed
    folder's parent run), None when it was not logged, and warnings of what was not."""

    run_id: Optional[str]
    problems: list[str]

    def line(self, uri: str) -> Optional[str]:
        """The one line a command prints when everything was logged."""
        return f"logged to MLflow run {self.run_id} at {uri}" if self.run_id and not self.problems else None


def log_to_mlflow(uri: str, folder: Path, again: str = "") -> Logged:
    """Log a finished run folder, or a multi-seed, sweep or fix folder (a parent run with one
    child per member), to the MLflow store at `uri`. Returns the run's id and the warnings
    (none when all was logged; `again` tells how to log later what was not); never raises for
    the store: the run folder is complete whatever happens here. A folder logged before is logged again only if
    it changed (its earlier MLflow run is then deleted); a parent run is reused.

    Raises TrackingError when MLflow is not installed.
    """
    import logging

    require_mlflow()
    folder = Path(folder)
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.WARNING)  # not the store's table creation on every first use
    try:
        store = _Store(uri)
        try:
            found = runs.read_manifest(folder)
        except ValueError as exc:
            return Logged(None, [f"MLflow: not logged: {exc}"])
        manifest = found[1] if found else None
        problems: list[str] = []
        experiment_id = store.attempt(None, lambda: store.experiment(_experiment_name(folder, manifest)))
        parent = None
        if found is not None:
            kind = "seeds" if found[0] == runs.SEEDS_MANIFEST else "sweep"
            parent = store.attempt(f"{folder} (the parent run)", lambda: _log_parent(store, experiment_id, folder, kind, found[1]))
        elif _enclosing(folder) is not None:  # a member logged alone (resumed): under its sweep's run, if logged
            earlier = store.attempt(None, lambda: store.existing(experiment_id, folder.parent))
            parent = earlier[0].info.run_id if earlier else None
        logged = None
        for member in runs.member_dirs(folder, found[1]) if found is not None else [folder]:
            if not (member / runs.SUMMARY).exists():
                problems.append(f"MLflow: {member} not logged: it has not finished (no {runs.SUMMARY})")
                continue
            try:
                loaded = runs.load_run(member)
            except Exception as exc:  # ConfigError, ValueError, OSError: a damaged folder
                problems.append(f"MLflow: {member} not logged: {exc}")
                continue
            logged = store.attempt(f"{member} (params, metrics, tags, artifacts)", lambda m=member, d=loaded: _log_leaf(store, experiment_id, m, d, parent))
        if store.error is not None:
            problems.insert(0, f"MLflow at {uri} failed ({store.error}); not logged: {'; '.join(store.not_logged)}. "
                               f"The run folders are complete{'; log them later with: ' + again if again else ''}")
        return Logged(parent if found is not None else logged, problems)
    finally:
        mlflow_log.setLevel(level)
