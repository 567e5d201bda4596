"""Every shipped config is valid and says what it asks (STYLE: a comment first)."""

from pathlib import Path

import pytest

from dnnlab import config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid_and_documented(path):
    assert path.read_text().startswith("#"), f"{path.name}: start with a comment: the question and the expected outcome"
    cfg = config.load_config(path)
    assert cfg.name


def test_quickstart_reaches_095_on_digits_fast():
    from dnnlab import data, train

    cfg = config.load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    result = train.fit(cfg, data.load(cfg.data, cfg.seed), progress=False)
    assert result.summary["final"]["test_accuracy"] >= 0.95
