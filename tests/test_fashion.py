"""Real data: Fashion-MNIST from Debian's dataset-fashion-mnist package (installed by .ci/run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dnnlab import config, data, train
from conftest import FASHION_DIR, require_fashion

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_debian_files_are_found_and_read(isolated_home):
    require_fashion()
    assert data.find("fashion-mnist") == FASHION_DIR
    ds = data.load(config.DataConfig(dataset="fashion-mnist", validation_split=0.1), seed=0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert ds.input_dim == 784 and ds.num_classes == 10
    assert ds.train.x.dtype == np.float32 and 0.0 == ds.train.x.min() and ds.train.x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.test.y), np.full(10, 1000))
    np.testing.assert_array_equal(np.bincount(ds.val.y), np.full(10, 600))


def test_fashion_mlp_config_reaches_088_test_accuracy_in_10_epochs(isolated_home):
    require_fashion()
    cfg = config.load_config(ROOT / "configs/fashion-mlp.yaml")
    assert cfg.train.epochs <= 10 and cfg.model.layer_widths == (256, 256)
    result = train.fit(cfg, data.load(cfg.data, cfg.seed), progress=False)
    assert result.summary["final"]["test_accuracy"] >= 0.88, result.summary["final"]
