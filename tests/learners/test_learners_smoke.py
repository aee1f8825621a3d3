"""The shared smoke test every registered learner passes: init, one meta-step, evaluation, adapt/predict.

Run on tiny inputs for two model families: the MLP on sinusoid regression
(vector classification for ProtoNets, which needs classes) and Conv4 on
small random images. A learner registered later is picked up automatically
(learners with an inner loop need a config in ``INNER_LOOP``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.core.losses import LOSSES
from metajax.core.meta import init_meta_state, meta_step
from metajax.core.tasks import Split, Task
from metajax.data.sinusoid import sinusoid
from metajax.data.source import sample_tasks
from metajax.registry import get, names

SGD = {"name": "sgd", "lr": 0.1}
# Learners with an inner loop, and their configs; every other registered learner is
# smoke-tested as an embedding learner (headless model, classification) with defaults.
INNER_LOOP = {
    "maml": {"inner_opt": SGD, "inner_steps": 1},
    "fomaml": {"inner_opt": SGD, "inner_steps": 1},
    "metasgd": {"inner_opt": SGD, "inner_steps": 1},
    "anil": {"inner_opt": SGD, "inner_steps": 1},
    "reptile": {"inner_opt": SGD, "inner_steps": 2},
}
LEARNERS = sorted(set(names("learners")) | set(INNER_LOOP) | {"protonet"})
WAYS, SHOTS, QUERIES, TASKS = 3, 2, 2, 2


def _classification_tasks(key, input_shape) -> Task:
    """``TASKS`` random ``WAYS``-way tasks with class-dependent means, so labels are learnable."""
    k_mean, k_s, k_q = jax.random.split(key, 3)
    means = jax.random.normal(k_mean, (TASKS, WAYS, *input_shape))

    def split(k, per_class):
        y = jnp.tile(jnp.arange(WAYS), per_class)
        noise = 0.1 * jax.random.normal(k, (TASKS, WAYS * per_class, *input_shape))
        return Split(means[:, y] + noise, jnp.broadcast_to(y, (TASKS, WAYS * per_class)).astype(jnp.int32))

    return Task(split(k_s, SHOTS), split(k_q, QUERIES))


def _setting(learner_name: str, family: str):
    """``(model, loss name, task batch)`` for a learner on a model family."""
    key = jax.random.key(0)
    classify = learner_name not in INNER_LOOP
    if family == "mlp" and not classify:
        tasks = sample_tasks(sinusoid(shots=4), {}, key, TASKS)
        return get("models", "mlp")(out_features=1, hidden=[8, 8]), "mse", tasks
    if family == "mlp":
        return get("models", "mlp")(out_features=8, hidden=[8]), "cross_entropy", _classification_tasks(key, (4,))
    if classify:  # the headless Conv4 ProtoNets configs use, with running batch-norm statistics
        model = get("models", "conv4-embedding")(out_features=WAYS, filters=4, strided=True, batch_norm="standard")
    else:
        model = get("models", "conv4")(out_features=WAYS, filters=4, strided=True)  # strided: 8x8 inputs suffice
    return model, "cross_entropy", _classification_tasks(key, (8, 8, 1))


# Conv4 cases compile for 5-20 s each on a CPU; the default run keeps one with an
# inner loop through the convolutions and the head (Reptile) and one embedding
# learner (ProtoNets). The MLP cases cover every learner's own code path.
FAST_CONV = ("reptile", "protonet")
CASES = [(name, "mlp") for name in LEARNERS] + [
    pytest.param(name, "conv4", marks=() if name in FAST_CONV else pytest.mark.slow) for name in LEARNERS
]


@pytest.mark.parametrize(("name", "family"), CASES)
def test_learner_smoke(name, family):
    model, loss_name, tasks = _setting(name, family)
    learner = get("learners", name)(model, LOSSES[loss_name], **INNER_LOOP.get(name, {}))
    example = jax.tree_util.tree_map(lambda leaf: leaf[0], tasks)
    outer = optax.sgd(0.01)
    state = init_meta_state(learner, outer, jax.random.key(1), example)
    steps = learner.inner_steps + 1 if learner.inner_steps else 0
    batching = "map" if family == "conv4" else "vmap"  # the CPU defaults (metajax.core.batching)

    @jax.jit  # one compilation per case: meta-step, evaluation, adapt and predict
    def smoke(state, tasks):
        new_state, metrics = meta_step(learner, outer, task_batching=batching)(state, tasks, jax.random.key(2))
        meta, model_state = new_state.meta_params, new_state.model_state
        evaluated = learner.evaluate(meta, model_state, example, jax.random.key(3), steps)
        adapted = learner.adapt(meta, model_state, example.support, jax.random.key(4), steps)
        return new_state, metrics, evaluated, learner.predict(adapted, model_state, example.query.x)

    new_state, metrics, evaluated, predictions = jax.device_get(smoke(state, tasks))
    assert int(new_state.step) == 1
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    moved = jax.tree_util.tree_map(lambda a, b: np.max(np.abs(a - b)), state.meta_params, new_state.meta_params)
    assert max(float(m) for m in jax.tree_util.tree_leaves(moved)) > 0, "one meta-step left every parameter unchanged"

    expected = (steps + 1,) if learner.inner_steps else (1,)
    assert "loss" in evaluated
    for metric, value in evaluated.items():
        assert value.shape == expected, (metric, value.shape)
        assert np.all(np.isfinite(value)), metric

    assert predictions.shape[0] == example.query.x.shape[0]
    if loss_name == "cross_entropy":
        # adapt + predict scores the query exactly as evaluate's last entry does
        accuracy = np.mean(np.argmax(predictions, -1) == np.asarray(example.query.y))
        np.testing.assert_allclose(accuracy, evaluated["accuracy"][-1], atol=1e-6)
