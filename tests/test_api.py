"""The Python API (docs/api.md): its page's worked example runs as written, `import dnnlab`
stays light, and the names and errors are those the page promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_import_dnnlab_imports_no_jax_and_names_are_lazy():
    code = (
        "import sys, dnnlab\n"
        "names = [dnnlab.load_config, dnnlab.open_run, dnnlab.Run, dnnlab.fix, dnnlab.ConfigError, dnnlab.DataError,"
        " dnnlab.RunError, dnnlab.ExperimentError, dnnlab.SweepError, dnnlab.CompareError, dnnlab.ExportError]\n"
        "assert callable(dnnlab.train) and callable(dnnlab.sweep) and callable(dnnlab.compare)\n"
        "print('jax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_training_package_is_still_the_package_inside_dnnlab():
    import dnnlab
    from dnnlab import train

    assert hasattr(train, "fit") and train is dnnlab.train  # a module, and callable: dnnlab.train(...)
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        dnnlab.nonesuch  # noqa: B018


def test_the_worked_example_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(API_DOC.read_text(encoding="utf-8"))
    assert blocks, "docs/api.md has no python block"
    monkeypatch.chdir(ROOT)  # the page's paths are the repository's
    scope = {"OUT": tmp_path}
    for block in blocks:
        exec(compile(block, str(API_DOC), "exec"), scope)
    printed = capsys.readouterr().out
    assert "model.width" in printed and "model.depth" in printed  # the compare keys, the did-you-mean
    run = scope["run"]
    html = run._repr_html_()
    assert run.verdict and run.verdict in html and "data:image/png;base64" in html
    # the API predicts what `dnnlab predict` computes for the same raw inputs
    from dnnlab import data, predict

    pixels = np.load(data.DIGITS_FILE)["images"].reshape(-1, 64)[:5]
    np.testing.assert_array_equal(scope["probs"], predict.open_trained(run.path).proba_raw(pixels))


def test_predict_proba_takes_a_dataframe_by_column_name(tmp_path):
    pd = pytest.importorskip("pandas")
    import dnnlab
    from dnnlab import config, data, models, runs
    from dnnlab.checkpoints import flatten_params

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)) * [1, 10, 100]
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(label=np.repeat(["p", "q", "r"], 10))
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = config.validate(config.apply_overrides({"name": "t"}, [
        "data.dataset=csv", f"data.path={tmp_path / 't.csv'}", "data.label=label", "data.normalize=standard",
        "model.depth=1", "model.width=4"]))
    ds = data.load(cfg.data, 0)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / runs.CONFIG).write_text(config.dump_yaml(cfg))
    runs.write_preprocessing(folder, ds.preprocessing)
    import jax

    model = models.build(cfg.model, ds.input_shape, ds.num_classes, models.plan_stack(cfg.model))
    np.savez(folder / "last.npz", **flatten_params(model.init(jax.random.PRNGKey(1))))
    run = dnnlab.open_run(folder)
    by_name = run.predict_proba(frame[["c", "label", "a", "b"]])  # shuffled, with an extra column
    np.testing.assert_array_equal(by_name, run.predict_proba(x))
    assert list(run.predict(x[:2])) == [run.classes[i] for i in by_name[:2].argmax(axis=1)]
    with pytest.raises(dnnlab.DataError, match="no column 'b'"):
        run.predict_proba(frame[["a", "c"]])
    with pytest.raises(dnnlab.DataError, match="3 values per example"):
        run.predict_proba(np.zeros((2, 4)))
