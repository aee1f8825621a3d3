"""Task sources: produce tasks from PRNG keys on device inside ``jit``, or from seeds on the host."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional

import jax

from metajax.core.tasks import Task
from metajax.typing import PRNGKey

SPLITS = ("train", "val", "test")


class TaskSource(NamedTuple):
    """A family of tasks.

    A source samples on device (``sample``), fused into the compiled step,
    or, for data too large for the device, on the host (``host_sample``, with
    ``sample=None``), each batch passed to the compiled step as an argument.

    Attributes:
      sample: ``sample(key, split) -> Task``, one task with no task axis;
        ``split`` is one of ``"train"``, ``"val"``, ``"test"`` (static);
        ``None`` for a host-sampled source.
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
    """

    sample: Optional[Callable[[PRNGKey, str], Task]]
    example: Task
    output_dim: int
    loss: str
    info: dict[str, Any]
    host_sample: Optional[Callable[[Sequence[int], str, int], Task]] = None
    train_example: Optional[Task] = None
    train_augment: Optional[Callable[[PRNGKey, Task], Task]] = None

    def example_for(self, split: str) -> Task:
        """The task shapes of ``split``: ``train_example`` for training where set, else ``example``."""
        return self.train_example if split == "train" and self.train_example is not None else self.example

    @property
    def on_host(self) -> bool:
        """Whether tasks are sampled on the host and passed to the compiled step."""
        return self.sample is None


def sample_tasks(source: TaskSource, key: PRNGKey, num: int, split: str = "train") -> Task:
    """A batch of ``num`` tasks with a leading task axis; jittable (on-device sources only)."""
    if source.sample is None:
        raise ValueError("sample_tasks: this source samples on the host; call source.host_sample(seed, split, num).")
    return jax.vmap(lambda k: source.sample(k, split))(jax.random.split(key, num))
