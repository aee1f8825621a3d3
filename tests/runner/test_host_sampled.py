"""Training from a host-sampled source (``data.placement=host``): resume, eval and episode export stay exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metajax import apply_overrides, experiment_config, run
from metajax.runner import evaluate as sampled_eval
from metajax.runner import metrics as metrics_file
from metajax.runner.episodes import evaluate_episodes, export_episodes
from metajax.runner.eval import evaluate_run
from metajax.runner.load import load_run
from tests.data.test_miniimagenet import write_pickles

NAME = "protonet-miniimagenet-5w1s-tiny"


def numbers(results):
    return {k: results[k] for k in ("by_inner_step", "best_val_score", "step")}


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_host")
    write_pickles(root)
    return [f"data.root={root}", "data.placement=host", "steps=4", "eval.test_tasks=6"]


@pytest.fixture(scope="module")
def straight(overrides, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, run(apply_overrides(experiment_config(NAME), overrides), workdir, progress=False)


def test_host_run_records_placement_and_trains(straight):
    workdir, results = straight
    assert json.loads((workdir / "run.json").read_text())["data"]["placement"] == "host"
    records = metrics_file.read(workdir / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4]
    assert results["step"] == 4 and np.isfinite(results["post_adaptation"]["accuracy"]["mean"])


def test_host_run_resumes_to_the_same_numbers(straight, overrides, tmp_path):
    """Step s's batch is a function of (seed, s): an interrupted run draws what the straight one drew."""
    _, results = straight
    workdir = tmp_path / "resumed"
    run(apply_overrides(experiment_config(NAME), [*overrides, "steps=2"]), workdir, progress=False)
    recorded = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**recorded, "steps": 4}))
    resumed = run(apply_overrides(experiment_config(NAME), overrides), workdir, progress=False)
    assert numbers(resumed) == numbers(results)


def test_eval_of_a_host_run_reproduces_its_test_numbers(straight):
    workdir, results = straight
    again = evaluate_run(workdir)
    assert again["by_inner_step"] == results["by_inner_step"]


def test_exported_host_episodes_are_the_ones_the_run_is_tested_on(straight, overrides, tmp_path):
    workdir, _ = straight
    manifest = export_episodes(NAME, tmp_path / "episodes", episodes=6, overrides=overrides)
    from_files = evaluate_episodes(workdir, manifest)
    loaded = load_run(workdir)
    config, c = loaded.config, loaded.components
    tester = sampled_eval.make_evaluator(
        c.learner, c.source, split="test", steps=1, task_batching=config["task_batching"]
    )
    key = sampled_eval.split_keys(config["seed"])["test"]
    batch = sampled_eval.eval_batch_size(config, 6)
    chunks = sampled_eval.eval_tasks(c.source, config, "test", batch)
    sampled = sampled_eval.evaluate(tester, loaded.state, None, key, 6, batch, chunks)
    np.testing.assert_array_equal(from_files["per_episode"]["accuracy"], sampled["accuracy"][:, -1])


@pytest.mark.slow
def test_maml_trains_from_the_host(overrides, tmp_path):
    config = apply_overrides(experiment_config("maml-miniimagenet-5w1s-tiny"), overrides)
    results = run(config, tmp_path / "maml", progress=False)
    assert results["step"] == 4 and np.isfinite(results["post_adaptation"]["loss"]["mean"])


@pytest.mark.parametrize("placement", ["device", pytest.param("host", marks=pytest.mark.slow)])
def test_training_episodes_of_their_own_shape(overrides, placement, tmp_path):
    """``data.train_ways`` / ``train_queries``: ProtoNets-style wider training episodes, 5-way tests."""
    base = [o for o in overrides if not o.startswith("data.placement")]
    config = apply_overrides(
        experiment_config(NAME), [*base, f"data.placement={placement}", "data.train_ways=8", "data.train_queries=1"]
    )
    results = run(config, tmp_path / placement, progress=False)
    data = json.loads((tmp_path / placement / "run.json").read_text())["data"]
    assert data["train_ways"] == 8 and data["train_queries"] == 1 and data["ways"] == 5
    assert results["step"] == 4 and np.isfinite(results["post_adaptation"]["accuracy"]["mean"])
    source = load_run(tmp_path / placement).components.source
    assert source.example_for("train").support.x.shape[0] == 8 and source.example.query.x.shape[0] == 10


@pytest.mark.parametrize("placement", ["device", pytest.param("host", marks=pytest.mark.slow)])
def test_image_augmentation_changes_training_only(overrides, placement, tmp_path):
    """With ``data.image_augment`` the train step sees augmented tasks; evaluation is unchanged for the same state."""
    from metajax.runner.build import build

    base = [o for o in overrides if not o.startswith("data.placement")] + [f"data.placement={placement}"]
    augmented = apply_overrides(experiment_config(NAME), [*base, 'data.image_augment=["crop:2", "color:0.4", "flip"]'])
    results = run(augmented, tmp_path / placement, progress=False)
    assert json.loads((tmp_path / placement / "run.json").read_text())["data"]["image_augment"][0] == "crop:2"
    assert np.isfinite(results["post_adaptation"]["accuracy"]["mean"])
    trained = load_run(tmp_path / placement)
    plain = build(sampled_eval_config(trained.config))
    assert trained.components.source.train_augment is not None and plain.source.train_augment is None
    again = sampled_eval.test_results(
        plain.learner, plain.source, trained.state, trained.config, steps=1, tasks=trained.config["eval"]["test_tasks"]
    )
    assert again["by_inner_step"] == results["by_inner_step"], "evaluation must not augment"


def sampled_eval_config(config):
    return {**config, "data": {k: v for k, v in config["data"].items() if k != "image_augment"}}
