"""dnnlab: train a YAML-configured network with JAX and tell failed training from overfitting.

The Python API (docs/api.md): `load_config`, `train`, `open_run` (a `Run`: verdict, diagnosis,
history, summary, path, predict, predict_proba), `compare`, `sweep` and `fix`, and the errors
the command line maps to exit codes. Each is loaded on first use (PEP 562), so `import dnnlab`
imports no JAX. `dnnlab.train`, `dnnlab.sweep` and `dnnlab.compare` are also the package's
modules of those names: the modules are callable, and a call is the API's function
(`dnnlab.api`).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from dnnlab.version import __version__

# the API's names and the module that defines each
_HOMES = {
    "load_config": "dnnlab.api",
    "open_run": "dnnlab.api",
    "Run": "dnnlab.api",
    "fix": "dnnlab.api",
    "ConfigError": "dnnlab.config",
    "DataError": "dnnlab.data.dataset",
    "ExperimentError": "dnnlab.experiment.load",
    "RunError": "dnnlab.predict",
    "ExportError": "dnnlab.export",
    "SweepError": "dnnlab.sweep",
    "FixError": "dnnlab.sweep.fix",
    "CompareError": "dnnlab.compare",
}
# the modules that are also the API's functions of their names
_CALLABLE = {"dnnlab.train": "train", "dnnlab.sweep": "sweep", "dnnlab.compare": "compare"}

__all__ = [*_HOMES, "compare", "sweep", "train", "__version__"]


class _CallableModule(types.ModuleType):
    """A module of the package that is also the API's function of its name: `dnnlab.train(...)`
    is `dnnlab.api.train(...)`, and `from dnnlab import train` inside the package is still the
    training package."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from dnnlab import api

        return getattr(api, _CALLABLE[self.__name__])(*args, **kwargs)


def _callable(name: str) -> None:
    """Make module `name` (one of _CALLABLE) callable; each calls this at its end."""
    sys.modules[name].__class__ = _CallableModule


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    if f"dnnlab.{name}" in _CALLABLE:
        return importlib.import_module(f"dnnlab.{name}")
    raise AttributeError(f"module 'dnnlab' has no attribute {name!r}")
