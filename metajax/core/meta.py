"""The outer step: per-task meta-gradients batched over tasks, mean, optax update."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metajax.core.batching import batch_tasks
from metajax.core.learner import Learner
from metajax.core.tasks import Task, num_tasks
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


def mean_over_tasks(tree):
    """Mean over the leading task axis of every leaf (integer leaves are averaged as floats)."""
    return jax.tree_util.tree_map(lambda leaf: jnp.mean(leaf, axis=0), tree)


def meta_step(
    learner: Learner, outer_opt: optax.GradientTransformation, *, task_batching: str = "vmap"
) -> Callable[[MetaState, Task, PRNGKey], tuple[MetaState, Metrics]]:
    """Builds the pure outer step ``(state, task_batch, key) -> (state, metrics)``.

    The step is the mean over tasks of each task's meta-gradient (equal to
    the gradient of the mean loss), followed by ``outer_opt``. Model state
    (e.g. running batch-norm statistics) is averaged over tasks. It holds no
    device assumptions: jit it, or shard it with in/out shardings.

    Example::

      step = jax.jit(meta_step(learner, optax.adam(1e-3)))
      state, metrics = step(state, task_batch, key)
    """
    per_task = task_gradient(learner)

    def step(state: MetaState, tasks: Task, key: PRNGKey) -> tuple[MetaState, Metrics]:
        keys = jax.random.split(key, num_tasks(tasks))
        grads, (model_state, metrics) = batch_tasks(
            lambda task, k: per_task(state.meta_params, state.model_state, task, k), task_batching
        )(tasks, keys)
        grads = mean_over_tasks(grads)
        model_state = mean_over_tasks(model_state)
        updates, opt_state = outer_opt.update(grads, state.opt_state, state.meta_params)
        meta_params = optax.apply_updates(state.meta_params, updates)
        metrics = {**mean_over_tasks(metrics), "grad_norm": optax.tree.norm(grads)}
        return MetaState(state.step + 1, meta_params, model_state, opt_state), metrics

    return step


__all__ = ["MetaState", "init_meta_state", "mean_over_tasks", "meta_step", "task_gradient"]
