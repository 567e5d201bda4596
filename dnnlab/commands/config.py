"""The config's own commands: `dnnlab validate`, `schema` and `check`.
"""

from __future__ import annotations

import json
import sys

from dnnlab.commands.common import (
    ConfigArg,
    SetOpt,
    _escape,
    _fail,
    _load,
    _load_data,
    console,
)
from dnnlab.runs import (  # the exit codes; dnnlab.experiment raises ExperimentError with one
    EXIT_FAILED,
)


def check(config: ConfigArg, set_: SetOpt = None) -> None:
    """Smoke-test CONFIG in seconds: initial loss, finite steps, overfitting one batch, real vs zeroed inputs."""
    cfg = _load(config, set_)
    ds = _load_data(cfg)
    from dnnlab.smoke import run_checks

    checks = run_checks(cfg, ds)
    for c in checks:
        mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
        console.print(f"{mark} {_escape(c.name)}: {_escape(c.detail)}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise _fail(_escape(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}"), EXIT_FAILED)
    console.print(f"all {len(checks)} checks passed", markup=False)


def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check CONFIG without training (no JAX import); print the resolved config."""
    from dnnlab.config import dump_yaml

    cfg = _load(config, set_)
    console.print(dump_yaml(cfg), markup=False, end="")
    console.print(f"ok: {config} is a valid config", markup=False)


def schema() -> None:
    """Print the config's JSON Schema (for editors' YAML validation)."""
    from dnnlab.config import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
