"""The runner: files written, determinism, resume, refusing a changed config, loading a run."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import metajax
from metajax import ConfigError, apply_overrides, experiment_config, load_run
from metajax.runner import metrics as metrics_file

STEPS = 40


def _config(**overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    return apply_overrides(experiment_config("maml-sinusoid-tiny"), [f"steps={STEPS}", *items])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, metajax.run(_config(), workdir, progress=False)


def _numbers(results):
    return {k: results[k] for k in ("by_inner_step", "pre_adaptation", "post_adaptation", "best_val_score", "step")}


def test_run_writes_config_metrics_results_and_checkpoints(straight):
    workdir, results = straight
    for name in ("config.json", "run.json", "metrics.jsonl", "results.json"):
        assert (workdir / name).exists(), name
    config = json.loads((workdir / "config.json").read_text())
    assert config["task_batching"] in ("vmap", "map")  # resolved, never "auto"
    records = metrics_file.read(workdir / "metrics.jsonl")
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS
    assert any(r["split"] == "val" for r in records)
    assert (workdir / "checkpoints" / str(STEPS)).exists() and any((workdir / "best").iterdir())
    assert results["step"] == STEPS
    assert len(results["by_inner_step"]["loss"]["mean"]) == results["inner_steps"]["test"] + 1
    assert results["pre_adaptation"]["loss"]["mean"] == results["by_inner_step"]["loss"]["mean"][0]


def test_same_seed_same_numbers(straight, tmp_path):
    _, results = straight
    again = metajax.run(_config(), tmp_path / "again", progress=False)
    assert _numbers(again) == _numbers(results)


def test_resume_gives_the_same_final_numbers_as_a_straight_run(straight, tmp_path):
    _, results = straight
    workdir = tmp_path / "resumed"
    # A run interrupted right after its step-25 checkpoint: train 25 steps, then make its
    # recorded config the full one, as if it had been started with it, and run again.
    metajax.run(_config(steps=25), workdir, progress=False)
    (workdir / "config.json").write_text(
        json.dumps({**json.loads((workdir / "config.json").read_text()), "steps": STEPS})
    )
    resumed = metajax.run(_config(), workdir, progress=False)
    assert _numbers(resumed) == _numbers(results)
    steps = [r["step"] for r in metrics_file.read(workdir / "metrics.jsonl") if r["split"] == "train"]
    assert len(steps) == len(set(steps)), "a resumed run duplicated metrics lines"


def test_rerunning_with_a_changed_config_is_refused(straight):
    workdir, _ = straight
    with pytest.raises(ConfigError, match="different config.*learner.inner_opt.lr"):
        metajax.run(_config(inner_lr=0.5), workdir, progress=False)


def test_load_run_adapts_and_predicts_consistently_with_the_runner(straight):
    workdir, results = straight
    trained = load_run(workdir)
    assert trained.step == STEPS
    x = jnp.linspace(-5, 5, 10)[:, None]
    y = 2.0 * jnp.sin(x - 0.5)
    unadapted = trained.predict(trained.meta_params["params"], x)
    adapted = trained.adapt(x, y, steps=5)
    assert trained.predict(adapted, x).shape == (10, 1)
    loss_before = float(jnp.mean((unadapted - y) ** 2))
    loss_after = float(jnp.mean((trained.predict(adapted, x) - y) ** 2))
    assert loss_after < loss_before  # five support steps fit the support set better
    with pytest.raises(ValueError, match="trained on"):
        trained.adapt(jnp.zeros((3, 2)), jnp.zeros((3, 1)))


def test_eval_of_a_run_reproduces_its_results(straight):
    from metajax.runner.eval import evaluate_run

    workdir, results = straight
    evaluated = evaluate_run(workdir)
    np.testing.assert_allclose(
        evaluated["by_inner_step"]["loss"]["mean"], results["by_inner_step"]["loss"]["mean"], rtol=1e-6
    )
