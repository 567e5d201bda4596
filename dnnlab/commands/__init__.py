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
from dnnlab.commands.common import OverridesCommand, app, data_app

app.command(cls=OverridesCommand)(run.run)
app.command("diagnose")(inspect.diagnose_cmd)
app.command(cls=OverridesCommand)(config.check)
app.command("lr-find", cls=OverridesCommand)(lr_find.lr_find_cmd)
app.command(cls=sweep._SweepCommand)(sweep.sweep)
app.command("compare")(inspect.compare_cmd)
app.command()(inspect.evaluate)
app.command()(fix.fix)
app.command()(use.predict)
app.command()(use.export)
app.command(cls=OverridesCommand)(config.validate)
app.command()(config.schema)
data_app.command("list")(data.data_list)
data_app.command("inspect", cls=OverridesCommand)(data.data_inspect)
data_app.command("download")(data.data_download)
