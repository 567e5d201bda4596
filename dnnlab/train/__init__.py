"""Training: the pure jitted steps and evaluation, their compiled programs and store, the
loop with early stopping and resume states, devices, and pretraining.

One jitted call runs a whole epoch (`lax.scan` over minibatches of device-resident data,
reshuffled with `jax.random` each epoch); one more evaluates the train, validation and test
splits in evaluation mode. The host loop fetches one small dict per epoch. Nothing here
prints: output goes through a `runs.Writer`.

Lives here: `step` (the pure functions: loss, step, epoch, evaluation), `setup` (the model,
optimizer and data on the device, shared by every seed), `programs` (the compiled programs, the
programs kept in a process, JAX's persistent cache), `stored` (dnnlab's store of compiled
programs), `loop` (the training loop, early stopping, resume states, `fit`), `distributed`
(devices and processes), `pretrain` (greedy layer-wise RBM pretraining).
May import: config, data, models, activations, losses, optim, probes, runs, jax, optax.
`distributed` imports no JAX, so this face loads the others on first use.
"""

from __future__ import annotations

import importlib

# the public names and the module that defines each: loaded on first use (PEP 562), so that
# the JAX-free modules of this package (distributed) import without JAX
_HOMES = {
    "EarlyStopping": "loop",
    "Resume": "loop",
    "fit": "loop",
    "fit_seeds": "loop",
    "seed_configs": "loop",
    "ONCE_OPTIONS": "programs",
    "clear_programs": "programs",
    "_injected": "programs",
    "_to_python": "programs",
    "use_compile_cache": "programs",
    "TrainState": "step",
    "batches": "step",
    "evaluate": "step",
    "evaluate_splits": "step",
    "indexed_step": "step",
    "loss_fn": "step",
    "new_epoch": "step",
    "stepwise_epoch": "step",
    "train_epoch": "step",
    "train_step": "step",
    "train_steps": "step",
    "_setup": "setup",
    "prepare": "setup",
    "device_name": "setup",
    "init_state": "setup",
}


_MODULES = ('distributed', 'loop', 'pretrain', 'programs', 'setup', 'step', 'stored')


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is not None:
        return getattr(importlib.import_module(f"{__name__}.{home}"), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES, *_MODULES])


from dnnlab import _callable  # noqa: E402  `dnnlab.train(...)` is the API's function (dnnlab/__init__.py)

_callable(__name__)
