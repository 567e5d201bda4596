"""Bad input through the command line: each hole a tester found ends in exit code 2 and one
message naming the key or file and the fix, never a traceback, a hang or a run folder."""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dnnlab import config
from dnnlab.cli import app
from dnnlab.config import ConfigError

from test_data import idx_bytes, write_idx_dataset

runner = CliRunner()
TINY = "name: tiny\ndata: {dataset: digits, batch_size: 64}\nmodel: {hidden: [8]}\ntrain: {epochs: 1}\n"


def invoke(*args: object, timeout: float = 30.0):
    """`dnnlab ARGS` in a thread, so that a command that hangs fails the test instead of the suite."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(r=runner.invoke(app, [str(a) for a in args])), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"dnnlab {' '.join(map(str, args))} still running after {timeout} s"
    result = box["r"]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def refused(*args: object, timeout: float = 30.0) -> str:
    """The message of a command that must exit 2, whitespace normalized."""
    result = invoke(*args, timeout=timeout)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "Traceback" not in text and "error: unexpected" not in text, text
    return text


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_refused(tmp_path: Path, cfg: Path, *extra: object) -> str:
    """`dnnlab run` that must exit 2 and leave no run folder behind."""
    out = tmp_path / "runs"
    text = refused("run", cfg, "--out", out, "--quiet", *extra)
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    return text


# ---------------------------------------------------------------- 1. YAML that costs time or memory


BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
)


@pytest.mark.parametrize(
    "text, expected",
    [
        (BOMB, "line 1, column 4: YAML aliases and anchors (&a) are not allowed in a config"),
        ("name: x\nsweep: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than 32 levels deep"),
        ("".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "x: 1\n", "nested more than 32 levels deep"),
        ("name: x\n" + "#" * (1 << 20) + "\n", "bytes; a config file is at most 1,048,576 bytes"),
    ],
    ids=["alias-bomb", "deep-flow", "deep-block", "over-1MB"],
)
def test_yaml_that_could_exhaust_time_or_memory_is_refused(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    message = refused("validate", path)
    assert f"{path}:" in message and expected in message


def test_a_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    assert f"{fifo}: not a regular file" in refused("validate", fifo, timeout=10)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused(device):
    assert f"{device}: not a regular file (a pipe or a device)" in refused("validate", device)


# ---------------------------------------------------------------- 2. every float is finite


@pytest.mark.parametrize(
    "key", ["optimizer.lr", "regularization.l2", "optimizer.clip_norm", "train.divergence_factor", "diagnosis.overfit_rise"]
)
@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_every_float_is_finite(tmp_path, key, value):
    section, name = key.split(".")
    cfg = write(tmp_path, f"name: x\n{section}:\n  {name}: {value}\n")
    assert f"{key}: must be a finite number" in refused("validate", cfg)
    assert f"{key}: must be a finite number" in refused("validate", write(tmp_path, TINY, "t.yaml"), "--set", f"{key}=.inf")


# ---------------------------------------------------------------- 3. an empty config


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "null\n"])
def test_an_empty_config_is_an_error(tmp_path, text):
    path = write(tmp_path, text)
    assert f"{path}: is empty" in refused("validate", path) and "configs/quickstart.yaml" in refused("validate", path)
    run_refused(tmp_path, path)


# ---------------------------------------------------------------- 4. a key given twice


def test_a_duplicate_key_names_the_key_and_both_lines(tmp_path):
    cfg = write(tmp_path, "name: x\ntrain:\n  epochs: 3\nmodel:\n  depth: 2\ntrain:\n  epochs: 5\n")
    assert "train is given twice (lines 2 and 6)" in refused("validate", cfg)
    nested = write(tmp_path, "name: x\ntrain:\n  epochs: 3\n  epochs: 4\n", "n.yaml")
    assert "train.epochs is given twice (lines 3 and 4)" in refused("validate", nested)
    assert "--set 'model={depth: 1, depth: 2}': model.depth is given twice; merge" in refused("validate", write(tmp_path, TINY, "t.yaml"), "--set", "model={depth: 1, depth: 2}")


# ---------------------------------------------------------------- 5. booleans are not numbers


@pytest.mark.parametrize(
    "line, key",
    [
        ("seed: true", "seed"),
        ("optimizer: {lr: true}", "optimizer.lr"),
        ("model: {arch: cnn, channels: [8, false]}", "model.channels.1"),
        ("train: {epochs: yes}", "train.epochs"),
    ],
)
def test_a_boolean_is_not_a_number(tmp_path, line, key):
    assert f"{key}: must be a number, not a boolean" in refused("validate", write(tmp_path, f"name: x\n{line}\n"))


def test_integers_from_yaml_and_from_set_still_work(tmp_path):
    cfg = write(tmp_path, "name: x\nseed: 3\ntrain: {epochs: 2}\n")
    result = invoke("validate", cfg, "--set", "seed=4", "--set", "model.depth=3")
    assert result.exit_code == 0, result.output
    assert "seed: 4" in result.output and "depth: 3" in result.output
    assert config.load_config(cfg).seed == 3


# ---------------------------------------------------------------- 6. a label out of range


# The data's own errors (a named path without the dataset, an empty file, a label out of range)
# are held in test_data.py on data.load; this one is the CLI's side of them: exit 2, the message,
# no run folder, no traceback.
def test_a_label_beyond_the_class_count_names_the_file(tmp_path, isolated_home):
    folder = tmp_path / "f"
    write_idx_dataset(folder, gz=False)
    labels = np.arange(60) % 10
    labels[3] = 200
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    cfg = write(tmp_path, f"name: f\ndata: {{dataset: fashion-mnist, path: {folder}}}\nmodel: {{hidden: [8]}}\ntrain: {{epochs: 1}}\n")
    text = run_refused(tmp_path, cfg)
    assert f"{folder / 'train-labels-idx1-ubyte'}: train label 200 is out of range" in text and "10 classes" in text


# ---------------------------------------------------------------- 7. absurd models, before any JAX work


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.hidden=null", "model.width=1000000000"], "model: too large to train: model.depth 2, model.width 1000000000"),
        (["model.hidden=null", "model.depth=1000000"], "model.depth: must be less than or equal to 1024 (got 1000000)"),
        (["model.hidden=[64, 1000000000]"], "model: too large to train: model.hidden [64, 1000000000]"),
        (["model.hidden=null", "model.arch=resnet", "model.blocks=100000"], "model.blocks: must be less than or equal to 200"),
    ],
    ids=["width-1e9", "depth-1e6", "hidden-1e9", "blocks-1e5"],
)
def test_an_absurd_model_is_refused_before_any_jax_work(tmp_path, overrides, expected):
    cfg = write(tmp_path, TINY)
    sets = [a for o in overrides for a in ("--set", o)]
    assert expected in refused("validate", cfg, *sets)
    assert expected in run_refused(tmp_path, cfg, *sets)


def test_the_size_check_names_the_keys_the_estimate_and_the_limit(monkeypatch):
    cfg = config.validate({"model": {"depth": 4, "width": 4096}, "train": {"seeds": 2}})
    message = config.size_error(cfg, (28, 28, 1), 10, limit_bytes=1 << 30)
    assert message.startswith("model: too large to train: model.depth 4, model.width 4096 make 53,600,266 parameters for 28x28x1 inputs and 10 classes")
    assert "x 2 seeds" in message and "over the 1.0 GiB limit" in message
    assert config.size_error(cfg, (28, 28, 1), 10, limit_bytes=64 << 30) is None
    assert config.machine_memory_bytes() > 0
    # after the data are loaded, a run is held to the machine's memory
    monkeypatch.setattr(config.sizing, "machine_memory_bytes", lambda: 1 << 30)
    with pytest.raises(ConfigError, match="over this machine's 1.0 GiB of memory"):
        config.check_size(cfg, (28, 28, 1), 10)
    config.check_size(config.validate({}), (8, 8, 1), 10)


@pytest.mark.parametrize(
    "model, shape",
    [
        ({"depth": 3, "width": 16}, (8, 8, 1)),
        ({"hidden": [16, 8], "activation": "maxout", "maxout_pieces": 3}, (8, 8, 1)),
        ({"depth": 2, "width": 8, "activation": "prelu", "norm": "batch"}, (8, 8, 1)),
        ({"arch": "cnn", "channels": [4, 8], "hidden": [16]}, (8, 8, 1)),
        ({"arch": "cnn", "channels": [4, 4, 4], "pool": "none", "kernel": 5, "depth": 1, "width": 8, "activation": "maxout"}, (9, 7, 3)),
        ({"arch": "resnet", "blocks": 1}, (8, 8, 1)),
        ({"arch": "resnet", "blocks": 2, "norm": "none", "activation": "prelu"}, (9, 9, 3)),
    ],
)
def test_the_parameter_estimate_is_the_models_parameter_count(model, shape):
    models = pytest.importorskip("dnnlab.models")
    import jax

    m = config.validate({"model": model}).model
    params = jax.eval_shape(models.build(m, shape, 10).init, jax.random.PRNGKey(0))  # shapes only: fast
    assert config.model_counts(m, shape, 10)[0] == models.param_count(params)


# ---------------------------------------------------------------- 8. --set values


@pytest.mark.parametrize("value", ["[1,2", "{a: 1", "'open", "a: b: c"])
def test_an_unparsable_set_value_is_named(tmp_path, value):
    text = refused("validate", write(tmp_path, TINY), "--set", f"model.hidden={value}")
    assert f"--set {'model.hidden=' + value!r}: the value {value!r} is not valid YAML" in text
    assert "both hidden" not in text


def test_a_set_hidden_that_is_not_a_list_is_reported_before_the_depth_clash(tmp_path):
    cfg = write(tmp_path, "name: x\nmodel: {depth: 2, width: 8}\n")
    assert "model: hidden must be a list of positive integers" in refused("validate", cfg, "--set", "model.hidden=abc")


# ---------------------------------------------------------------- 9. sweeps (the CLI's --yes is wired in cli/sweep)


def test_a_sweep_over_ten_thousand_members_needs_yes():
    grid = {"optimizer.lr": list(range(101)), "model.width": list(range(1, 101))}
    n = config.sweep_size(grid, [], 1)
    assert n == 10_100 and config.sweep_size(grid, [{"a": 1}, {"a": 2}], 3) == 60_600
    message = config.sweep_size_error(n, yes=False)
    assert message and "10,100 members" in message and "--yes" in message
    assert config.sweep_size_error(n, yes=True) is None and config.sweep_size_error(10_000, yes=False) is None
