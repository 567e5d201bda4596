"""`dnnlab compare`: runs side by side, seeds aggregated, and the comparative verdict.

The lecture's warning made automatic: when two runs differ along one key, a run that is worse
on validation AND on training failed to train (it is not overfitting); one that is better on
training but worse on validation overfits relative to the other. Imports no JAX.

Lives here, each module importing only those named before it: `records` (a run folder read back
as a `RunRecord`; the targets' run folders, sweep and multi-seed folders through their
manifests), `groups` (the differing keys, the `Group` of one configuration's seeds, the pairs
that differ along one key), `judge` (the one "better beyond the noise": the noise band, the
call, the comparative verdict's calls, and claims checked against the noise), `comparison` (the
`Comparison` and `compare`), `plots` (the figures), `render` (the table, compare.md, `write`).
May import: runs, baselines, tables, config, diagnose (matplotlib only inside `plots`, when a
figure is drawn); nothing that `compare` sits above may import it.
"""

from __future__ import annotations

from dnnlab.compare import judge
from dnnlab.compare.comparison import Comparison, compare, comparisons
from dnnlab.compare.groups import (
    IGNORED_KEYS,
    Group,
    best,
    differing_keys,
    group,
    pairs,
    show,
)
from dnnlab.compare.judge import (
    CALLS,
    TOLERANCE,
    Shift,
    beyond,
    classify,
    noise_band,
    shift,
    tolerance,
)
from dnnlab.compare.plots import write_plots
from dnnlab.compare.records import (
    CompareError,
    FolderOfRuns,
    RunRecord,
    collect,
    flatten,
    is_run_folder,
    load_record,
    lower_is_better,
    read_folder,
    tuning,
)
from dnnlab.compare.render import (
    HEADERS,
    columns,
    key_headers,
    markdown,
    metric_words,
    named,
    table_rows,
    tuning_lines,
    write,
)

__all__ = [
    "CALLS",
    "HEADERS",
    "IGNORED_KEYS",
    "TOLERANCE",
    "CompareError",
    "Comparison",
    "FolderOfRuns",
    "Group",
    "RunRecord",
    "Shift",
    "best",
    "beyond",
    "classify",
    "collect",
    "columns",
    "compare",
    "comparisons",
    "differing_keys",
    "flatten",
    "group",
    "is_run_folder",
    "judge",
    "key_headers",
    "load_record",
    "lower_is_better",
    "markdown",
    "metric_words",
    "named",
    "noise_band",
    "pairs",
    "read_folder",
    "shift",
    "show",
    "table_rows",
    "tolerance",
    "tuning",
    "tuning_lines",
    "write",
    "write_plots",
]


from dnnlab import _callable  # noqa: E402  `dnnlab.compare(...)` is the API's function (dnnlab/__init__.py)

_callable(__name__)
