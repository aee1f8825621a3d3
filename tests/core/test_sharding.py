"""A meta-step sharded over 8 (CPU) devices equals the single-device step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from metajax import fixed, init_meta_state, maml, meta_step, mse, sample_tasks
    from metajax.data.sinusoid import sinusoid
    from metajax.models.mlp import mlp

    assert jax.device_count() == 8, jax.devices()
    source = sinusoid(shots=5)
    learner = maml(mlp(out_features=1, hidden=(16, 16)), mse, fixed(optax.sgd(0.01)), inner_steps=2)
    outer = optax.adam(1e-3)
    state = init_meta_state(learner, outer, jax.random.key(0), source.example)
    tasks = sample_tasks(source, source.init(), jax.random.key(1), 16)
    step = meta_step(learner, outer)

    single = jax.jit(step)(state, tasks, jax.random.key(2))
    mesh = Mesh(np.array(jax.devices()), ("tasks",))
    tasks_sharded = jax.device_put(tasks, NamedSharding(mesh, P("tasks")))
    state_replicated = jax.device_put(state, NamedSharding(mesh, P()))
    sharded = jax.jit(step, out_shardings=NamedSharding(mesh, P()))(state_replicated, tasks_sharded, jax.random.key(2))
    assert len(tasks_sharded.support.x.sharding.device_set) == 8
    for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(sharded), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    print("sharded == single")
    """
)


def test_sharded_meta_step_equals_single_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sharded == single" in out.stdout
