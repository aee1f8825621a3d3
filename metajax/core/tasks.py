"""Task pytrees: a task is a support set and a query set.

A batch of tasks is the same pytree with a leading task axis on every leaf;
nothing in metajax needs a separate batch type.

The schema is extended by adding fields, never by a new type:

- ``Split.x`` is the model's input: an array ``(n, *input_shape)`` or any
  pytree of arrays that all lead with ``n`` (e.g. ``{"tokens", "mask"}`` for
  padded sequences), passed to ``model.apply`` as it is.
- ``Split.extra`` holds per-example fields beside inputs and targets, each
  leading with ``n`` (e.g. ``"label"``: global class ids for transfer
  baselines). Learners that do not know a field ignore it.
- ``Task.extra`` holds per-task fields (e.g. an environment's parameters).

Both ``extra`` default to ``{}``, which has no leaves, so tasks without
them flatten, vmap and shard exactly as before.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metajax.typing import Array, PRNGKey, PyTree


class Split(NamedTuple):
    """Examples of one task: ``x`` (inputs) and ``y`` (targets), each leading with ``n`` examples.

    Attributes:
      x: ``(n, *input_shape)``, or a pytree of such arrays.
      y: ``(n, *target_shape)``: integer labels ``(n,)`` or regression targets.
      extra: per-example fields ``{name: (n, ...)}`` beside ``x`` and ``y``.
    """

    x: PyTree
    y: PyTree
    extra: dict[str, Any] = {}  # noqa: RUF012  (never mutated; an empty dict is a leafless pytree)


class Task(NamedTuple):
    """One task: adapt on ``support``, score on ``query``.

    A batch of tasks is a ``Task`` whose leaves have a leading ``(tasks,)`` axis.

    Attributes:
      support, query: :class:`Split`.
      extra: per-task fields ``{name: array}`` (environment parameters, ...).
    """

    support: Split
    query: Split
    extra: dict[str, Any] = {}  # noqa: RUF012


def num_tasks(batch: Task) -> int:
    """Size of the leading task axis of a batch of tasks."""
    return jax.tree_util.tree_leaves(batch)[0].shape[0]


def num_examples(split: Split) -> int:
    """``n``, the number of examples of a split (its inputs may be a pytree)."""
    return jax.tree_util.tree_leaves(split.x)[0].shape[0]


def task_at(batch: Task, index: int) -> Task:
    """The ``index``-th task of a batch (for tests and debugging, not the hot path)."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], batch)


def task_keys(key: PRNGKey, num: int) -> Array:
    """``num`` keys, key ``i`` = ``fold_in(key, i)``: task ``i``'s key depends on ``i`` alone.

    So the first ``m`` keys of ``task_keys(key, n)`` are ``task_keys(key, m)``:
    a meta-batch padded to a multiple of the device count, or split across
    processes, draws the same tasks as the unpadded batch on one device.
    """
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num, dtype=jnp.uint32))
