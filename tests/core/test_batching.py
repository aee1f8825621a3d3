"""Task-batching strategies agree with each other and with a loop over tasks.

As the runner builds it, a ``+patches`` strategy comes with a Conv4 built with
``conv_impl="patches"`` (:func:`conv_impl_for`); the reference is ``vmap`` with
XLA convolutions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.core.batching import batch_tasks, conv_impl_for, default_strategy, parse, parse_strategy
from metajax.core.losses import cross_entropy, mse
from metajax.core.meta import mean_over_tasks, task_gradient
from metajax.core.optim import fixed
from metajax.core.tasks import Split, Task
from metajax.learners.maml import maml
from metajax.models.conv4 import conv4
from metajax.models.mlp import mlp

TASKS = 3  # odd, so chunked:2 also exercises the remainder chunk


def _conv_tasks():
    k1, k2 = jax.random.split(jax.random.key(0))
    sx = jax.random.normal(k1, (TASKS, 3, 16, 16, 1))
    qx = jax.random.normal(k2, (TASKS, 6, 16, 16, 1))
    return Task(
        Split(sx, jnp.tile(jnp.arange(3), (TASKS, 1))), Split(qx, jnp.tile(jnp.arange(3).repeat(2), (TASKS, 1)))
    )


def _mlp_tasks():
    k1, k2 = jax.random.split(jax.random.key(1))
    sx = jax.random.uniform(k1, (TASKS, 5, 1), minval=-3, maxval=3)
    qx = jax.random.uniform(k2, (TASKS, 5, 1), minval=-3, maxval=3)
    return Task(Split(sx, jnp.sin(sx)), Split(qx, jnp.sin(qx)))


def _learner(kind, conv_impl="xla"):
    if kind == "conv4":
        return maml(conv4(3, filters=4, conv_impl=conv_impl), cross_entropy, fixed(optax.sgd(0.4)), inner_steps=1)
    return maml(mlp(1, hidden=(8, 8)), mse, fixed(optax.sgd(0.1)), inner_steps=2)


def _setup(kind):
    learner, tasks = _learner(kind), _conv_tasks() if kind == "conv4" else _mlp_tasks()
    meta, state = learner.init(jax.random.key(2), jax.tree_util.tree_map(lambda a: a[0], tasks))
    return learner, tasks, meta, state


def _batched(learner, strategy):
    per_task = task_gradient(learner)

    @jax.jit
    def run(meta, state, tasks, keys):
        grads, (_, metrics) = batch_tasks(lambda t, k: per_task(meta, state, t, k), strategy)(tasks, keys)
        return mean_over_tasks(grads), mean_over_tasks(metrics)

    return run


@pytest.fixture(scope="module", params=["conv4", "mlp"])
def reference(request):
    learner, tasks, meta, state = _setup(request.param)
    keys = jax.random.split(jax.random.key(3), TASKS)
    return request.param, learner, tasks, meta, state, keys, _batched(learner, "vmap")(meta, state, tasks, keys)


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "strategy",
    [
        "map+patches",  # the CPU default for convolutional models
        "chunked:2+patches",
        pytest.param("map", marks=SLOW),
        pytest.param("chunked:2", marks=SLOW),
        pytest.param("vmap+patches", marks=SLOW),
    ],
)
def test_strategies_agree_with_vmap(reference, strategy):
    kind, _, tasks, meta, state, keys, expected = reference
    learner = _learner(kind, conv_impl_for(strategy))  # what the builder makes for this strategy
    _close(_batched(learner, strategy)(meta, state, tasks, keys), expected)


def test_batched_gradient_is_mean_of_per_task_gradients(reference):
    _, learner, tasks, meta, state, keys, (grads, metrics) = reference
    one = jax.jit(task_gradient(learner))
    singles = [one(meta, state, jax.tree_util.tree_map(lambda a: a[i], tasks), keys[i]) for i in range(TASKS)]
    _close(grads, jax.tree_util.tree_map(lambda *g: sum(g) / TASKS, *[s[0] for s in singles]))
    _close(metrics["loss"], np.mean([s[1][1]["loss"] for s in singles]))
    # Not trivially equal: the tasks' gradients differ from each other.
    g0, g1 = (jax.tree_util.tree_leaves(s[0]) for s in singles[:2])
    assert any(not np.allclose(a, b) for a, b in zip(g0, g1, strict=True))


def test_parse_accepts_and_rejects():
    assert parse("chunked:4+patches") == ("chunked", 4, "patches")
    assert parse("map") == ("map", 0, None)
    assert [conv_impl_for(s) for s in ("vmap", "chunked:2", "map+patches", "vmap+patches")] == [
        "xla",
        "xla",
        "patches",
        "patches",
    ]
    assert parse_strategy("map") == ("map", 0)
    for bad in ["pmap", "chunked:0", "chunked:x", "vmap+taps", "vmap+", 3]:
        with pytest.raises(ValueError, match="task_batching"):
            parse(bad)


def test_default_table_entries_parse():
    for backend in ("cpu", "gpu", "tpu"):
        for model in ("mlp", "conv4"):
            parse(default_strategy(backend, model))
    assert default_strategy("cpu", "mlp") == "vmap"
