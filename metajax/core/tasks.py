"""Task pytrees: a task is a support set and a query set.

A batch of tasks is the same pytree with a leading task axis on every leaf;
nothing in metajax needs a separate batch type.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from metajax.typing import Array


class Split(NamedTuple):
    """Examples of one task: ``x`` has shape ``(n, *input_shape)``, ``y`` ``(n, *target_shape)``."""

    x: Array
    y: Array


class Task(NamedTuple):
    """One task: adapt on ``support``, score on ``query``.

    A batch of tasks is a ``Task`` whose leaves have a leading ``(tasks,)`` axis.
    """

    support: Split
    query: Split


def num_tasks(batch: Task) -> int:
    """Size of the leading task axis of a batch of tasks."""
    return jax.tree_util.tree_leaves(batch)[0].shape[0]


def task_at(batch: Task, index: int) -> Task:
    """The ``index``-th task of a batch (for tests and debugging, not the hot path)."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], batch)
