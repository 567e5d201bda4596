"""The config contract: defaults, round trip, overrides and the error messages users see."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dnnlab import config
from dnnlab.cli import app
from dnnlab.config import ConfigError
from dnnlab.config.warnings import RULES


def errors_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config.validate(raw)
    return str(info.value)


def test_defaults_resolve_depth_width_and_round_trip(tmp_path):
    cfg = config.validate({})
    assert cfg.model.layer_widths == (256, 256)
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 0.001
    path = tmp_path / "c.yaml"
    path.write_text(config.dump_yaml(cfg))
    assert config.load_config(path) == cfg


def test_hidden_list_replaces_depth_width(tmp_path):
    cfg = config.validate({"model": {"hidden": [512, 128]}})
    assert cfg.model.layer_widths == (512, 128)
    assert cfg.model.depth is None and cfg.model.width is None
    path = tmp_path / "c.yaml"
    path.write_text(config.dump_yaml(cfg))
    assert config.load_config(path).model.layer_widths == (512, 128)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"model": {"activaton": "relu"}}, "model.activaton: unknown key; did you mean model.activation?"),
        ({"optimzer": {}}, "optimzer: unknown key; did you mean optimizer?"),
        ({"train": {"early_stopping": {"patiense": 3}}}, "did you mean train.early_stopping.patience?"),
        ({"optimizer": {"lr": 0}}, "optimizer.lr: must be greater than 0 (got 0)"),
        ({"optimizer": {"lr": -0.1}}, "optimizer.lr: must be greater than 0 (got -0.1)"),
        ({"model": {"dropout": 1.0}}, "model.dropout: must be less than 1 (got 1.0)"),
        ({"model": {"input_dropout": -0.2}}, "model.input_dropout: must be greater than or equal to 0"),
        ({"model": {"maxout_pieces": 1}}, "model.maxout_pieces: must be greater than or equal to 2 (got 1)"),
        ({"model": {"depth": "three"}}, "model.depth: must be a valid integer"),
        (
            {"model": {"activation": "relux"}},
            "model.activation: 'relux' is not one of: sigmoid, tanh, relu, leaky_relu, prelu, maxout, elu, gelu; "
            "did you mean relu?",
        ),
        (
            {"optimizer": {"name": "adamm"}},
            "optimizer.name: 'adamm' is not one of: sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw",
        ),
        ({"data": {"dataset": "cifar"}}, "data.dataset: 'cifar' is not one of: digits, mnist, fashion-mnist"),
        ({"train": {"early_stopping": {"monitor": "val_acc"}}}, "did you mean val_accuracy?"),
        ({"model": {"hidden": [64], "depth": 3}}, "model: both hidden and depth are given"),
        ({"model": {"hidden": [64, 0]}}, "hidden must be a list of positive integers"),
        ({"model": 3}, "model: expected a section"),
        (
            {"data": {"validation_split": 0}, "train": {"early_stopping": {"enabled": True}}},
            "train.early_stopping.enabled needs a validation set",
        ),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_fix(raw, expected):
    assert expected in errors_of(raw)


def test_every_problem_is_reported_at_once():
    message = errors_of({"model": {"activaton": "relu", "dropout": 2}, "optimizer": {"lr": 0}})
    assert "model.activaton" in message and "model.dropout" in message and "optimizer.lr" in message


def test_overrides_are_parsed_as_yaml_and_create_sections():
    raw = config.apply_overrides(
        {"model": {"depth": 2}},
        ["model.depth=8", "optimizer.name=sgd", "optimizer.lr=1e-2", "model.hidden=null", "train.early_stopping.enabled=true"],
    )
    cfg = config.validate(raw)
    assert cfg.model.depth == 8 and cfg.optimizer.name == "sgd" and cfg.optimizer.lr == pytest.approx(0.01)
    assert cfg.train.early_stopping.enabled is True


def test_an_override_of_hidden_replaces_the_files_depth_and_width():
    quickstart = config.read_yaml(ROOT / "configs" / "quickstart.yaml")
    assert quickstart["model"]["depth"] == 2 and quickstart["model"]["width"] == 256
    cfg = config.validate(config.apply_overrides(quickstart, ["model.hidden=[512,256]"]))
    assert cfg.model.hidden == [512, 256] and cfg.model.depth is None and cfg.model.width is None
    assert config.apply_overrides(quickstart, ["model.hidden=null"])["model"]["depth"] == 2  # null replaces nothing
    # both given by the user (in any order) stay a clash; so does a depth override on a config with hidden
    for items in (["model.depth=3", "model.hidden=[8]"], ["model.hidden=[8]", "model.width=3"]):
        assert "both hidden and" in errors_of(config.apply_overrides(quickstart, items))
    clash = errors_of(config.apply_overrides({"model": {"hidden": [32]}}, ["model.depth=3"]))
    assert "both hidden and depth are given" in clash and "add --set model.hidden=null" in clash
    # a depth that is no number is that error, not the clash
    typed = errors_of(config.apply_overrides({"model": {"hidden": [32]}}, ["model.depth=x"]))
    assert "model.depth: must be a valid integer" in typed and "both hidden" not in typed
    assert "both hidden" in errors_of({"model": {"hidden": [32], "depth": "3"}})  # "3" is coerced, then clashes


def test_the_readme_set_example_validates_on_the_quickstart():
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"`--set` takes dotted keys and YAML values: `([^`]+)`", readme).group(1)
    items = re.findall(r"--set (\S+)", example)
    assert "model.hidden=[512,256]" in items
    result = CliRunner().invoke(app, ["validate", str(ROOT / "configs" / "quickstart.yaml"), *(
        w for item in items for w in ("--set", item))])
    assert result.exit_code == 0, result.output
    assert "hidden:\n  - 512\n  - 256" in result.output and "depth: null" in result.output


@pytest.mark.parametrize("item, expected", [("model.depth", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"), ("seed.x=1", "seed is a value")])
def test_bad_overrides(item, expected):
    with pytest.raises(ConfigError, match=expected):
        config.apply_overrides({"seed": 0}, [item])


def test_override_with_a_typo_gets_did_you_mean():
    raw = config.apply_overrides({}, ["model.widht=64"])
    assert "model.widht: unknown key; did you mean model.width?" in errors_of(raw)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel:\n  depth: 2\n   width: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line 4"):
        config.load_config(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        config.load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.load_config(path)


def test_json_schema_lists_the_choices():
    schema = config.json_schema()
    text = yaml.safe_dump(schema)
    for name in config.ACTIVATIONS + config.OPTIMIZERS:
        assert name in text
    assert schema["additionalProperties"] is False


@settings(max_examples=60, deadline=None)
@given(
    lr=st.floats(-1, 1, allow_nan=False),
    dropout=st.floats(-0.5, 1.5, allow_nan=False),
    pieces=st.integers(-1, 6),
)
def test_ranges_accept_exactly_the_documented_values(lr, dropout, pieces):
    raw = {"optimizer": {"lr": lr}, "model": {"dropout": dropout, "maxout_pieces": pieces}}
    ok = lr > 0 and 0 <= dropout < 1 and pieces >= 2
    if ok:
        assert config.validate(raw).model.dropout == dropout
    else:
        with pytest.raises(ConfigError):
            config.validate(raw)


# ---------------------------------------------------------------- options set but not honoured

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SHIPPED = sorted(ROOT.glob("configs/**/*.yaml"))


def warnings_of(raw: dict) -> list[str]:
    return config.config_warnings(config.validate(raw), raw)


# one case per rule of config.warnings.RULES at least: (the rule, a config that sets what it is about, its message)
NOT_HONOURED = [
        (
            "vmap-of-the-per-step-loop",
            {"model": {"arch": "cnn"}, "train": {"seeds": 2, "seed_mode": "vmap"}},
            "train.seed_mode: vmap is not honoured: the 2 seeds run sequentially",
        ),
        ("vmap-of-the-per-step-loop", {"model": {"arch": "resnet"}, "train": {"seeds": 3, "seed_mode": "vmap"}}, "set train.loop=scan to vmap them"),
        ("vmap-of-one-seed", {"train": {"seed_mode": "vmap"}}, "train.seed_mode: vmap is ignored: it applies to train.seeds > 1"),
        ("unroll-of-an-unscanned-stack", {"train": {"unroll": 4}}, "train.unroll: 4 is ignored: it applies to a scanned stack only"),
        ("unroll-of-an-unscanned-stack", {"model": {"depth": 8}, "train": {"unroll": 2}}, "auto scans stacks of 512 or more layers only (this one has 7)"),
        ("unroll-of-an-unscanned-stack", {"model": {"depth": 8}, "train": {"stack": "unrolled", "unroll": 2}}, "train.stack is unrolled"),
        ("unroll-of-an-unscanned-stack", {"model": {"arch": "resnet"}, "train": {"unroll": 2}}, "train.stack auto keeps resnets unrolled"),
        ("scanned-stack-that-cannot-scan", {"model": {"depth": 2}, "train": {"stack": "scanned"}}, "train.stack: scanned is not honoured: this mlp has no stack"),
        (
            "scanned-stack-that-cannot-scan",
            {"model": {"depth": 8, "norm": "batch"}, "train": {"stack": "scanned", "unroll": 2}},
            "train.stack: scanned is not honoured: a batch-normalized mlp stack is never scanned",
        ),
        ("scanned-stack-that-cannot-scan", {"model": {"arch": "resnet", "blocks": 2}, "train": {"stack": "scanned"}}, "model.blocks 2 has no stack"),
        ("conv-keys-off-a-cnn", {"model": {"arch": "resnet", "channels": [8, 16]}}, "model.channels: [8, 16] is ignored: a resnet's layout is fixed"),
        ("conv-keys-off-a-cnn", {"model": {"arch": "resnet", "kernel": 5}}, "model.kernel: 5 is ignored"),
        ("conv-keys-off-a-cnn", {"model": {"arch": "resnet", "pool": "none"}}, "model.pool: none is ignored"),
        ("conv-keys-off-a-cnn", {"model": {"channels": [8]}}, "model.channels: [8] is ignored: an mlp has no conv blocks; remove it, or set model.arch=cnn"),
        ("block-keys-off-a-resnet", {"model": {"blocks": 9}}, "model.blocks: 9 is ignored: only a resnet has residual blocks"),
        ("block-keys-off-a-resnet", {"model": {"arch": "cnn", "shortcut": "none"}}, "model.shortcut: none is ignored"),
        (
            "restore-best-without-early-stopping",
            {"train": {"early_stopping": {"restore_best": True}}},
            (
                "train.early_stopping.restore_best: true is ignored while early stopping is disabled: the last "
                "epoch's model is kept"
            ),
        ),
        ("patience-without-early-stopping", {"train": {"early_stopping": {"patience": 3}}}, "train.early_stopping.patience: 3 is ignored"),
        (
            "monitor-without-validation",
            {"data": {"validation_split": 0}, "train": {"early_stopping": {"monitor": "val_accuracy"}}},
            "train.early_stopping.monitor: val_accuracy is ignored: data.validation_split is 0",
        ),
        ("digits-need-no-path", {"data": {"path": "/data"}}, "data.path: /data is ignored: the digits are embedded"),
        ("width-without-hidden-layers", {"model": {"depth": 0, "width": 64}}, "model.width: 64 is ignored: model.depth is 0"),
        ("leaky-slope-off-leaky-relu", {"model": {"leaky_slope": 0.2}}, "model.leaky_slope: 0.2 is ignored"),
        ("maxout-pieces-off-maxout", {"model": {"activation": "relu", "maxout_pieces": 3}}, "model.maxout_pieces: 3 is ignored"),
        ("optimizer-key-unused", {"optimizer": {"name": "sgd", "momentum": 0.5}}, "optimizer.momentum: 0.5 is ignored: optimizer sgd does not use it (used by: momentum, nesterov)"),
        ("optimizer-key-unused", {"optimizer": {"name": "momentum", "b1": 0.8}}, "optimizer.b1: 0.8 is ignored"),
        ("optimizer-key-unused", {"optimizer": {"name": "adam", "rho": 0.8}}, "optimizer.rho: 0.8 is ignored"),
        ("optimizer-key-unused", {"optimizer": {"name": "sgd", "eps": 0.1}}, "optimizer.eps: 0.1 is ignored"),
        ("schedule-key-unused", {"optimizer": {"step_epochs": 5}}, "optimizer.step_epochs: 5 is ignored: the constant schedule does not use it"),
        ("schedule-key-unused", {"optimizer": {"schedule": "cosine", "warmup_epochs": 2}}, "optimizer.warmup_epochs: 2 is ignored"),
        ("schedule-key-unused", {"optimizer": {"schedule": "step", "min_lr_ratio": 0.1}}, "optimizer.min_lr_ratio: 0.1 is ignored"),
        ("probe-size-without-instruments", {"diagnosis": {"instruments": False, "probe_size": 64}}, "diagnosis.probe_size: 64 is ignored"),
        ("reference-margin-without-reference", {"diagnosis": {"reference": "none", "reference_margin": 0.2}}, "diagnosis.reference_margin: 0.2 is ignored"),
        (
            "data-key-of-another-reader", {"data": {"label": "y"}},
            "data.label: y is ignored: only data.dataset csv reads it, and data.dataset is digits; remove it",
        ),
        (
            "test-path-and-test-split", {"data": {"dataset": "csv", "path": "a.csv", "test_path": "b.csv", "test_split": 0.3}},
            "data.test_split: 0.3 is ignored: data.test_path gives the test set",
        ),
        (
            "classification-threshold-in-regression",
            {"data": {"dataset": "csv", "path": "t.csv", "task": "regression"}, "diagnosis": {"overfit_gap": 0.2}},
            "diagnosis.overfit_gap: 0.2 is ignored: it is a classification threshold",
        ),
        ("regression-threshold-in-classification", {"diagnosis": {"chance_r2": 0.1}}, "diagnosis.chance_r2: 0.1 is ignored"),
        ("pretrain-keys-without-pretraining", {"pretrain": {"epochs": 5}}, "pretrain.epochs: 5 is ignored"),
]


@pytest.mark.parametrize("rule, raw, expected", NOT_HONOURED)
def test_an_option_set_but_not_honoured_is_warned_about(rule, raw, expected):
    found = warnings_of(raw)
    assert any(expected in w for w in found), found
    assert len(found) == 1, found
    cfg = config.validate(raw)
    assert [r.name for r in RULES if r.messages(cfg, raw)] == [rule]


def test_every_rule_has_a_config_it_fires_on_alone():
    names = [r.name for r in RULES]
    assert len(set(names)) == len(names)
    assert set(names) == {rule for rule, _, _ in NOT_HONOURED}


@pytest.mark.parametrize(
    "raw",
    [
        {"model": {"arch": "mlp"}, "train": {"seeds": 2, "seed_mode": "vmap"}},
        {"model": {"arch": "cnn"}, "train": {"seeds": 2, "seed_mode": "vmap", "loop": "scan"}},
        {"model": {"arch": "cnn"}, "train": {"seeds": 2, "seed_mode": "sequential"}},
        {"model": {"depth": 8}, "train": {"stack": "scanned", "unroll": 2}},
        {"model": {"arch": "resnet", "blocks": 3}, "train": {"stack": "scanned", "unroll": 2}},
        {"model": {"depth": 600}, "train": {"unroll": 16}},
        {"model": {"arch": "cnn", "channels": [8], "kernel": 5, "pool": "none"}},
        {"model": {"arch": "resnet", "blocks": 9, "shortcut": "none"}},
        {"train": {"early_stopping": {"enabled": True, "restore_best": True, "patience": 2}}},
        {"train": {"early_stopping": {"restore_best": False}}},  # the last epoch's model: honoured
        {"train": {"early_stopping": {"monitor": "val_accuracy", "min_delta": 0.01}}},  # picks the best epoch
        {"data": {"dataset": "mnist", "path": "/data"}},
        {"model": {"depth": 3, "width": 64, "activation": "leaky_relu", "leaky_slope": 0.2}},
        {"model": {"activation": "maxout", "maxout_pieces": 3}},
        {"optimizer": {"name": "nesterov", "momentum": 0.5, "schedule": "warmup_cosine", "warmup_epochs": 2, "min_lr_ratio": 0.1}},
        {"optimizer": {"name": "rmsprop", "rho": 0.8, "eps": 1e-6, "schedule": "step", "step_epochs": 2, "step_factor": 0.5}},
        {"optimizer": {"name": "adamw", "b1": 0.8, "b2": 0.99}},
        {"diagnosis": {"probe_size": 64, "reference_margin": 0.2}},
    ],
)
def test_an_honoured_option_gets_no_warning(raw):
    assert warnings_of(raw) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_and_their_resolved_dumps_get_no_warning(path):
    cfg, found = config.load_config_with_warnings(path)
    assert found == []
    # a run's config.yaml writes every key (channels for an mlp, restore_best with early stopping off):
    # a complete section counts only values other than the default as set
    dumped = yaml.safe_load(config.dump_yaml(cfg))
    assert config.config_warnings(cfg, dumped) == []


def test_a_resolved_dump_still_warns_about_a_value_other_than_the_default():
    cfg = config.validate({"model": {"channels": [8]}, "optimizer": {"name": "sgd", "b1": 0.5}})
    dumped = yaml.safe_load(config.dump_yaml(cfg))
    found = config.config_warnings(cfg, dumped)
    assert [w.split(":")[0] for w in found] == ["model.channels", "optimizer.b1"]


def test_warnings_see_the_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {arch: resnet}\n")
    cfg, found = config.load_config_with_warnings(path, ["model.kernel=5", "train.early_stopping.patience=2"])
    assert cfg == config.load_config(path, ["model.kernel=5", "train.early_stopping.patience=2"])
    assert [w.split(":")[0] for w in found] == ["model.kernel", "train.early_stopping.patience"]
