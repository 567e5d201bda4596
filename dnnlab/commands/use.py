"""Using what was trained: `dnnlab predict` (a run's model on new raw inputs) and `dnnlab export`
(the model and its preprocessing as one ONNX graph).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dnnlab.commands.common import Checkpoint, _escape, _fail, console, err_console
from dnnlab.runs import EXIT_FAILED


def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder", show_default=False)],
    inputs: Annotated[
        Optional[list[Path]],
        typer.Argument(help="A CSV table, an .npz file, an image folder or image files (raw, as the run trained on them)",
                       show_default=False),
    ] = None,
    checkpoint: Annotated[Checkpoint, typer.Option(help="kept (the model the run kept) | best | last")] = Checkpoint.kept,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the predictions to this file (and confusion.png beside it when the inputs have labels)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Predictions as JSON (default CSV)")] = False,
    split: Annotated[Optional[str], typer.Option("--split", help="Predict the run's own test split instead of INPUT: test")] = None,
) -> None:
    """Predict the class of each input with a run's model: one row per example, in the input's
    order, with each class's probability; accuracy and the confusion matrix when it has labels."""
    from dnnlab import predict as predicting
    from dnnlab.data import DataError

    if bool(inputs) == bool(split):
        raise _fail("give INPUT (a CSV, an .npz, images) or --split test, one of the two")
    try:
        trained = predicting.open_trained(run_dir, checkpoint.value)
        prediction = predicting.predict_split(trained, split) if split else predicting.predict_inputs(trained, inputs or [])
    except predicting.RunError as exc:
        raise _fail(_escape(str(exc)), exc.code) from None
    except DataError as exc:
        raise _fail(_escape(str(exc))) from None
    head = {"run": str(run_dir), "checkpoint": trained.checkpoint.name}
    text = predicting.to_json(prediction, head) if as_json else predicting.to_csv(prediction)
    scores = prediction.scores()
    if out is not None:
        from dnnlab.runs import atomic_write_text

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, text)
            if scores is not None:
                predicting.plot_confusion(out.parent / "confusion.png", scores["confusion"], prediction.classes)
        except OSError as exc:
            raise _fail(_escape(f"cannot write {out}: {exc}"), EXIT_FAILED) from None
    else:
        sys.stdout.write(text)
    report = console if out is not None else err_console  # stdout carries the predictions without --out
    if prediction.ignored:
        report.print(f"note: ignored columns the run did not train on: {', '.join(prediction.ignored)}", markup=False)
    if scores is not None and not as_json:
        report.print(_confusion_table(scores, prediction.classes), soft_wrap=False)
        report.print(
            f"{scores['examples']} labelled examples: accuracy {scores['accuracy']:.4f}, balanced accuracy "
            f"{scores['balanced_accuracy']:.4f}", markup=False,
        )
    if out is not None:
        console.print(f"wrote {out}" + (f" and {out.parent / 'confusion.png'}" if scores is not None else ""), markup=False)


def _confusion_table(scores, classes):
    from rich.table import Table
    from rich.text import Text

    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    for header in ("true", *classes):
        table.add_column(Text(header), justify="left" if header == "true" else "right")
    for i, (name, row) in enumerate(zip(classes, scores["confusion"])):
        table.add_row(Text(name), *(Text(str(v), style="bold" if i == j else "") for j, v in enumerate(row)))
    return table


class ExportFormat(str, Enum):
    onnx = "onnx"


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder", show_default=False)],
    format_: Annotated[ExportFormat, typer.Option("--format", help="onnx")] = ExportFormat.onnx,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The file to write (default: RUN_DIR/model.onnx)")] = None,
    checkpoint: Annotated[Checkpoint, typer.Option(help="kept (the model the run kept) | best | last")] = Checkpoint.kept,
) -> None:
    """Export a run's model with its preprocessing folded in: raw float32 inputs (the training
    columns in their order, or raw pixels) in, class probabilities out."""
    from dnnlab import export as exporting
    from dnnlab import predict as predicting

    try:
        trained = predicting.open_trained(run_dir, checkpoint.value)
        path = exporting.export_onnx(trained, out or Path(run_dir) / "model.onnx")
    except (predicting.RunError, exporting.ExportError) as exc:
        raise _fail(_escape(str(exc)), exc.code) from None
    console.print(f"wrote {path} (input: float32 {exporting.input_description(trained.record)}; output: probabilities of "
                  f"{', '.join(trained.classes)})", markup=False)
