"""The outer step: per-task meta-gradients batched over tasks, mean, optax update."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from metajax.core.batching import batch_tasks
from metajax.core.learner import Learner
from metajax.core.tasks import Task, num_tasks, task_keys
from metajax.typing import Array, MetaParams, Metrics, ModelState, PRNGKey


class MetaState(NamedTuple):
    """Everything the outer loop carries from one meta-step to the next."""

    step: Array  # int32 scalar
    meta_params: MetaParams
    model_state: ModelState
    opt_state: optax.OptState


def init_meta_state(
    learner: Learner, outer_opt: optax.GradientTransformation, key: PRNGKey, example: Task
) -> MetaState:
    """Initialises meta-parameters, model state and the outer optimizer.

    Args:
      example: one task, without a task axis; only its shapes matter.
    """
    meta_params, model_state = learner.init(key, example)
    return MetaState(jnp.zeros((), jnp.int32), meta_params, model_state, outer_opt.init(meta_params))


def task_gradient(learner: Learner) -> Callable[..., tuple[MetaParams, tuple[ModelState, Metrics]]]:
    """The meta-gradient of one task: ``learner.meta_gradient`` or ``grad`` of ``task_loss``."""
    if learner.meta_gradient is not None:
        return learner.meta_gradient

    def grad(meta_params, model_state, task, key):
        (loss, (model_state, metrics)), grads = jax.value_and_grad(learner.task_loss, has_aux=True)(
            meta_params, model_state, task, key
        )
        return grads, (model_state, {"loss": loss, **metrics})

    return grad


def mean_over_tasks(tree, weights: Array | None = None):
    """Mean over the leading task axis of every leaf (integer leaves are averaged as floats).

    Args:
      weights: optional ``(tasks,)`` weights, e.g. 1 for real tasks and 0 for
        the padding of a meta-batch that does not divide the device count; the
        result is ``sum(w * leaf) / sum(w)``.
    """
    if weights is None:
        return jax.tree_util.tree_map(lambda leaf: jnp.mean(leaf, axis=0), tree)
    w = weights / jnp.sum(weights)

    def weighted(leaf):
        leaf = (
            leaf.astype(jnp.result_type(leaf.dtype, jnp.float32))
            if not jnp.issubdtype(leaf.dtype, jnp.inexact)
            else leaf
        )
        return jnp.tensordot(w.astype(leaf.dtype), leaf, axes=1)

    return jax.tree_util.tree_map(weighted, tree)


def meta_step(
    learner: Learner,
    outer_opt: optax.GradientTransformation,
    *,
    task_batching: str = "vmap",
    mesh: Mesh | None = None,
    task_axis: str = "tasks",
) -> Callable[..., tuple[MetaState, Metrics]]:
    """Builds the pure outer step ``(state, task_batch, key, weights=None) -> (state, metrics)``.

    The step is the mean over tasks of each task's meta-gradient (equal to
    the gradient of the mean loss), followed by ``outer_opt``. Model state
    (e.g. running batch-norm statistics) is averaged over tasks. Task ``i``
    gets the key ``task_keys(key, n)[i]``, which depends on ``i`` alone.

    ``weights`` (``(tasks,)``, optional) weigh each task in the means: a
    meta-batch padded with masked tasks (weight 0) steps exactly as the
    unpadded one, to float reassociation.

    With a ``mesh``, the task axis is split over the mesh axis ``task_axis``
    (data parallel over tasks, :func:`batch_tasks`); the task count must be
    a multiple of that axis's size (pad with weight-0 tasks). Without one
    the step holds no device assumptions.

    Example::

      step = jax.jit(meta_step(learner, optax.adam(1e-3)))
      state, metrics = step(state, task_batch, key)
    """
    per_task = task_gradient(learner)

    def step(state: MetaState, tasks: Task, key: PRNGKey, weights: Array | None = None) -> tuple[MetaState, Metrics]:
        keys = task_keys(key, num_tasks(tasks))
        grads, (model_state, metrics) = batch_tasks(
            lambda task, k: per_task(state.meta_params, state.model_state, task, k),
            task_batching,
            mesh=mesh,
            axis=task_axis,
        )(tasks, keys)
        grads = mean_over_tasks(grads, weights)
        model_state = mean_over_tasks(model_state, weights)
        updates, opt_state = outer_opt.update(grads, state.opt_state, state.meta_params)
        meta_params = optax.apply_updates(state.meta_params, updates)
        metrics = {**mean_over_tasks(metrics, weights), "grad_norm": optax.tree.norm(grads)}
        return MetaState(state.step + 1, meta_params, model_state, opt_state), metrics

    return step


__all__ = ["MetaState", "init_meta_state", "mean_over_tasks", "meta_step", "task_gradient"]
