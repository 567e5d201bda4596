"""Every shipped config is valid and says what it asks (STYLE: a comment first)."""

import itertools
from pathlib import Path

import pytest
import yaml

from dnnlab import config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def header(path: Path) -> str:
    """The comment block a config file starts with."""
    return "\n".join(itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines()))


def expected_name(path: Path) -> str:
    """Run folders are named after `name`: a shipped config is named after its file, and the
    lecture's after its claim's number with an l in front (1-depth-sigmoid-relu.yaml: l1-...)."""
    return f"l{path.stem.split('-')[0]}-" if path.parent.name == "lecture" else path.stem


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid_and_documented(path):
    text = header(path)
    assert text, f"{path.name}: start with a comment: the question and the expected outcome"
    # the outcome is stated as expected, a target, or what was measured (resnet-fashion)
    assert any(word in text for word in ("Expected:", "Target:", "Measured:")), f"{path.name}: state the expected outcome"
    cfg = config.load_config(path)
    if path.parent.name == "lecture":
        assert cfg.name.startswith(expected_name(path)), cfg.name
    else:
        assert cfg.name == expected_name(path)
    # what a run writes as config.yaml reads back to the same config
    assert config.validate(yaml.safe_load(config.dump_yaml(cfg))) == cfg


def test_shipped_configs_have_distinct_names():
    names = [config.load_config(p).name for p in CONFIGS]
    assert len(CONFIGS) >= 10 and len(set(names)) == len(names), sorted(names)


def test_quickstart_reaches_095_on_digits_fast():
    from dnnlab import data, train

    cfg = config.load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    result = train.fit(cfg, data.load(cfg.data, cfg.seed), progress=False)
    assert result.summary["final"]["test_accuracy"] >= 0.95
