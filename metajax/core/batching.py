"""How a per-task function is batched over the leading task axis.

This module is the one place the ``task_batching`` config value is read.
Learners are written for one task; :func:`batch_tasks` turns any per-task
function into one over a batch of tasks.

Strategies:
  ``vmap``: ``jax.vmap`` over tasks. Fastest for small dense models and on
    accelerators.
  ``map``: ``jax.lax.map`` (a sequential loop inside the compiled program).
    Per-task weights stay ordinary weights, which XLA:CPU convolutions need.
  ``chunked:N``: ``lax.map`` over chunks of ``N`` tasks, ``vmap`` inside a chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from metajax.typing import PyTree

STRATEGIES = ("vmap", "map", "chunked:N")


def parse_strategy(strategy: str) -> tuple[str, int]:
    """Validates a ``task_batching`` value; returns ``(kind, chunk_size)``."""
    if strategy in ("vmap", "map"):
        return strategy, 0
    if isinstance(strategy, str) and strategy.startswith("chunked:"):
        size = strategy.split(":", 1)[1]
        if size.isdigit() and int(size) > 0:
            return "chunked", int(size)
    raise ValueError(
        f"task_batching={strategy!r} is not a strategy; use one of 'vmap', 'map' or "
        "'chunked:N' with N a positive int (e.g. --set task_batching=chunked:4)."
    )


def batch_tasks(fn: Callable[..., PyTree], strategy: str = "vmap") -> Callable[..., PyTree]:
    """Maps ``fn(*args)`` over the leading axis of every leaf of ``args``.

    Outputs are stacked along a new leading task axis, whatever the strategy.
    All strategies compute the same values up to float reassociation.

    Example::

      per_task = lambda task, key: learner.task_loss(meta, state, task, key)
      losses, aux = batch_tasks(per_task, "map")(task_batch, keys)
    """
    kind, chunk = parse_strategy(strategy)
    if kind == "vmap":
        return jax.vmap(fn)

    def mapped(*args):
        return jax.lax.map(lambda a: fn(*a), args)

    if kind == "map":
        return mapped

    def chunked(*args):
        n = jax.tree_util.tree_leaves(args)[0].shape[0]
        if n % chunk:
            raise ValueError(
                f"task_batching=chunked:{chunk} needs the task count ({n}) to be a multiple of {chunk}; "
                "change meta_batch_size or the chunk size."
            )
        split = jax.tree_util.tree_map(lambda a: a.reshape(n // chunk, chunk, *a.shape[1:]), args)
        out = jax.lax.map(lambda a: jax.vmap(fn)(*a), split)
        return jax.tree_util.tree_map(lambda a: a.reshape(n, *a.shape[2:]), out)

    return chunked


# Default strategy per (backend, model family), from measurements in
# benchmarks/ (see docs/performance.md). Chosen statically, never by timing at
# run time, and the resolved value is recorded in config.json.
DEFAULT_STRATEGY: dict[tuple[str, str], str] = {
    ("cpu", "dense"): "vmap",
    ("cpu", "conv"): "map",
    ("gpu", "dense"): "vmap",
    ("gpu", "conv"): "vmap",
    ("tpu", "dense"): "vmap",
    ("tpu", "conv"): "vmap",
}

MODEL_FAMILY = {"mlp": "dense"}


def default_strategy(backend: str, model_name: str) -> str:
    """The table's strategy for a backend (``jax.default_backend()``) and a registered model name."""
    family = MODEL_FAMILY.get(model_name, "conv")
    return DEFAULT_STRATEGY.get((backend, family), "vmap")
