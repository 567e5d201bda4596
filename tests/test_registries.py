"""Every registry against the config's Literal types: a name added on one side only fails here.

Also the config-side tables that describe the registries (which optimizer keys each optimizer
and schedule reads, how `train.stack` resolves) against what the JAX side does.
"""

from __future__ import annotations

from typing import get_args

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnnlab import activations, config, data, models, optim
from dnnlab.config import OptimizerConfig, RegularizationConfig
from dnnlab.config.names import SCAN_UNROLL, MetricName


@pytest.mark.parametrize(
    "registry, names",
    [
        (data.LOADERS, config.Dataset),
        (models.ARCHITECTURES, config.Arch),
        (activations.REGISTRY, config.ActivationName),
        (models.INITIALIZERS, config.InitializerName),
        (optim.OPTIMIZERS, config.OptimizerName),
        (optim.SCHEDULES, config.ScheduleName),
        (config.OPTIMIZER_KEYS, config.OptimizerName),
        (config.SCHEDULE_KEYS, config.ScheduleName),
    ],
    ids=["datasets", "archs", "activations", "inits", "optimizers", "schedules", "optimizer-keys", "schedule-keys"],
)
def test_registry_holds_exactly_the_config_names(registry, names):
    assert set(registry) == set(get_args(names))


def test_init_names_are_auto_and_the_initializers():
    assert get_args(config.InitName) == ("auto",) + get_args(config.InitializerName)


def test_every_file_dataset_can_be_downloaded():
    assert set(data.REMOTES) == {name for name in data.LOADERS if name != "digits" and name not in config.FILE_DATASETS}
    assert [row["name"] for row in data.listing()] == list(data.LOADERS)


def _params_after(cfg: OptimizerConfig, steps: int = 4) -> np.ndarray:
    tx, _ = optim.make_optimizer(cfg, RegularizationConfig(), steps_per_epoch=steps, epochs=1)
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    state = tx.init(params)
    for i in range(steps):
        grads = {"w": jnp.sin(params["w"] * (i + 1)) + 0.1 * i}
        updates, state = tx.update(grads, state, params)
        params = jax.tree_util.tree_map(jnp.add, params, updates)
    return np.asarray(params["w"])


# a value far from each default, so that a key that is read changes the result
OTHER_VALUE = {"momentum": 0.5, "rho": 0.5, "b1": 0.5, "b2": 0.9, "eps": 0.1}


@pytest.mark.parametrize("name", config.OPTIMIZERS)
def test_an_optimizer_reads_exactly_its_listed_keys(name):
    base = _params_after(OptimizerConfig(name=name, lr=0.1))
    for key, value in OTHER_VALUE.items():
        changed = _params_after(OptimizerConfig(name=name, lr=0.1, **{key: value}))
        reads = not np.array_equal(base, changed)
        assert reads == (key in config.OPTIMIZER_KEYS[name]), f"{name} {'reads' if reads else 'ignores'} {key}"


SCHEDULE_OTHER = {"step_epochs": 1, "step_factor": 0.5, "warmup_epochs": 3, "min_lr_ratio": 0.5}


@pytest.mark.parametrize("schedule", get_args(config.ScheduleName))
def test_a_schedule_reads_exactly_its_listed_keys(schedule):
    def lrs(**extra):
        fn = optim.make_schedule(OptimizerConfig(schedule=schedule, lr=0.1, **extra), steps_per_epoch=2, epochs=12)
        return [float(fn(step)) for step in range(24)]

    base = lrs()
    for key, value in SCHEDULE_OTHER.items():
        reads = lrs(**{key: value}) != base
        assert reads == (key in config.SCHEDULE_KEYS[schedule]), f"{schedule} {'reads' if reads else 'ignores'} {key}"


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; known: sgd, momentum"):
        optim.make_optimizer(OptimizerConfig.model_construct(name="lion"), RegularizationConfig(), steps_per_epoch=1, epochs=1)
    with pytest.raises(ValueError, match="unknown schedule 'linear'; known: constant, step"):
        optim.make_schedule(OptimizerConfig.model_construct(schedule="linear"), steps_per_epoch=1, epochs=1)


@pytest.mark.parametrize(
    "model, stack, unroll, plan",
    [
        ({}, "auto", None, (False, 1)),  # 2 layers: nothing to scan
        ({"depth": 600}, "auto", None, (True, SCAN_UNROLL)),  # auto scans a long stack
        ({"depth": 600}, "auto", 4, (True, 4)),
        ({"depth": 600, "norm": "batch"}, "scanned", None, (False, 1)),  # batch norm is always unrolled
        ({"depth": 3}, "scanned", None, (True, 1)),
        ({"depth": 3}, "auto", None, (False, 1)),
        ({"depth": 600}, "unrolled", None, (False, 1)),
        ({"depth": 1}, "scanned", None, (False, 1)),  # a stack of fewer than 2 layers
        ({"hidden": [64, 32, 32, 32]}, "scanned", None, (True, 1)),
        ({"hidden": [64, 32, 16]}, "scanned", None, (False, 1)),  # no 2 identical layers
        ({"arch": "cnn", "depth": 600}, "auto", None, (True, SCAN_UNROLL)),
        ({"arch": "resnet", "blocks": 9}, "auto", None, (False, 1)),  # resnets stay unrolled under auto
        ({"arch": "resnet", "blocks": 9}, "scanned", 2, (True, 2)),
        ({"arch": "resnet", "blocks": 1}, "scanned", None, (False, 1)),
    ],
)
def test_the_stack_plan_follows_its_rule_and_the_model_compiles_what_it_says(model, stack, unroll, plan):
    """The plan that the config's warnings read is the one the model is compiled with."""
    m = config.validate({"model": model}).model
    assert config.stack_plan(m, stack, unroll) == plan
    built = models.plan_stack(m, stack, unroll)
    assert (built.scanned, built.unroll) == plan

def test_every_cause_has_one_line_in_the_registry_and_in_the_docs():
    """A cause is a detector and a line of CAUSE_REMEDIES: the docs' list and table of causes
    name exactly the registry's, in its order, and every cause but over-regularization (whose
    remedies come after every other's) brings its own remedies."""
    import re
    from pathlib import Path

    from dnnlab.diagnose import CAUSES
    from dnnlab.diagnose.training import CAUSE_REMEDIES

    doc = (Path(__file__).parent.parent / "docs" / "diagnosis.md").read_text()
    listed = re.search(r"^Causes: (.*?)\.\n\n", doc, re.S | re.M).group(1)
    assert re.findall(r"`([a-z-]+)`", listed) == list(CAUSES)
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", doc, re.M))  # the table of what each cause is measured by
    assert set(CAUSES) <= rows, set(CAUSES) - rows
    assert [c for c, remedies in CAUSE_REMEDIES.items() if remedies is None] == ["over-regularization"]
    assert all(callable(r) for c, r in CAUSE_REMEDIES.items() if c != "over-regularization")


def test_the_ranking_metrics_are_the_configs_in_the_options_order():
    """sweep.tune_metric's Literal (spelt out: config is below runs) names runs.RANKING_METRICS,
    which --metric and --tune-metric are built from, in the same order."""
    from dnnlab import runs

    assert get_args(MetricName) == runs.RANKING_METRICS


def test_every_verdict_has_a_colour_and_the_rate_causes_are_causes():
    from dnnlab.console import VERDICT_STYLE
    from dnnlab.diagnose import CAUSES, LR_CAUSES, VERDICTS

    assert set(VERDICT_STYLE) == set(VERDICTS)
    assert set(LR_CAUSES) <= set(CAUSES)
