"""``metajax report``: grouping, seed aggregation (checked by hand), the markdown table, the PNG and protocol flags."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metajax.cli import main
from metajax.config import apply_overrides, experiment_config
from metajax.errors import ConfigError
from metajax.runner.report import aggregate, load_run, report, seed_stats
from metajax.runner.train import run
from tests.data.test_miniimagenet import write_pickles

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = "protonet-miniimagenet-5w1s-tiny"


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Two seeds of the tiny ProtoNets protocol on generated miniImageNet pickles (64 / 16 / 20 classes)."""
    root = tmp_path_factory.mktemp("report")
    (root / "data").mkdir()
    write_pickles(root / "data")
    dirs = []
    for seed in (0, 1):
        config = apply_overrides(experiment_config(TINY), [f"seed={seed}", f"data.root={root / 'data'}"])
        run(config, root / f"seed{seed}", progress=False)
        dirs.append(root / f"seed{seed}")
    return root, dirs


def test_two_seeds_table_png_and_arithmetic(two_seeds, capsys):
    root, dirs = two_seeds
    accuracies = [json.loads((d / "results.json").read_text())["post_adaptation"]["accuracy"]["mean"] for d in dirs]
    a, b = 100 * accuracies[0], 100 * accuracies[1]
    mean = (a + b) / 2
    sample_std = abs(a - b) / math.sqrt(2)  # std with ddof=1 of two numbers
    ci = 1.96 * sample_std / math.sqrt(2)

    assert main(["report", *map(str, dirs), "--out", str(root / "out")]) == 0
    printed = capsys.readouterr().out
    table = (root / "out" / "report.md").read_text()
    assert printed.startswith(table)
    row = next(line for line in table.splitlines() if line.startswith(f"| {TINY} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2"
    assert cells[2] == f"{mean:.2f} ± {ci:.2f}"
    assert cells[3] == "49.42 ± 0.78"  # Snell et al. 2017, Table 2, from config["reference"]
    assert "Prototypical Networks" in cells[4]
    assert "tiny variant" in table and "flag" in cells[5]
    rows = json.loads((root / "out" / "report.json").read_text())
    np.testing.assert_allclose(rows[0]["per_seed"], [a, b], rtol=1e-9)
    png = (root / "out" / "report.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 2000


def test_protocol_change_is_flagged_and_grouped_apart(two_seeds, tmp_path):
    _, dirs = two_seeds
    changed = load_run(dirs[0])
    changed["config"] = {
        **changed["config"],
        "steps": 2,
        "data": {**changed["config"]["data"], "augment": "rotate_tasks"},
    }
    rows = aggregate([load_run(dirs[0]), load_run(dirs[1]), changed])
    assert [r["experiment"] for r in rows] == [TINY, f"{TINY} [data.augment, steps differ]"]
    flags = " ".join(rows[1]["flags"])
    assert "steps 2 (registered 4)" in flags and "data.augment rotate_tasks (registered none)" in flags
    assert len(rows[0]["seeds"]) == 2 and len(rows[1]["seeds"]) == 1
    assert rows[1]["ci_kind"] == "tasks"  # one seed: the run's own interval over test tasks


def _fake_run(path, seed, accuracy, experiment="maml-miniimagenet-5w1s"):
    path.mkdir(parents=True)
    config = experiment_config(experiment)
    config["seed"] = seed
    (path / "config.json").write_text(json.dumps(config))
    result = {"post_adaptation": {"accuracy": {"mean": accuracy, "ci95": 0.01}, "loss": {"mean": 1.0, "ci95": 0.1}}}
    (path / "results.json").write_text(json.dumps(result))


def test_three_seed_arithmetic_by_hand(tmp_path):
    for seed, accuracy in enumerate((0.5, 0.6, 0.7)):
        _fake_run(tmp_path / f"s{seed}", seed, accuracy)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text(
        json.dumps({**experiment_config("maml-miniimagenet-5w1s"), "seed": 9})
    )
    text, rows = report([tmp_path / "s0", tmp_path / "s1", tmp_path / "s2", tmp_path / "unfinished"], tmp_path / "out")
    # mean 60; sample std of (50, 60, 70) is 10; CI = 1.96 * 10 / sqrt(3) = 11.3161
    assert rows[0]["mean"] == pytest.approx(60.0) and rows[0]["ci95"] == pytest.approx(11.3161, abs=1e-4)
    assert "| maml-miniimagenet-5w1s | 3 | 60.00 ± 11.32 | 48.70 ± 1.84 |" in text
    assert "no results.json" in text
    assert seed_stats([42.0]) == (42.0, None)


def test_not_a_run_directory_is_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a run directory"):
        load_run(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
