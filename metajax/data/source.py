"""Task sources: produce tasks from PRNG keys, on device, inside ``jit``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from metajax.core.tasks import Task
from metajax.typing import PRNGKey

SPLITS = ("train", "val", "test")


class TaskSource(NamedTuple):
    """A family of tasks.

    Attributes:
      sample: ``sample(key, split) -> Task``, one task with no task axis;
        ``split`` is one of ``"train"``, ``"val"``, ``"test"`` (static).
      example: one task with the right shapes and dtypes, for model init and
        shape checks before compilation.
      output_dim: model output size (1 for sinusoids, N for N-way).
      loss: ``"mse"`` or ``"cross_entropy"``.
      info: JSON-able facts recorded with the run (class splits, checksums).
    """

    sample: Callable[[PRNGKey, str], Task]
    example: Task
    output_dim: int
    loss: str
    info: dict[str, Any]


def sample_tasks(source: TaskSource, key: PRNGKey, num: int, split: str = "train") -> Task:
    """A batch of ``num`` tasks with a leading task axis; jittable."""
    return jax.vmap(lambda k: source.sample(k, split))(jax.random.split(key, num))
