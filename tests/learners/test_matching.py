"""Matching Networks: the shared learner smoke checks, and the attention arithmetic against a hand computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.core.losses import LOSSES, cross_entropy
from metajax.core.meta import init_meta_state, meta_step
from metajax.core.model import Model
from metajax.core.tasks import Split, Task
from metajax.learners.matching import FullContextEmbedding, matching
from metajax.registry import get

WAYS, SHOTS, QUERIES, TASKS = 3, 2, 2, 2


def classification_tasks(key, input_shape) -> Task:
    """``TASKS`` random ``WAYS``-way tasks with class-dependent means (as the shared smoke test)."""
    k_mean, k_s, k_q = jax.random.split(key, 3)
    means = jax.random.normal(k_mean, (TASKS, WAYS, *input_shape))

    def split(k, per_class):
        y = jnp.tile(jnp.arange(WAYS), per_class)
        noise = 0.1 * jax.random.normal(k, (TASKS, WAYS * per_class, *input_shape))
        return Split(means[:, y] + noise, jnp.broadcast_to(y, (TASKS, WAYS * per_class)).astype(jnp.int32))

    return Task(split(k_s, SHOTS), split(k_q, QUERIES))


def smoke(name: str, config: dict, family: str) -> None:
    """The shared learner smoke checks: init, one meta-step, evaluate, adapt + predict == evaluate."""
    key = jax.random.key(0)
    if family == "mlp":
        model, tasks = get("models", "mlp")(out_features=8, hidden=[8]), classification_tasks(key, (4,))
    else:
        model = get("models", "conv4")(out_features=None, filters=4, strided=True)
        tasks = classification_tasks(key, (8, 8, 1))
    learner = get("learners", name)(model, LOSSES["cross_entropy"], **config)
    example = jax.tree_util.tree_map(lambda leaf: leaf[0], tasks)
    outer = optax.sgd(0.01)
    state = init_meta_state(learner, outer, jax.random.key(1), example)
    batching = "map" if family == "conv4" else "vmap"

    @jax.jit
    def run(state, tasks):
        new_state, metrics = meta_step(learner, outer, task_batching=batching)(state, tasks, jax.random.key(2))
        meta, model_state = new_state.meta_params, new_state.model_state
        evaluated = learner.evaluate(meta, model_state, example, jax.random.key(3), 0)
        adapted = learner.adapt(meta, model_state, example.support, jax.random.key(4), 0)
        return new_state, metrics, evaluated, learner.predict(adapted, model_state, example.query.x)

    new_state, metrics, evaluated, predictions = jax.device_get(run(state, tasks))
    assert int(new_state.step) == 1
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    moved = jax.tree_util.tree_map(lambda a, b: np.max(np.abs(a - b)), state.meta_params, new_state.meta_params)
    assert max(float(m) for m in jax.tree_util.tree_leaves(moved)) > 0, "one meta-step left every parameter unchanged"
    assert learner.inner_steps == 0 and "loss" in evaluated
    for metric, value in evaluated.items():
        assert value.shape == (1,), (metric, value.shape)
        assert np.all(np.isfinite(value)), metric
    assert predictions.shape[0] == example.query.x.shape[0]
    accuracy = np.mean(np.argmax(predictions, -1) == np.asarray(example.query.y))
    np.testing.assert_allclose(accuracy, evaluated["accuracy"][-1], atol=1e-6)


# Without FCE, and R2-D2, the shared smoke test (tests/learners/test_learners_smoke.py) covers them.
def test_matching_fce_smoke_mlp():
    smoke("matching", {"fce": True, "fce_steps": 2}, "mlp")


@pytest.mark.slow
def test_matching_fce_smoke_conv4():
    smoke("matching", {"fce": True}, "conv4")


def _identity() -> Model:
    return Model(lambda key, x: ({"w": jnp.zeros(())}, {}), lambda p, s, x, *, train: (x + p["w"], s))


def test_attention_matches_hand_computation():
    # Support: two examples of class 0 along e1, one of class 1 along e2; query along e1 + 0.5 e2.
    support = Split(jnp.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]), jnp.array([0, 0, 1]))
    query = jnp.array([[2.0, 1.0]])
    learner = matching(_identity(), cross_entropy, scale=2.0, ways=3)
    meta, state = learner.init(jax.random.key(0), Task(support, Split(query, jnp.array([0]))))
    log_p = np.asarray(learner.predict(learner.adapt(meta, state, support, None, 0), state, query))[0]
    cos = np.array([2.0, 2.0, 1.0]) / np.sqrt(5.0)  # cosine of the query with each support example
    a = np.exp(2.0 * cos) / np.exp(2.0 * cos).sum()
    np.testing.assert_allclose(np.exp(log_p[:2]), [a[0] + a[1], a[2]], rtol=1e-5)
    assert log_p[2] == -np.inf  # class 2 has no support example


def test_fce_shapes_and_dependence_on_support():
    module = FullContextEmbedding(steps=3)
    support, query = jnp.ones((6, 4)), jnp.ones((5, 4))
    params = module.init(jax.random.key(0), support, query)
    g, f = module.apply(params, support, query)
    assert g.shape == (6, 4) and f.shape == (5, 4)
    _, f2 = module.apply(params, support.at[0].set(-3.0), query)
    assert not np.allclose(f, f2), "the query embedding must read the support set"


def test_bad_config_is_one_line():
    with pytest.raises(ValueError, match="fce_steps"):
        matching(_identity(), cross_entropy, fce=True, fce_steps=0)


@pytest.mark.slow
def test_matching_learns_omniglot_subsets(omniglot_dir, tmp_path):
    """150 steps of ``matching-omniglot-5w1s-tiny``: measured 74.5% test accuracy (chance 20%); bar 60%."""
    from metajax.config import apply_overrides, experiment_config
    from metajax.runner.train import run

    config = apply_overrides(
        experiment_config("matching-omniglot-5w1s-tiny"), [f"data.root={omniglot_dir}", "steps=150"]
    )
    results = run(config, tmp_path / "run", progress=False)
    assert results["post_adaptation"]["accuracy"]["mean"] > 0.60
