"""The claim checker (`dnnlab.compare.judge`), on synthetic seed sets: an effect inside the noise
is a "no", one outside it a "yes", by the same rule as `dnnlab compare`'s comparative verdict;
and the lecture script that reports the claims."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from dnnlab import compare
from dnnlab.compare import judge

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "lecture.py"


@pytest.fixture(scope="module")
def lecture():
    spec = importlib.util.spec_from_file_location("lecture_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def group(values, metric="test_accuracy", n=10_000, statuses=None):
    """A configuration's seeds: one kept `metric` value per seed (None: a seed killed before its
    summary), measured on `n` examples of each split."""
    statuses = statuses or ["completed"] * len(values)
    recs = []
    for i, (v, status) in enumerate(zip(values, statuses)):
        summary = {} if v is None else {"status": status, "final": {metric: v}, "data": {"train": n, "val": n, "test": n}}
        recs.append(compare.RunRecord(Path(f"seed{i}"), summary=summary))
    return compare.Group({}, recs)


def check(a, b, claim, metric="test_accuracy", n=10_000, **kw):
    ga, gb = group(a, metric, n), group(b, metric, n)
    return judge.check("t", judge.side(ga, metric, "A"), judge.side(gb, metric, "B"), claim, proportion=metric.endswith("accuracy"), **kw)


def test_an_effect_inside_the_noise_is_a_no():
    # the dropout numbers of two machines: 0.810 -> 0.835 on one, 0.8325 -> 0.8324 on another
    c = check([0.810, 0.8325, 0.821], [0.835, 0.8324, 0.829], "higher")
    assert not c.ok and c.difference == pytest.approx(0.0109667, abs=1e-6)
    assert c.tolerance > c.difference and "within the noise" in c.why and "**no**" in c.text()


def test_an_effect_outside_the_noise_is_a_yes():
    c = check([0.800, 0.801, 0.799], [0.840, 0.842, 0.838], "higher")
    assert c.ok and c.difference == pytest.approx(0.04)
    # the split-size term decides here: 1.96 standard errors of 10,000 examples a side
    assert c.tolerance == pytest.approx(1.96 * math.sqrt(0.8 * 0.2 / 1e4 + 0.84 * 0.16 / 1e4))
    assert "**yes**" in c.text() and "0.8400 ± 0.0020" in c.text()


def test_the_rule_is_compares():
    a, b = [0.70, 0.74, 0.72], [0.74, 0.76, 0.80]
    c = check(a, b, "higher")
    assert c.tolerance == pytest.approx(compare.tolerance(group(a), group(b), "test"))
    # the seeds' spread decides: standard deviations 0.02 and 0.0306 added
    assert c.tolerance == pytest.approx(0.02 + math.sqrt(((0.74 - 0.7667) ** 2 + (0.76 - 0.7667) ** 2 + (0.80 - 0.7667) ** 2) / 2), abs=1e-3)
    assert not c.ok and c.difference == pytest.approx(0.0467, abs=1e-3)  # 4.7 points apart, inside a 5.1-point band
    la, lb = [0.60, 0.61, 0.59], [0.50, 0.52, 0.51]
    loss = check(la, lb, "lower", metric="test_loss")
    assert loss.ok and loss.tolerance == pytest.approx(compare.tolerance(group(la, "test_loss"), group(lb, "test_loss"), "test", "loss"))
    assert loss.tolerance == pytest.approx(0.01 + 0.01)  # the seeds' spread alone: no split-size term for a loss


def test_the_split_size_is_part_of_the_noise():
    # identical seeds 0.8 points apart: beyond half a point, within 1.96 standard errors of 10,000 examples
    assert not check([0.800] * 3, [0.808] * 3, "higher").ok
    assert check([0.800] * 3, [0.808] * 3, "higher", n=1_000_000).ok


def test_the_opposite_effect_is_a_no():
    c = check([0.80, 0.80, 0.80], [0.70, 0.70, 0.70], "higher")
    assert not c.ok and "opposite" in c.why
    assert check([0.80, 0.80, 0.80], [0.70, 0.70, 0.70], "lower").ok


def test_a_missing_seed_is_a_no_and_named():
    c = check([0.80, 0.801, None], [0.85, 0.851, 0.849], "higher")
    # the mean is over the seeds that finished, but a claim needs every seed
    assert c.a.mean == pytest.approx(0.8005) and (c.a.finished, c.a.seeds) == (2, 3)
    assert not c.ok and c.difference is None and "A: 2 of 3 seeds finished (1 empty)" in c.why
    assert "**no**" in c.text() and "(2 of 3 seeds; 1 empty)" in c.text()
    assert check([0.80, 0.801, 0.799], [0.85, 0.851, 0.849], "higher").ok  # the same seeds, all there


def test_a_diverged_seed_is_never_averaged_in_and_is_a_no():
    ga = group([0.80, 0.81, 0.10], statuses=["completed", "completed", "diverged"])
    gb = group([0.85, 0.86, 0.86])
    a = judge.side(ga, "test_accuracy", "maxout")
    assert a.mean == pytest.approx(0.805) and a.finished == 2 and a.unfinished == "1 diverged"
    c = judge.check("t", a, judge.side(gb, "test_accuracy", "B"), "higher")
    assert not c.ok and "maxout: 2 of 3 seeds finished (1 diverged)" in c.why
    nan = group([float("nan"), 0.81, 0.80])  # a NaN that slipped into a summary counts as missing too
    assert judge.side(nan, "test_accuracy", "A").finished == 2
    one = judge.side(group([0.8]), "test_accuracy", "A")  # one seed has no spread: never enough
    assert not judge.check("t", one, judge.side(gb, "test_accuracy", "B"), "higher").ok


def test_same_holds_within_a_narrow_noise_only():
    assert check([0.835, 0.836, 0.834], [0.838, 0.837, 0.839], "same").ok
    wide = check([0.80, 0.85, 0.90], [0.82, 0.86, 0.88], "same")
    assert not wide.ok and "cannot show" in wide.why
    assert not check([0.80] * 3, [0.85] * 3, "same").ok


def test_not_lower_allows_noise_but_not_a_drop():
    assert check([0.906, 0.905, 0.907], [0.903, 0.902, 0.904], "not lower").ok
    assert check([0.906, 0.905, 0.907], [0.95, 0.95, 0.95], "not lower").ok
    drop = check([0.906, 0.905, 0.907], [0.66, 0.65, 0.67], "not lower")
    assert not drop.ok and "lower beyond the noise" in drop.why


def test_against_a_constant():
    chance = judge.constant("chance", 0.1)
    at = judge.side(group([0.1, 0.1, 0.1], "train_accuracy", 5000), "train_accuracy", "10 layers")
    assert judge.check("t", chance, at, "same").ok
    above = judge.side(group([0.13, 0.12, 0.13], "train_accuracy", 5000), "train_accuracy", "10 layers")
    assert not judge.check("t", chance, above, "same").ok


def test_values_side_uses_the_same_seed_rule():
    s = judge.values_side("L1", [0.14, None, 0.16])
    assert s.mean == pytest.approx(0.15) and s.std == pytest.approx(math.sqrt(2) * 0.01) and (s.finished, s.seeds) == (2, 3)
    with pytest.raises(ValueError, match="claim 'bigger'"):
        judge.check("t", s, s, "bigger")


def test_a_difference_as_large_as_the_noise_is_within_it_for_every_reader():
    # exact binary numbers: B minus A is 0.125 and so is the noise (the seeds' spread, no split-size term)
    a, b = judge.Side("A", 0.25, 0.0, 2, 2), judge.Side("B", 0.375, 0.125, 2, 2)
    assert judge.beyond(0.125, 0.125) == judge.beyond(-0.125, 0.125) == 0 and judge.beyond(0.126, 0.125) == 1
    higher = judge.check("t", a, b, "higher", proportion=False)
    assert not higher.ok and higher.tolerance == 0.125 and "the same within the noise" in higher.why
    assert judge.check("t", a, b, "not lower", proportion=False, same_within=0.2).ok
    assert judge.check("t", b, a, "same", proportion=False, same_within=0.2).ok
    # `same_within` is the claims' own: the same pair within a noise wider than it cannot show "same"
    assert not judge.check("t", b, a, "same", proportion=False).ok
    # the comparative verdict calls it the same way
    assert compare.classify(0.125, -0.125, 0.125, 0.125)[0] == "similar"
    assert compare.classify(0.126, -0.126, 0.125, 0.125)[0] == "overfits"
    assert compare.classify(-0.126, -0.126, 0.125, 0.125)[0] == "failed-to-train"


def test_bad_input_is_exit_2(lecture, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        lecture.main(["--only", "3"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert lecture.main(["--out", str(blocker), "--only", "4"]) == 2
    assert "--out" in capsys.readouterr().err and blocker.read_text() == "keep me"


def test_a_bad_lecture_config_is_named(lecture, tmp_path, monkeypatch):
    (tmp_path / "9-bad.yaml").write_text("name: l9-bad\nmodel: {widht: 3}\nsweep: {seeds: 3}\n")
    monkeypatch.setattr(lecture, "CONFIGS", tmp_path)
    with pytest.raises(lecture.LectureError, match=r"(?s)9-bad.yaml: .*model.widht"):
        lecture.run_section("9-bad.yaml", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_the_pretraining_claim_runs_in_the_lecture_script(lecture, tmp_path, monkeypatch):
    """Claim 9's config, shrunk to the digits and a few epochs, through the script: its runs, its
    checks, its section and plots (the claim itself is measured on Fashion-MNIST: docs/lecture.md)."""
    import yaml

    from dnnlab import config

    shipped = config.read_yaml(lecture.CONFIGS / "9-rbm-pretraining.yaml")
    assert shipped["sweep"]["grid"] == {"model.pretrain": ["none", "rbm"]} and shipped["model"]["activation"] == "sigmoid"
    small = config.apply_overrides(shipped, [
        "data={dataset: digits, batch_size: 16, split_seed: 0}", "model.depth=4", "model.width=32", "train.epochs=3",
        "pretrain.epochs=5", "sweep.seeds=2", "logging.tensorboard=false",
    ])
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "9-rbm-pretraining.yaml").write_text(yaml.safe_dump(small))
    monkeypatch.setattr(lecture, "ROOT", tmp_path)
    monkeypatch.setattr(lecture, "CONFIGS", tmp_path / "configs")
    code = lecture.main(["--out", str(tmp_path / "out"), "--only", "9"])
    doc = (tmp_path / "out" / "lecture.md").read_text()
    assert code in (0, 1) and "## 9. Before ReLU: greedy layer-wise RBM pretraining" in doc
    assert "training accuracy: pretrained against not: pretrained" in doc and "It took" in doc
    assert (tmp_path / "out" / "lecture" / "9-pretraining.png").exists()
    # 4 sigmoid layers with plain SGD for 3 epochs stay at chance; pretrained they train
    assert code == 0 and "**Reproduced:** yes." in doc, doc


def test_a_tuned_claim_names_each_methods_rate(lecture, tmp_path, monkeypatch):
    """Claim 4's config, shrunk to the digits, two optimizers and three rates, through the script:
    every optimizer trains at every rate with every seed and is judged at its own; the section
    names the rates and how they were chosen."""
    import yaml

    from dnnlab import config

    shipped = config.read_yaml(lecture.CONFIGS / "4-optimizers.yaml")
    assert shipped["sweep"]["tune_seeds"] == "all" and list(shipped["sweep"]["tune"]) == ["optimizer.lr"]
    small = config.apply_overrides(shipped, [
        "data={dataset: digits, batch_size: 64, split_seed: 0}", "model.width=32", "train.epochs=3",
        "sweep.grid={optimizer.name: [sgd, adam]}", "sweep.tune={optimizer.lr: [0.0001, 0.001, 0.01]}", "sweep.seeds=2",
        "logging.tensorboard=false",
    ])
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "4-optimizers.yaml").write_text(yaml.safe_dump(small))
    monkeypatch.setattr(lecture, "ROOT", tmp_path)
    monkeypatch.setattr(lecture, "CONFIGS", tmp_path / "configs")
    code = lecture.main(["--out", str(tmp_path / "out"), "--only", "4"])
    doc = (tmp_path / "out" / "lecture.md").read_text()
    (sweep_dir,) = (tmp_path / "out" / "runs").iterdir()
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    chosen = {p["params"]["optimizer.name"]: p["chosen"] for p in manifest["tune"]["points"]}
    assert len(manifest["members"]) == 12 and set(chosen) == {"sgd", "adam"}
    assert f"(chosen on the mean validation loss of its seeds): sgd {chosen['sgd']:g}, adam {chosen['adam']:g}." in doc
    assert f"(12 runs, 3 learning rates x 2 seeds for each of 2 methods)" in doc
    assert "- optimizer.name=adam: chose" in doc and "training loss after 3 epochs: adam against sgd" in doc
    assert code in (0, 1)
