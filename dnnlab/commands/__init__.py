"""The `dnnlab` commands, one module per family, registered on the app in the order
`dnnlab --help` lists them.

Lives here: `common` (the app, the shared options, loading and printing helpers), `run`
(run and resume), `inspect` (diagnose, compare, evaluate), `lr_find`, `sweep`, `fix`, `config`
(validate, schema, check), `data` (list, inspect, download), `use` (predict, export).
May import: anything, lazily: JAX only inside the commands that train, so `--help`, `validate`,
`schema`, `diagnose` and `data inspect` start fast.
"""

from __future__ import annotations

from dnnlab.commands import config, data, fix, inspect, lr_find, run, sweep, use
from dnnlab.commands.common import OverridesCommand, app, command, data_app

__all__ = ["app"]  # dnnlab.cli runs it

# each command says here whether it trains (the cache folder is checked before one that does)
command(run.run, trains=True, cls=OverridesCommand)
command(inspect.diagnose_cmd, "diagnose", trains=False)
command(config.check, trains=True, cls=OverridesCommand)
command(lr_find.lr_find_cmd, "lr-find", trains=True, cls=OverridesCommand)
command(sweep.sweep, trains=True, cls=sweep._SweepCommand)
command(inspect.compare_cmd, "compare", trains=False)
command(inspect.evaluate, trains=False)
command(fix.fix, trains=True)
command(use.predict, trains=False)
command(use.export, trains=False)
command(config.validate, trains=False, cls=OverridesCommand)
command(config.schema, trains=False)
command(data.data_list, "list", trains=False, group=data_app)
command(data.data_inspect, "inspect", trains=False, cls=OverridesCommand, group=data_app)
command(data.data_download, "download", trains=False, group=data_app)
