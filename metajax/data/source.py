"""Task sources: ``init() -> data`` and a pure ``sample(data, key, split) -> Task``, or batches from the host.

The data (a pytree of arrays: class-indexed images, or nothing) is an
*argument* of the compiled step, never a closed-over constant: the runner
calls ``init()`` once, places the arrays on its devices (replicated or
sharded) and passes them to every step, so they can be given a sharding,
donated, or swapped without recompiling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import jax

from metajax.core.tasks import Task, task_keys
from metajax.typing import PRNGKey, PyTree

SPLITS = ("train", "val", "test")


class TaskSource(NamedTuple):
    """A family of tasks.

    A source samples on device (``sample``), fused into the compiled step,
    or, for data too large for the device, on the host (``host_sample``, with
    ``sample=None``), each batch passed to the compiled step as an argument
    where an on-device source's step takes ``data``.

    Attributes:
      sample: ``sample(data, key, split) -> Task``, one task with no task
        axis, a pure function of ``data = init()``, the key and ``split``
        (one of ``"train"``, ``"val"``, ``"test"``; static); ``None`` for a
        host-sampled source.
      example: one task with the right shapes and dtypes, for model init and
        shape checks before compilation.
      output_dim: model output size (1 for sinusoids, N for N-way).
      loss: ``"mse"`` or ``"cross_entropy"``.
      info: JSON-able facts recorded with the run (class splits, checksums).
      host_sample: ``host_sample(seed, split, num) -> Task`` of numpy arrays
        with a leading task axis of ``num``, a pure function of the int tuple
        ``seed``; ``None`` for an on-device source.
      train_example: the train split's task where its shapes differ from
        ``example`` (e.g. ProtoNets' 30-way training episodes for 5-way
        tests); ``None`` when all splits share ``example``.
      train_augment: ``(key, task) -> task``, jittable, applied by the runner
        to every training task on device after sampling (image augmentation,
        :mod:`metajax.data.augment`); ``None`` for none.
      init: ``init() -> data``, the pytree of arrays ``sample`` reads (host
        numpy arrays; ``{}`` for a source without data, such as sinusoids).
        The caller places it on devices; ``sample`` accepts it on host or
        device, and inside ``jit`` as an argument.
    """

    sample: Optional[Callable[[PyTree, PRNGKey, str], Task]]
    example: Task
    output_dim: int
    loss: str
    info: dict[str, Any]
    host_sample: Optional[Callable[[Sequence[int], str, int], Task]] = None
    train_example: Optional[Task] = None
    train_augment: Optional[Callable[[PRNGKey, Task], Task]] = None
    init: Callable[[], PyTree] = dict

    def example_for(self, split: str) -> Task:
        """The task shapes of ``split``: ``train_example`` for training where set, else ``example``."""
        return self.train_example if split == "train" and self.train_example is not None else self.example

    @property
    def on_host(self) -> bool:
        """Whether tasks are sampled on the host and passed to the compiled step."""
        return self.sample is None


def sample_tasks(source: TaskSource, data: PyTree, key: PRNGKey, num: int, split: str = "train") -> Task:
    """A batch of ``num`` tasks with a leading task axis; jittable (on-device sources only).

    Task ``i`` is drawn with ``task_keys(key, num)[i]``, which depends on ``i``
    alone, so the first ``m`` tasks of a larger batch are the batch of ``m``.

    Example::

      data = source.init()
      tasks = jax.jit(sample_tasks, static_argnums=(0, 3, 4))(source, data, key, 25, "train")
    """
    if source.sample is None:
        raise ValueError("sample_tasks: this source samples on the host; call source.host_sample(seed, split, num).")
    return jax.vmap(lambda k: source.sample(data, k, split))(task_keys(key, num))
