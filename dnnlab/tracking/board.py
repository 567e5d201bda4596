"""TensorBoard: the run's writer of RUN_DIR/tb/ (scalars every epoch, weight histograms, the
report once diagnosed; a resumed run's files carried over), and reading event files back.
"""

from __future__ import annotations

import secrets
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from dnnlab import runs
from dnnlab.tracking.names import (
    HISTOGRAM_BINS,
    REPORT_TAGS,
    TB_DIR,
    _finite,
    diagnosis_markdown,
    hparams_of,
    kept_scalars,
    scalars,
    varied_keys,
)

if TYPE_CHECKING:
    import numpy as np

    from dnnlab.config import Config
    from dnnlab.diagnose import Diagnosis


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

