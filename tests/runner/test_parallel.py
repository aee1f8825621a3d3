"""Data parallel over tasks: a step on 8 (CPU) devices equals the single-device step; runs agree across device counts.

Each check runs in a subprocess: ``XLA_FLAGS`` is read once, before JAX starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_with_devices(script: str, devices: int = 8, timeout: int = 600) -> str:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
    }
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


STEP_EQUALS_SINGLE = """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, AxisType
    from metajax import cross_entropy, fixed, init_meta_state, maml, meta_step, mse, reptile, sample_tasks
    from metajax.learners.protonet import protonet
    from metajax.data.episodes import episode_source
    from metajax.data.sinusoid import sinusoid
    from metajax.models.conv4 import conv4_embedding
    from metajax.models.mlp import mlp
    from metajax.runner.build import pad_tasks

    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("tasks",), axis_types=(AxisType.Auto,))
    images = np.random.default_rng(0).random((12, 6, 8, 8, 1), dtype=np.float32)
    episodes = episode_source(images, {"train": range(8), "val": range(8, 10), "test": range(10, 12)}, ways=2, shots=1, queries=2)
    sines = sinusoid(shots=5)
    cases = {
        "maml": (maml(mlp(out_features=1, hidden=(16, 16)), mse, fixed(optax.sgd(0.01)), inner_steps=2), sines, "vmap"),
        "reptile": (reptile(mlp(out_features=1, hidden=(16, 16)), mse, fixed(optax.sgd(0.01)), inner_steps=3), sines, "map"),
        "protonet": (protonet(conv4_embedding(filters=4, conv_impl="patches"), cross_entropy), episodes, "map"),
    }
    for name, (learner, source, strategy) in cases.items():
        outer = optax.adam(1e-2)
        state = init_meta_state(learner, outer, jax.random.key(0), source.example)
        tasks = sample_tasks(source, source.init(), jax.random.key(1), 6)  # 6 tasks: padded to 8, 2 masked
        single = jax.jit(meta_step(learner, outer, task_batching=strategy))(state, tasks, jax.random.key(2))
        weights = (jnp.arange(8) < 6).astype(jnp.float32)
        sharded_step = jax.jit(meta_step(learner, outer, task_batching=strategy, mesh=mesh))
        sharded = sharded_step(state, pad_tasks(tasks, 8), jax.random.key(2), weights)
        for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(sharded), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6, err_msg=name)
        # the padding is really masked: the same padded batch without weights gives another step
        unmasked = sharded_step(state, pad_tasks(tasks, 8), jax.random.key(2))
        assert not all(
            np.allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=0)
            for a, b in zip(jax.tree_util.tree_leaves(single[0]), jax.tree_util.tree_leaves(unmasked[0]))
        ), name
        print(name, "sharded == single")
"""


def test_one_meta_step_on_8_devices_equals_one_device():
    out = run_with_devices(STEP_EQUALS_SINGLE)
    for name in ("maml", "reptile", "protonet"):
        assert f"{name} sharded == single" in out


SHARDED_PARAMS = """
    import jax, numpy as np
    import metajax
    from metajax.runner.build import build, initial_state
    from metajax.runner.parallel import make_mesh, place, replicated, state_shardings
    from metajax.runner.train import prepare_config

    config = metajax.experiment_config("maml-sinusoid")
    config["model"]["hidden"] = [256, 256]
    config["meta_batch_size"] = 8
    config = prepare_config(config)
    mesh = make_mesh(config)
    c = build(config, mesh=mesh)
    state = initial_state(c, jax.random.key(0))
    out = {}
    for mode in ("replicated", "sharded"):
        shardings = state_shardings(state, mesh, mode)
        placed = place(state, shardings)
        per_device = sum(s.data.nbytes for leaf in jax.tree_util.tree_leaves(placed.meta_params)
                         for s in leaf.addressable_shards if s.device == jax.devices()[0])
        step = jax.jit(c.train_step, in_shardings=(shardings, replicated(mesh), replicated(mesh)),
                       out_shardings=(shardings, replicated(mesh)))
        new, metrics = step(placed, place(c.source.init(), replicated(mesh)), jax.random.key(1))
        out[mode] = (per_device, jax.device_get(new), jax.device_get(metrics))
    ratio = out["replicated"][0] / out["sharded"][0]
    for a, b in zip(jax.tree_util.tree_leaves(out["replicated"][1:]), jax.tree_util.tree_leaves(out["sharded"][1:])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    print("ratio", ratio)
"""


def test_sharded_params_divide_the_bytes_and_keep_the_step():
    out = run_with_devices(SHARDED_PARAMS)
    ratio = float(out.split("ratio")[1])
    assert 6.0 < ratio <= 8.0, out


def _cli_run(tmp_path: Path, devices: int, steps: int, *extra: str) -> dict:
    out_dir = tmp_path / f"d{devices}"
    script = f"""
    import sys
    from metajax.cli import main
    sys.exit(main(["run", "maml-sinusoid", "--steps", "{steps}", "--out", "{out_dir}", "--no-progress",
                   "--set", "eval.every={steps}", "--set", "eval.tasks=50", "--set", "eval.test_tasks=100",
                   *{list(extra)!r}]))
    """
    run_with_devices(script, devices)
    results = json.loads((out_dir / "results.json").read_text())
    record = json.loads((out_dir / "run.json").read_text())
    assert record["mesh"]["devices"] == devices and record["mesh"]["axes"] == {"tasks": devices}
    return results


@pytest.mark.slow
def test_a_200_step_run_gives_the_same_results_on_1_2_and_8_devices(tmp_path):
    """meta-batch 25: padded to 26 on 2 devices and to 32 on 8, the padding masked."""
    runs = {n: _cli_run(tmp_path, n, 200) for n in (1, 2, 8)}
    base = runs[1]["by_inner_step"]["loss"]["mean"]
    for n in (2, 8):
        assert runs[n]["by_inner_step"]["loss"]["mean"] == pytest.approx(base, rel=1e-4), n
