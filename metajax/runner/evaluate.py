"""Evaluation on held-out tasks: per-inner-step query metrics with 95% confidence intervals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from metajax.core.batching import batch_tasks
from metajax.core.learner import Learner
from metajax.core.meta import MetaState
from metajax.core.tasks import Task, task_keys
from metajax.data.source import TaskSource
from metajax.runner.build import TASK_AXIS, padded_size
from metajax.typing import PRNGKey, PyTree


def ci95(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Half-width of the normal-approximation 95% confidence interval of the mean."""
    n = values.shape[axis]
    if n < 2:
        return np.zeros_like(np.mean(values, axis=axis))
    with np.errstate(invalid="ignore", over="ignore"):  # a diverged task's inf/NaN makes the interval NaN, knowingly
        return 1.96 * np.std(values, axis=axis, ddof=1) / np.sqrt(n)


def summarize(per_task: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{metric: {"mean": [...], "ci95": [...], "median": [...]}}`` over the task axis (axis 0).

    The median is there because a few diverging tasks can dominate a mean (:func:`divergence`).
    """
    return {
        name: {
            "mean": np.mean(v, axis=0).tolist(),
            "ci95": ci95(np.asarray(v, np.float64)).tolist(),
            "median": np.median(v, axis=0).tolist(),
        }
        for name, v in per_task.items()
    }


# A task's inner loop diverged if its query loss at some inner step is non-finite
# or this many times its loss before adaptation.
DIVERGENCE_FACTOR = 10.0


def divergence(per_task: dict[str, np.ndarray]) -> dict[str, Any]:
    """Which tasks' inner loops diverged: a non-finite query loss, or one ``DIVERGENCE_FACTOR`` x its start.

    Args:
      per_task: ``{metric: (tasks, steps + 1)}`` from :func:`evaluate`.

    Returns:
      ``{"diverged_tasks": count, "diverged_task_ids": [first 20 task indices]}``.
    """
    loss = np.asarray(per_task["loss"], np.float64)
    start = loss[:, :1]
    with np.errstate(invalid="ignore"):
        bad = ~np.all(np.isfinite(loss), axis=1) | np.any(loss > DIVERGENCE_FACTOR * np.maximum(start, 1e-12), axis=1)
    ids = np.flatnonzero(bad)
    return {"diverged_tasks": int(ids.size), "diverged_task_ids": ids[:20].tolist()}


def make_evaluator(
    learner: Learner, source: TaskSource, *, split: str, steps: int, task_batching: str, mesh: Mesh | None = None
) -> Callable[..., dict[str, jax.Array]]:
    """A jitted evaluation of a batch of tasks: ``evaluator(state, data, keys) -> {metric: (batch, steps + 1)}``.

    ``data`` is the source's data (``source.init()``'s arrays) for an
    on-device source, which samples task ``j`` from ``keys[j]`` inside the
    call, and the batch of tasks itself for a host-sampled one (the same key
    split, so a task's evaluation key does not depend on where it was
    sampled). With a ``mesh`` the batch is split over its ``"tasks"`` axis;
    the batch size must then be a multiple of that axis's size.
    """

    def one(meta_params, model_state, key, data, task=None):
        k_task, k_eval = jax.random.split(key)
        task = source.sample(data, k_task, split) if task is None else task
        return learner.evaluate(meta_params, model_state, task, k_eval, steps)

    def run(state: MetaState, data: PyTree, keys: jax.Array):
        if source.on_host:
            per_task = lambda k, t: one(state.meta_params, state.model_state, k, None, t)  # noqa: E731
            return batch_tasks(per_task, task_batching, mesh=mesh, axis=TASK_AXIS)(keys, data)
        per_task = lambda k: one(state.meta_params, state.model_state, k, data)  # noqa: E731
        return batch_tasks(per_task, task_batching, mesh=mesh, axis=TASK_AXIS)(keys)

    return jax.jit(run)


def eval_batch_size(config: dict, num_tasks: int, mesh: Mesh | None = None) -> int:
    """Tasks per evaluation call: ``eval.batch_size`` (at most ``num_tasks``), rounded up to the task devices."""
    return padded_size(min(config["eval"]["batch_size"], max(num_tasks, 1)), mesh)


def evaluate(
    evaluator: Callable,
    state: MetaState,
    data: PyTree,
    key: PRNGKey,
    num_tasks: int,
    batch: int,
    tasks: Callable[[int], Task] | None = None,
) -> dict[str, np.ndarray]:
    """Runs ``evaluator`` on ``num_tasks`` tasks drawn from ``key`` in chunks of ``batch`` (one compile).

    Task ``j`` is drawn from ``task_keys(key, num_tasks)[j]`` whatever the chunk size or device count;
    the last chunk is filled with extra tasks whose results are dropped.

    Args:
      data: the source's placed data (on-device sources; ignored for host-sampled ones).
      batch: tasks per call (:func:`eval_batch_size`).
      tasks: for a host-sampled source, ``tasks(i)`` is chunk ``i``'s batch of ``batch`` tasks
        (see :func:`eval_tasks`).

    Returns per-task metrics ``{metric: (num_tasks, steps + 1)}`` as numpy arrays.
    """
    total = -(-num_tasks // batch) * batch
    keys = task_keys(key, total)
    chunks = []
    for n, i in enumerate(range(0, total, batch)):
        arg = data if tasks is None else jax.device_put(tasks(n))
        chunks.append(jax.device_get(evaluator(state, arg, keys[i : i + batch])))
    return {name: np.concatenate([c[name] for c in chunks])[:num_tasks] for name in chunks[0]}


def run_keys(seed: int) -> tuple[PRNGKey, PRNGKey, PRNGKey]:
    """``(init, train, eval)`` keys of a run: one split of the seed's key, each for one purpose.

    Step ``s`` trains with ``fold_in(train, s)``; the evaluation key splits into validation
    and test keys (:func:`split_keys`).
    """
    k_init, k_train, k_eval = jax.random.split(jax.random.key(seed), 3)
    return k_init, k_train, k_eval


def split_keys(seed: int) -> dict[str, PRNGKey]:
    """``{"val", "test", "train"}`` keys: the run's evaluation key split once, one key per split.

    Validation and test tasks are drawn from the first two; the third draws
    train-split tasks for inspection (``metajax episodes export --split train``).
    """
    k_val, k_test, k_train = jax.random.split(run_keys(seed)[2], 3)
    return {"val": k_val, "test": k_test, "train": k_train}


# Streams of a host-sampled source. Training's step s draws host_sample((seed, 0, s), "train", meta_batch);
# evaluation task j of a split draws host_sample((seed, stream, j), split, 1), whatever the chunk size.
STREAMS = {"train": 0, "val": 1, "test": 2}


def host_tasks(source: TaskSource, seed: int, split: str, num: int) -> Callable[[int], Task]:
    """``s -> batch s`` of ``num`` tasks of a host-sampled source's ``split`` stream: a pure function of ``s``.

    Training's step ``s`` draws batch ``s`` of the train stream, so a resumed run draws what an
    uninterrupted one would.
    """
    return lambda index: source.host_sample((int(seed), STREAMS[split], int(index)), split, num)


def host_eval_tasks(source: TaskSource, seed: int, split: str, indices: range) -> Task:
    """Evaluation tasks ``indices`` of ``split`` stacked on a task axis; task ``j`` depends on ``j`` alone."""
    draw = host_tasks(source, seed, split, 1)
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *(draw(j) for j in indices))


def eval_tasks(source: TaskSource, config: dict, split: str, batch: int) -> Callable[[int], Task] | None:
    """The chunks of ``batch`` tasks :func:`evaluate` draws evaluation tasks in; ``None`` for an on-device source."""
    if not source.on_host:
        return None
    return lambda n: host_eval_tasks(source, config["seed"], split, range(n * batch, (n + 1) * batch))


def test_steps(config: dict, learner: Learner) -> int:
    """Inner steps at test time: the config's ``eval.inner_steps``, never fewer than training's."""
    configured = config["eval"]["inner_steps"]
    return max(learner.inner_steps, configured if configured is not None else learner.inner_steps)


def test_results(
    learner: Learner,
    source: TaskSource,
    state: MetaState,
    config: dict,
    *,
    steps: int,
    tasks: int,
    data: PyTree = None,
    evaluator: Callable | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """Evaluates ``state`` on the run's test tasks; pre- and post-adaptation figures named as such.

    Args:
      data: the source's data as placed for ``evaluator`` (``source.init()`` if ``None``).
      evaluator: a test-split :func:`make_evaluator` for ``steps`` to reuse; one is made if absent.
      mesh: the devices ``evaluator`` splits tasks over (it sets the chunk size).
    """
    tester = evaluator or make_evaluator(
        learner, source, split="test", steps=steps, task_batching=config["task_batching"], mesh=mesh
    )
    if data is None and not source.on_host:
        data = source.init()
    key = split_keys(config["seed"])["test"]
    batch = eval_batch_size(config, tasks, mesh)
    per_task = evaluate(tester, state, data, key, tasks, batch, eval_tasks(source, config, "test", batch))
    test = summarize(per_task)
    post = min(learner.inner_steps, steps)
    return {
        **(divergence(per_task) if "loss" in per_task else {}),
        "experiment": config.get("experiment"),
        "step": int(state.step),
        "test_tasks": tasks,
        "inner_steps": {"train": learner.inner_steps, "test": steps},
        "pre_adaptation": {n: {"mean": s["mean"][0], "ci95": s["ci95"][0]} for n, s in test.items()},
        "post_adaptation": {n: {"mean": s["mean"][post], "ci95": s["ci95"][post]} for n, s in test.items()},
        "by_inner_step": test,
    }
