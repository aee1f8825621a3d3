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


def _toy_step(state, data, key):
    new = state * 0.9 + jax.random.normal(key, ()) + data["shift"]
    return new, {"value": new}


DATA = {"shift": jnp.float32(0.5)}


def test_multi_step_equals_repeated_steps():
    key = jax.random.key(0)
    state, metrics = jax.jit(multi_step(_toy_step, 3))(jnp.float32(1.0), DATA, key)
    expected = jnp.float32(1.0)
    for i, k in enumerate(jax.random.split(key, 3)):
        expected, m = _toy_step(expected, DATA, k)
        np.testing.assert_allclose(metrics["value"][i], m["value"], rtol=1e-6)
    np.testing.assert_allclose(state, expected, rtol=1e-6)


def test_jit_step_donates_and_reports_compile_time():
    compiled, seconds = compile_timed(jit_step(multi_step(_toy_step, 2)), jnp.ones(()), DATA, jax.random.key(0))
    assert seconds > 0
    state = jnp.ones(())
    compiled(state, DATA, jax.random.key(0))
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


def test_task_data_is_an_argument_not_a_compiled_in_constant():
    """The source's arrays reach the step as an argument: the program holds none of their values."""
    from metajax.data.episodes import episode_source
    from metajax.data.source import sample_tasks

    images = np.random.default_rng(0).integers(0, 255, (12, 20, 28, 28, 1), dtype=np.uint8)  # 188 KB
    source = episode_source(images, {"train": range(8), "val": range(8, 10), "test": range(10, 12)}, ways=2)
    data = source.init()
    draw = jax.jit(lambda d, k: sample_tasks(source, d, k, 4, "train"))
    text = draw.lower(data, jax.random.key(0)).as_text()
    assert len(text) < 50_000, len(text)  # a closed-over array would be printed into the program
    closed = jax.jit(lambda k: sample_tasks(source, data, k, 4, "train")).lower(jax.random.key(0)).as_text()
    assert len(closed) > len(images.tobytes())  # the check above can fail: closing over bakes the bytes in
    np.testing.assert_array_equal(
        draw(data, jax.random.key(1)).support.x, sample_tasks(source, data, jax.random.key(1), 4).support.x
    )
