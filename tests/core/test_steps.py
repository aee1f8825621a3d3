"""multi_step equals repeated steps; jit_step donates; bf16 compute stays finite with f32 params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.core.losses import cross_entropy
from metajax.core.meta import init_meta_state, meta_step
from metajax.core.optim import fixed
from metajax.core.steps import compile_timed, jit_step, multi_step
from metajax.core.tasks import Split, Task
from metajax.learners.maml import maml
from metajax.models.conv4 import conv4


def _toy_step(state, key):
    new = state * 0.9 + jax.random.normal(key, ())
    return new, {"value": new}


def test_multi_step_equals_repeated_steps():
    key = jax.random.key(0)
    state, metrics = jax.jit(multi_step(_toy_step, 3))(jnp.float32(1.0), key)
    expected = jnp.float32(1.0)
    for i, k in enumerate(jax.random.split(key, 3)):
        expected, m = _toy_step(expected, k)
        np.testing.assert_allclose(metrics["value"][i], m["value"], rtol=1e-6)
    np.testing.assert_allclose(state, expected, rtol=1e-6)


def test_jit_step_donates_and_reports_compile_time():
    compiled, seconds = compile_timed(jit_step(multi_step(_toy_step, 2)), jnp.ones(()), jax.random.key(0))
    assert seconds > 0
    state = jnp.ones(())
    compiled(state, jax.random.key(0))
    assert state.is_deleted()


def test_bfloat16_compute_is_finite_with_float32_params():
    tasks = Task(
        Split(jax.random.normal(jax.random.key(0), (2, 3, 16, 16, 1)), jnp.tile(jnp.arange(3), (2, 1))),
        Split(jax.random.normal(jax.random.key(1), (2, 3, 16, 16, 1)), jnp.tile(jnp.arange(3), (2, 1))),
    )
    # patches: the model the builder makes for vmap+patches
    learner = maml(conv4(3, filters=4, conv_impl="patches", dtype="bfloat16"), cross_entropy, fixed(optax.sgd(0.4)))
    opt = optax.adam(1e-3)
    state = init_meta_state(learner, opt, jax.random.key(2), jax.tree_util.tree_map(lambda a: a[0], tasks))
    new, metrics = jax.jit(meta_step(learner, opt, task_batching="vmap+patches"))(state, tasks, jax.random.key(3))
    for leaf in jax.tree_util.tree_leaves(new.meta_params):
        assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf)))
    assert bool(jnp.isfinite(metrics["loss"])) and bool(jnp.isfinite(metrics["grad_norm"]))
    assert float(metrics["grad_norm"]) > 0


def test_hoisted_jit_matches_jit_and_keeps_closed_over_data_out_of_the_program():
    import numpy as np

    from metajax.core.steps import HoistedJit

    data = jnp.asarray(np.arange(64 * 1024, dtype=np.float32).reshape(64, 1024))  # 256 KB closed over

    def f(state, key):
        row = data[jax.random.randint(key, (), 0, 64)]
        return state + row.sum(), {"first": row[0]}

    hoisted = HoistedJit(f, donate_argnums=(0,))
    key = jax.random.key(3)
    expected = jax.jit(f)(jnp.ones(()), key)
    assert hoisted(jnp.ones(()), key) == expected
    assert hoisted.compile(jnp.ones(()), key)(jnp.ones(()), key) == expected
    jitted, consts = hoisted._prepared((jnp.ones(()), key))
    assert any(getattr(c, "shape", None) == (64, 1024) for c in consts)
    assert len(jitted.lower(consts, jnp.ones(()), key).as_text()) < 50_000  # plain jit inlines the 256 KB
