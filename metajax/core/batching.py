"""How a per-task function is batched over the leading task axis.

Learners are written for one task; :func:`batch_tasks` turns any per-task
function into one over a batch of tasks. It reads the loop of the
``task_batching`` config value and nothing else; the runner's builder reads
its ``+patches`` (:func:`conv_impl_for`) and passes it to the model.

A strategy is ``<loop>`` or ``<loop>+patches``. Loops:
  ``vmap``: ``jax.vmap`` over tasks. Fastest for small dense models and on
    accelerators.
  ``map``: ``jax.lax.map`` (a sequential loop inside the compiled program).
  ``chunked:N``: ``lax.map`` over chunks of ``N`` tasks, ``vmap`` inside a
    chunk (a task count that is not a multiple of ``N`` gets one smaller
    vmapped chunk for the rest).

``+patches`` is the convolution implementation for the model, not something
batching does: :func:`metajax.runner.build.resolve_task_batching` sets a
convolutional model's ``conv_impl`` to ``"patches"`` (unless the config names
one), so its convolutions, built from :mod:`metajax.core.conv`, compute as
shifted slices plus a matrix product wherever the model is traced. Vmapped
over tasks with per-task weights, a ``lax.conv`` becomes a grouped
convolution (so does each weight gradient), which XLA:CPU runs far off its
fast path; the patches form becomes a batched ``dot_general`` instead.
Max-pools become a reshape-and-max whose gradient is elementwise
(``reduce_window``'s is a select-and-scatter). :func:`batch_tasks` never
changes how a model computes. Compile time does not grow with the number of
tasks under any strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from metajax.typing import PyTree

STRATEGIES = ("vmap", "map", "chunked:N", "vmap+patches", "map+patches", "chunked:N+patches")


class Strategy(NamedTuple):
    """A parsed ``task_batching`` value.

    Attributes:
      loop: ``"vmap"``, ``"map"`` or ``"chunked"``.
      chunk: tasks per chunk for ``"chunked"``, else 0.
      conv: ``"patches"`` for a ``+patches`` strategy, else ``None``: the
        convolution implementation the builder gives the model
        (:func:`conv_impl_for`); :func:`batch_tasks` ignores it.
    """

    loop: str
    chunk: int
    conv: Optional[str]


def parse(strategy: str) -> Strategy:
    """Validates a ``task_batching`` value.

    Raises:
      ValueError: one line naming the accepted forms.
    """
    if isinstance(strategy, str):
        loop, plus, conv = strategy.partition("+")
        if not plus or conv == "patches":
            conv_choice = conv if plus else None
            if loop in ("vmap", "map"):
                return Strategy(loop, 0, conv_choice)
            if loop.startswith("chunked:"):
                size = loop.split(":", 1)[1]
                if size.isdigit() and int(size) > 0:
                    return Strategy("chunked", int(size), conv_choice)
    raise ValueError(
        f"task_batching={strategy!r} is not a strategy; use 'vmap', 'map' or 'chunked:N' (N a positive int), "
        "optionally with '+patches' (e.g. --set task_batching=chunked:4+patches)."
    )


def parse_strategy(strategy: str) -> tuple[str, int]:
    """Validates a ``task_batching`` value; returns ``(loop, chunk_size)`` (see :func:`parse`)."""
    parsed = parse(strategy)
    return parsed.loop, parsed.chunk


def conv_impl_for(strategy: str) -> str:
    """The model ``conv_impl`` a strategy asks for: ``"patches"`` with ``+patches``, else ``"xla"``.

    Example::

      model = conv4(5, conv_impl=conv_impl_for("map+patches"))  # "patches"
    """
    return parse(strategy).conv or "xla"


def _map(fn: Callable[..., PyTree], args: tuple) -> PyTree:
    return jax.lax.map(lambda a: fn(*a), args)


def _chunked(fn: Callable[..., PyTree], chunk: int, args: tuple) -> PyTree:
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    full = (n // chunk) * chunk
    outs = []
    if full:
        head = jax.tree_util.tree_map(lambda a: a[:full].reshape(full // chunk, chunk, *a.shape[1:]), args)
        out = jax.lax.map(lambda a: jax.vmap(fn)(*a), head)
        outs.append(jax.tree_util.tree_map(lambda a: a.reshape(full, *a.shape[2:]), out))
    if full < n:
        outs.append(jax.vmap(fn)(*jax.tree_util.tree_map(lambda a: a[full:], args)))
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), *outs)


def batch_tasks(
    fn: Callable[..., PyTree], strategy: str = "vmap", *, mesh: Mesh | None = None, axis: str = "tasks"
) -> Callable[..., PyTree]:
    """Maps ``fn(*args)`` over the leading axis of every leaf of ``args``.

    Outputs are stacked along a new leading task axis, whatever the strategy.
    All strategies compute the same values up to float reassociation. Only
    the loop of ``strategy`` matters here: ``+patches`` does not change how
    ``fn`` computes (build the model with ``conv_impl="patches"`` for that).

    Args:
      fn: a per-task function; every leaf of its arguments loses the task axis.
      strategy: a ``task_batching`` value (see the module docstring).
      mesh: optional device mesh. The task axis is split over ``mesh``'s axis
        ``axis`` with ``shard_map``: each device runs the strategy on its own
        tasks (so ``map`` stays a loop per device, not a loop over all tasks
        on every device), and the outputs stay sharded over the task axis.
        Values ``fn`` closes over are replicated. The task count must be a
        multiple of the axis size.

    Returns:
      ``batched(*args)`` over leaves of shape ``(tasks, ...)``.

    Example::

      per_task = lambda task, key: learner.task_loss(meta, state, task, key)
      losses, aux = batch_tasks(per_task, "map")(task_batch, keys)
    """
    parsed = parse(strategy)

    def batched(*args):
        if parsed.loop == "vmap":
            return jax.vmap(fn)(*args)
        if parsed.loop == "map":
            return _map(fn, args)
        return _chunked(fn, parsed.chunk, args)

    if mesh is None or mesh.shape.get(axis, 1) == 1:
        return batched

    def sharded(*args):
        n, devices = jax.tree_util.tree_leaves(args)[0].shape[0], mesh.shape[axis]
        if n % devices:
            raise ValueError(
                f"batch_tasks: {n} tasks do not split over {devices} devices of mesh axis {axis!r}; pad the batch "
                "to a multiple with weight-0 tasks (the runner does this for meta_batch_size)."
            )
        spec = PartitionSpec(axis)
        # check_vma=False: a gradient taken inside fn w.r.t. a value it closes over (the meta-parameters,
        # replicated) stays per task; with vma tracking its transpose would sum it over the devices.
        return jax.shard_map(batched, mesh=mesh, in_specs=(spec,) * len(args), out_specs=spec, check_vma=False)(*args)

    return sharded


# Default strategy per (backend, model family), from measurements in
# benchmarks/ (see docs/performance.md). Chosen statically, never by timing at
# run time, and the resolved value is recorded in config.json.
# Conv4 second-order MAML, meta-batch 32, one process: on 2 CPU cores
# map+patches 3.27 s per step, chunked:4+patches 3.87 s, PyTorch loop 4.84 s
# (map with XLA convs: ~19 s per step at meta-batch 8); on an H200
# vmap+patches 9.3 ms against 19.3 ms for vmap. TPU is unmeasured: vmap.
DEFAULT_STRATEGY: dict[tuple[str, str], str] = {
    ("cpu", "dense"): "vmap",
    ("cpu", "conv"): "map+patches",
    ("gpu", "dense"): "vmap",
    ("gpu", "conv"): "vmap+patches",
    ("tpu", "dense"): "vmap",
    ("tpu", "conv"): "vmap",
}

MODEL_FAMILY = {"mlp": "dense"}


def default_strategy(backend: str, model_name: str) -> str:
    """The table's strategy for a backend (``jax.default_backend()``) and a registered model name."""
    family = MODEL_FAMILY.get(model_name, "conv")
    return DEFAULT_STRATEGY.get((backend, family), "vmap")
