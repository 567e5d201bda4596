"""Sweeps and fixes: the cartesian product of a grid of overrides (times seeds), each an
ordinary run folder, grouped under `<out>/<name>-sweep-<YYYYMMDD-HHMMSS>-<4 hex>/` with a
`sweep.json` that lists the members, their overrides, folders and outcomes; `--resume` skips
the finished.

Lives here: `grid` (grids, members, the tuning of a key per grid point, the sweep folder and its manifest), `member` (the one code
path of a member, in this process, a worker or a Ray task), `runner` (running the pending
members in order or on a pool), `workers` (pinned worker processes and Ray), `fix` (the
diagnosis's remedies as a sweep, judged against the run).
May import: config, runs, diagnose, compare, experiment (lazily, in a member). No JAX in the
parent process of a sweep on workers.
"""

from __future__ import annotations

from dnnlab.sweep.grid import (
    Sweep,
    SweepError,
    Tuning,
    choose,
    expand,
    expand_tuned,
    member_warnings,
    override,
    parse_grid,
    plan,
    resolve,
    resume_plan,
)
from dnnlab.sweep.runner import LOCK, _Lock, run

__all__ = [
    "LOCK",
    "Sweep",
    "SweepError",
    "Tuning",
    "_Lock",
    "choose",
    "expand",
    "expand_tuned",
    "member_warnings",
    "override",
    "parse_grid",
    "plan",
    "resolve",
    "resume_plan",
    "run",
]


from dnnlab import _callable  # noqa: E402  `dnnlab.sweep(...)` is the API's function (dnnlab/__init__.py)

_callable(__name__)
