from __future__ import annotations

import os
from pathlib import Path

import pytest

from dnnlab import config, data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def make_cfg(base: dict | None = None, **dotted) -> config.Config:
    """A validated Config from a base mapping plus dotted overrides: make_cfg(**{"model.depth": 1})."""
    raw = config.apply_overrides(base or {}, [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in dotted.items()])
    return config.validate(raw)


@pytest.fixture(scope="session")
def digits() -> data.Dataset:
    return data.load(config.DataConfig(), seed=0)


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch):
    """HOME and DNNLAB_DATA point at empty temp folders, so no real cache is seen."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DNNLAB_DATA", raising=False)
    return home


def require_fashion() -> None:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{FASHION_DIR} is missing: .ci/run must apt-get install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The reference models' cache lives in a temp folder for the session, never in ~/.cache."""
    os.environ["DNNLAB_CACHE"] = str(tmp_path_factory.mktemp("dnnlab-cache"))
    yield
    os.environ.pop("DNNLAB_CACHE", None)


RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipe"


class RecipeRun:
    """One `dnnlab run configs/recipe/NAME.yaml --quiet` through the CLI: its exit code, output,
    run folder and summary.json. Read it, never change it: copy `run` first (`copy_to`)."""

    def __init__(self, exit_code: int, output: str, run: Path) -> None:
        import json

        self.exit_code, self.output, self.run = exit_code, output, run
        self.summary = json.loads((run / "summary.json").read_text())
        self.diagnosis = self.summary["diagnosis"]

    def copy_to(self, folder: Path) -> Path:
        import shutil

        return Path(shutil.copytree(self.run, folder / self.run.name))


@pytest.fixture(scope="session")
def recipe_run(tmp_path_factory):
    """recipe_run(name, *extra) -> RecipeRun: each shipped recipe trained once per session
    (test_recipe, test_fix and test_reference read the same runs; they took a minute each time)."""
    from typer.testing import CliRunner

    from dnnlab.cli import app

    done: dict[tuple[str, ...], RecipeRun] = {}

    def run(name: str, *extra: str) -> RecipeRun:
        key = (name, *extra)
        if key not in done:
            out = tmp_path_factory.mktemp(f"recipe-{name}")
            result = CliRunner().invoke(app, ["run", str(RECIPES / f"{name}.yaml"), "--out", str(out), "--quiet", *extra])
            assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
            (folder,) = list(out.iterdir())
            done[key] = RecipeRun(result.exit_code, result.output, folder)
        return done[key]

    return run
