"""`dnnlab export --format onnx`: a run's kept model and its preprocessing as one ONNX graph.

The graph takes raw float32 inputs, (N, D): a table's feature columns in their training order,
or an image's raw pixels (0..255, or 0..16 for the digits) flattened in height, width, channel
order, and returns the class probabilities (N, C). The preprocessing of preprocessing.json (the
pixel divisor, the training split's per-channel shift and scale) is folded in front of the model
in evaluation mode (dropout off, batch norm with its running statistics), so a deployment needs
nothing of dnnlab. The conversion is jax2onnx's (`pip install -e '.[onnx]'`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dnnlab.runs import EXIT_BAD_INPUT, EXIT_FAILED, atomic_write_bytes

INSTALL = "pip install -e '.[onnx]'"
# the model families the exporter converts, and why any other is refused
EXPORTABLE = ("mlp", "cnn", "resnet")


class ExportError(Exception):
    """An export that cannot be made; `str()` is the message for the user, `code` the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def input_description(record: dict[str, Any]) -> str:
    """The exported graph's input, in words."""
    dim = int(np.prod(record["input_shape"]))
    if record.get("csv"):
        names = [f["name"] or f"column {f['position']}" for f in record["csv"]["features"]]
        return f"(N, {dim}) raw features: {', '.join(map(str, names))}"
    if len(record["input_shape"]) == 3:
        h, w, c = record["input_shape"]
        scale = "0..16" if (record["pixels"] or {}).get("divisor") == 16.0 else "0..255" if record["pixels"] else "raw values"
        return f"(N, {dim}) raw pixels ({scale}) of {h}x{w}x{c} images, flattened in height, width, channel order"
    return f"(N, {dim}) raw values"


def preprocess_vectors(record: dict[str, Any]) -> tuple[float, np.ndarray, np.ndarray]:
    """(divisor, shift_D, scale_D): the preprocessing as one elementwise (x / divisor - shift) / scale
    over the flattened inputs (a channel's statistics repeat at every position: channel = d mod C)."""
    dim = int(np.prod(record["input_shape"]))
    divisor = float(record["pixels"]["divisor"]) if record["pixels"] else 1.0
    scaling = record["scaling"]
    if scaling is None:
        return divisor, np.zeros(dim, np.float32), np.ones(dim, np.float32)
    reps = dim // int(scaling["channels"])
    shift = np.tile(np.asarray(scaling["shift"], np.float32), reps)
    scale = np.tile(np.asarray(scaling["scale"], np.float32), reps)
    return divisor, shift, scale


def export_onnx(trained: Any, out: Path) -> Path:
    """Write `trained` (a `predict.Trained`) as an ONNX model at `out`; ExportError if jax2onnx is
    not installed, or the model family cannot be exported."""
    arch = trained.cfg.model.arch
    if arch not in EXPORTABLE:
        raise ExportError(f"model.arch {arch}: cannot be exported to ONNX (exported: {', '.join(EXPORTABLE)})")
    try:
        import jax2onnx
    except ImportError:
        raise ExportError(f"ONNX export needs jax2onnx and onnx, which are not installed: {INSTALL}") from None
    import jax
    import jax.numpy as jnp

    model, params = trained.model()
    divisor, shift, scale = preprocess_vectors(trained.record)
    dim = shift.shape[0]

    def probabilities(x_raw_BxD):
        z = (x_raw_BxD / jnp.float32(divisor) - shift) / scale
        return jax.nn.softmax(model.apply(params, z, train=False)[0], axis=-1)

    import logging

    logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # its notes on untyped shape constants are not the user's
    try:
        proto = jax2onnx.to_onnx(probabilities, [("N", dim)], model_name=f"dnnlab_{arch}")
    except Exception as exc:  # a primitive jax2onnx has no plugin for, or any conversion failure
        raise ExportError(f"model.arch {arch}: jax2onnx cannot convert this model ({type(exc).__name__}: {exc})",
                          EXIT_FAILED) from None
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, proto.SerializeToString())
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc}", EXIT_FAILED) from None
    return out
