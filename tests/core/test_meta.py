"""The outer step: batching over tasks, tracing once, jit agreement."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import fixed, init_meta_state, learned_lr, maml, meta_step, mse, reptile
from metajax.core.meta import task_gradient
from metajax.core.tasks import task_at
from metajax.models.mlp import mlp
from tests.helpers import regression_tasks

TASKS = 6


def _learners():
    model = mlp(out_features=1, hidden=(8, 8))
    return {
        "maml": maml(model, mse, fixed(optax.sgd(0.05)), inner_steps=2),
        "metasgd": maml(model, mse, learned_lr(optax.sgd(1.0), 0.05), inner_steps=1),
        "reptile": reptile(model, mse, fixed(optax.sgd(0.05)), inner_steps=2),
    }


@pytest.fixture(scope="module")
def batch():
    return regression_tasks(jax.random.key(0), TASKS, 5, 3)


@pytest.mark.parametrize("name", ["maml", "metasgd", "reptile"])
@pytest.mark.parametrize("strategy", ["vmap", "map"])
def test_batched_meta_gradient_is_mean_of_per_task_gradients(batch, name, strategy):
    learner = _learners()[name]
    # Outer SGD with lr 1 makes the parameter change equal to minus the mean gradient.
    state = init_meta_state(learner, optax.sgd(1.0), jax.random.key(1), task_at(batch, 0))
    key = jax.random.key(2)
    new_state, _ = jax.jit(meta_step(learner, optax.sgd(1.0), task_batching=strategy))(state, batch, key)
    batched = jax.tree_util.tree_map(lambda old, new: old - new, state.meta_params, new_state.meta_params)
    keys = jax.random.split(key, TASKS)
    per_task = [task_gradient(learner)(state.meta_params, {}, task_at(batch, i), keys[i])[0] for i in range(TASKS)]
    expected = jax.tree_util.tree_map(lambda *g: sum(g) / TASKS, *per_task)
    for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_meta_step_traces_once_and_jit_matches_eager(batch):
    learner = _learners()["maml"]
    outer = optax.adam(1e-3)
    state = init_meta_state(learner, outer, jax.random.key(1), task_at(batch, 0))
    step = chex.assert_max_traces(meta_step(learner, outer), n=1)
    jitted = jax.jit(step)
    jit_state = state
    for i in range(3):
        jit_state, jit_metrics = jitted(jit_state, batch, jax.random.key(i))
    eager_state = state
    eager = meta_step(learner, outer)
    for i in range(3):
        eager_state, eager_metrics = eager(eager_state, batch, jax.random.key(i))
    chex.assert_trees_all_close(jit_state.meta_params, eager_state.meta_params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jit_metrics, eager_metrics, rtol=1e-5, atol=1e-6)
    assert int(jit_state.step) == 3


def test_meta_step_reduces_the_meta_loss(batch):
    learner = _learners()["maml"]
    outer = optax.adam(1e-2)
    state = init_meta_state(learner, outer, jax.random.key(1), task_at(batch, 0))
    step = jax.jit(meta_step(learner, outer))
    _, first = step(state, batch, jax.random.key(0))
    for i in range(50):
        state, metrics = step(state, batch, jax.random.key(i))
    assert float(metrics["loss"]) < 0.5 * float(first["loss"])
    assert jnp.isfinite(metrics["grad_norm"])
