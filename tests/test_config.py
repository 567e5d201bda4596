"""The config contract: defaults, round trip, overrides and the error messages users see."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dnnlab import config
from dnnlab.config import ConfigError


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
