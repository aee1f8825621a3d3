"""R2-D2: the shared learner smoke checks, and the ridge solve against the primal normal equations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.core.losses import cross_entropy
from metajax.core.model import Model
from metajax.core.tasks import Split, Task
from metajax.learners.r2d2 import r2d2, ridge_weights
from tests.learners.test_matching import smoke


def test_r2d2_smoke_mlp_non_default_options():  # defaults: the shared smoke test
    smoke("r2d2", {"ways": 3, "learn_lambda": False, "init_lambda": 0.5}, "mlp")


def test_woodbury_solve_equals_primal_ridge():
    x = np.random.default_rng(0).normal(size=(6, 10))
    y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    primal = np.linalg.solve(x.T @ x + 0.5 * np.eye(10), x.T @ y)  # (X^T X + lam I)^-1 X^T Y
    np.testing.assert_allclose(
        ridge_weights(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 0.5), primal, rtol=1e-4, atol=1e-5
    )


def test_logits_are_scaled_ridge_predictions():
    identity = Model(lambda key, x: ({"w": jnp.zeros(())}, {}), lambda p, s, x, *, train: (x + p["w"], s))
    support = Split(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([0, 1]))
    learner = r2d2(identity, cross_entropy, ways=3, init_lambda=1.0, init_scale=2.0)
    meta, state = learner.init(jax.random.key(0), Task(support, support))
    logits = np.asarray(learner.predict(learner.adapt(meta, state, support, None, 0), state, jnp.array([[1.0, 0.0]])))
    xb = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    w = xb.T @ np.linalg.solve(xb @ xb.T + np.eye(2), np.eye(3)[[0, 1]])
    np.testing.assert_allclose(logits[0, :2], 2.0 * (np.array([1.0, 0.0, 1.0]) @ w)[:2], rtol=1e-5)
    assert logits[0, 2] == -np.inf


def test_lambda_is_meta_learned_and_can_be_frozen():
    identity = Model(lambda key, x: ({"w": jnp.zeros(())}, {}), lambda p, s, x, *, train: (x + p["w"], s))
    task = Task(Split(jnp.eye(3), jnp.arange(3)), Split(jnp.eye(3) + 0.1, jnp.arange(3)))
    for learn, nonzero in ((True, True), (False, False)):
        learner = r2d2(identity, cross_entropy, learn_lambda=learn)
        meta, state = learner.init(jax.random.key(0), task)
        grads = jax.grad(lambda m: learner.task_loss(m, state, task, None)[0])(meta)
        assert (float(grads["log_lambda"]) != 0.0) == nonzero


def test_bad_config_is_one_line():
    with pytest.raises(ValueError, match="init_lambda"):
        r2d2(None, cross_entropy, init_lambda=0.0)


@pytest.mark.slow
def test_r2d2_learns_omniglot_subsets(omniglot_dir, tmp_path):
    """150 steps of ``r2d2-omniglot-5w1s-tiny``: measured 76.3% test accuracy (chance 20%); bar 60%."""
    from metajax.config import apply_overrides, experiment_config
    from metajax.runner.train import run

    config = apply_overrides(experiment_config("r2d2-omniglot-5w1s-tiny"), [f"data.root={omniglot_dir}", "steps=150"])
    results = run(config, tmp_path / "run", progress=False)
    assert results["post_adaptation"]["accuracy"]["mean"] > 0.60
