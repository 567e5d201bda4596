"""One experiment end to end: data -> run folder -> fit -> diagnosis and report.

`run` is what the CLI's `run` and the sweep call: it loads nothing itself, trains one seed or
several, and turns every known failure into an `ExperimentError` that carries its exit code,
so the CLI only parses, calls, prints and exits.

Lives here: `load` (the data, checked against the model, the memory and the devices), `start`
(a new run folder, one seed or several, the reference beside it, the report), `resumption`
(continuing a run or a multi-seed folder in place), `inputs` (what a run is tied to, and the
checks that hold a resume to it).
May import: config, data, runs, diagnose, report, tracking, reference; train (JAX) inside the
functions that train.
"""

from __future__ import annotations

from dnnlab.experiment.inputs import check_inputs, located
from dnnlab.experiment.load import ExperimentError, check_compatible, check_data, check_devices, load_data
from dnnlab.experiment.resumption import resume, resume_seeds
from dnnlab.experiment.start import (
    SeedsOutcome,
    Shown,
    execute,
    finished_outcome,
    run,
    seeds_mode,
)

__all__ = [
    "ExperimentError",
    "SeedsOutcome",
    "Shown",
    "check_compatible",
    "check_data",
    "check_devices",
    "check_inputs",
    "execute",
    "finished_outcome",
    "load_data",
    "located",
    "resume",
    "resume_seeds",
    "run",
    "seeds_mode",
]
