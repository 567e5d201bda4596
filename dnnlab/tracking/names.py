"""What TensorBoard and MLflow name alike: an epoch's scalars, the kept model's, the config's
settings as hparams, the diagnosis as Markdown; the folder and file names, and TrackingError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from dnnlab import runs

TB_DIR = "tb"
# bench/epoch.py: 64 fixed-width bins cost about a third of tensorboardX's default
# ("tensorflow", ~1,500 exponential bins) on the Fashion MLP's 650k weights
HISTOGRAM_BINS = 64
MLFLOW_EXTRA = "pip install -e '.[mlflow]'"
# what `scalars` names the records' keys; the rest are instruments. Every metric an epoch records
# (runs.METRICS, CLASS_METRICS, REGRESSION_METRICS) is `<metric>/<split>`: `val_balanced_accuracy`
# is `balanced_accuracy/val`
NAMES = {
    **{m: "/".join(reversed(m.split("_", 1))) for m in (*runs.METRICS, *runs.CLASS_METRICS, *runs.REGRESSION_METRICS)},
    "lr": "lr", "running_loss": "running/loss", "running_accuracy": "running/accuracy", "seconds": "time/epoch_seconds",
}
NOT_SCALARS = ("epoch", "seed")
REPORT_TAGS = ("_hparams_/", "hparams/", "kept/", "diagnosis/", "status/")  # written once, when the run is diagnosed
ARTIFACTS = (runs.REPORT, runs.CONFIG, runs.SUMMARY)  # and the plots (*.png)


class TrackingError(Exception):
    """Logging that cannot start (MLflow not installed); `str()` is the message, exit code 2."""

    code = runs.EXIT_BAD_INPUT


_finite = runs.is_number


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
    from dnnlab.config import flatten

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
        sets = runs.set_options(r.get("sets") or [r.get("set", "")])
        lines.append(f"- `{sets}`: {r.get('why', '')}")
    return "\n".join(lines)



def _enclosing(folder: Path) -> Optional[dict[str, Any]]:
    """The manifest of the sweep or multi-seed folder that lists `folder` as a member, if any."""
    try:
        found = runs.read_manifest(folder.parent)
    except ValueError:
        return None
    if found is None or not any(m.resolve() == folder.resolve() for m in runs.member_dirs(folder.parent, found[1])):
        return None
    return found[1]

