"""Remat policies: same gradients, and memory that stops growing with inner steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.core.adapt import adapt, remat_policy
from metajax.core.losses import cross_entropy
from metajax.core.optim import fixed
from metajax.core.tasks import Split, Task
from metajax.learners.maml import maml
from metajax.models.conv4 import conv4


def _meta_grad(remat, steps=3):
    w0 = jnp.array([[0.5, -1.0], [2.0, 0.3]])
    x = jnp.array([[1.0, 2.0], [-0.5, 0.7], [0.2, -1.3]])

    def outer(w):
        inner = lambda p, s: (jnp.sum(jnp.tanh(x @ p) ** 2), s)  # noqa: E731
        result = adapt(inner, w, {}, optax.sgd(0.3), steps, remat=remat)
        return jnp.sum(jnp.sin(x @ result.params))

    return jax.grad(outer)(w0)


@pytest.mark.parametrize("remat", [True, "full", "dots", "dots_no_batch", "none"])
def test_remat_policies_keep_gradients(remat):
    np.testing.assert_allclose(_meta_grad(remat), _meta_grad(False), rtol=1e-5, atol=1e-6)


def test_bad_remat_rejected():
    assert remat_policy(False) == (False, None)
    with pytest.raises(ValueError, match="remat"):
        remat_policy("everything")


def _temp_bytes(steps, remat):
    task = Task(
        Split(jax.random.normal(jax.random.key(0), (3, 16, 16, 1)), jnp.arange(3)),
        Split(jax.random.normal(jax.random.key(1), (3, 16, 16, 1)), jnp.arange(3)),
    )
    learner = maml(conv4(3, filters=8), cross_entropy, fixed(optax.sgd(0.1)), inner_steps=steps, remat=remat)
    meta, state = learner.init(jax.random.key(2), task)
    grad = jax.jit(jax.grad(lambda p: learner.task_loss(p, state, task, jax.random.key(0))[0]))
    return grad.lower(meta).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow
def test_remat_growth_at_most_a_third():
    plain = _temp_bytes(10, False) - _temp_bytes(1, False)
    remat = _temp_bytes(10, "full") - _temp_bytes(1, "full")
    assert plain > 0
    assert remat <= plain / 3, (plain, remat)
