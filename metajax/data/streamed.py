"""N-way K-shot episodes sampled on the host, for class-indexed data too large for the device.

The on-device path (:mod:`metajax.data.episodes`) keeps a dense
``(classes, per_class, h, w, c)`` array on the accelerator, so every class is
trimmed to the smallest class's count. Here the images stay in host memory
as one array per class of any size (all of tieredImageNet's 779,165 images),
and each meta-step's batch of episodes is gathered with numpy and handed to
the compiled step as an argument. The batch has the on-device sampler's
pytree (``Task`` with a leading task axis, ``x`` ``float32`` in [0, 1],
``y`` ``int32``) and follows the same rules: ``ways`` distinct classes, no
image in both support and query, labels ``0..ways-1`` in a random order,
rows grouped by class, the same three augmentations.

A batch is a pure function of its seed: ``host_sample(seed, split, num)``
with ``seed`` a tuple of ints (the runner passes ``(run seed, stream,
step)``), so a resumed run draws the very batches an uninterrupted one
would, and prefetching in a thread cannot change what is drawn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.tasks import Split, Task
from metajax.data.episodes import (
    TrainShape,
    available_classes,
    checked_splits,
    episode_shapes,
    episode_task_source,
    shape_record,
)
from metajax.data.source import SPLITS, TaskSource
from metajax.errors import DataError

PLACEMENTS = ("device", "host")


def check_placement(placement: str, name: str) -> None:
    """One-line :class:`DataError` for a ``data.placement`` other than ``"device"`` or ``"host"``."""
    if placement not in PLACEMENTS:
        raise DataError(
            f"{name}: unknown placement {placement!r}; set data.placement to 'device' (data on the accelerator) "
            "or 'host' (data in host memory, batches gathered each step)."
        )


@functools.cache
def _to_unit_rule() -> Callable[[np.ndarray], np.ndarray]:
    """``uint8 -> float32 / 255`` giving bit for bit what the default backend's sampler gives.

    XLA:CPU divides by multiplying with the reciprocal, which differs from
    numpy's division in the last bit for half the values. The backend
    converts all 256 values once; the fastest numpy rule that reproduces
    them is used (multiplication 5x faster than a table lookup), else the
    lookup itself.
    """
    table = np.asarray(jax.jit(lambda u: u.astype(jnp.float32) / 255.0)(np.arange(256, dtype=np.uint8)))
    values = np.arange(256, dtype=np.float32)
    if np.array_equal(table, values * np.float32(1 / 255)):
        return lambda x: x.astype(np.float32) * np.float32(1 / 255)
    if np.array_equal(table, values / np.float32(255)):
        return lambda x: x.astype(np.float32) / np.float32(255)
    return lambda x: table[x]


def _to_unit(x: np.ndarray) -> np.ndarray:
    return _to_unit_rule()(x)


def sample_host_episode(
    rng: np.random.Generator,
    classes: Sequence[np.ndarray],
    class_ids: np.ndarray,
    ways: int,
    shots: int,
    queries: int,
    augment: str = "none",
) -> Task:
    """One episode gathered on the host (no task axis), as :func:`metajax.data.episodes.sample_episode` draws it.

    Args:
      rng: numpy generator; the only source of randomness.
      classes: per class, its images ``(count, h, w, c)``, ``uint8`` in [0, 255] or ``float32`` in [0, 1].
      class_ids: the split's indices into ``classes``.
      ways, shots, queries: N, K, Q (every class of the split must hold ``shots + queries`` images).
      augment: ``"none"``, ``"rotate_classes"`` or ``"rotate_tasks"``.
    """
    chosen = rng.choice(available_classes(len(class_ids), augment), ways, replace=False)
    if augment == "rotate_classes":
        picked, rotations = class_ids[chosen // 4], chosen % 4
    else:
        picked = class_ids[chosen]
        rotations = rng.integers(0, 4, ways) if augment == "rotate_tasks" else None
    x = np.stack([classes[c][rng.choice(len(classes[c]), shots + queries, replace=False)] for c in picked])
    x = _to_unit(x) if x.dtype == np.uint8 else x.astype(np.float32)
    if rotations is not None:
        x = np.stack([np.rot90(images, int(k), axes=(-3, -2)) for images, k in zip(x, rotations, strict=True)])
    labels = rng.permutation(ways).astype(np.int32)
    shape = x.shape[2:]
    support = Split(np.ascontiguousarray(x[:, :shots]).reshape(ways * shots, *shape), np.repeat(labels, shots))
    query = Split(np.ascontiguousarray(x[:, shots:]).reshape(ways * queries, *shape), np.repeat(labels, queries))
    return Task(support, query)


def host_episode_source(
    classes: Sequence[np.ndarray],
    splits: Mapping[str, Sequence[int] | np.ndarray],
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    augment: str = "none",
    *,
    class_names: Sequence[str] | None = None,
    name: str = "episodes",
    info: Mapping[str, Any] | None = None,
    train: TrainShape | None = None,
    image_augment: Sequence[str] | None = None,
) -> TaskSource:
    """A host-sampled :class:`TaskSource` (``sample=None``, ``host_sample`` set) over classes of any size.

    Args:
      classes: per class, ``(count, h, w, c)`` images, all of one shape; ``uint8`` keeps host memory 4x smaller.
      splits: ``{"train": ids, "val": ids, "test": ids}``, indices into ``classes``.
      ways, shots, queries, augment, train, image_augment: as :func:`metajax.data.episodes.episode_source`
        (augmentation runs on device, in the compiled step).
      class_names, name, info: recorded in ``info`` as there.

    Raises:
      DataError: before anything is compiled, if a split cannot give the episodes (its
        smallest class is what limits ``shots + queries``).

    Example::

      source = host_episode_source(per_class_arrays, {"train": ..., "val": ..., "test": ...}, ways=5)
      batch = source.host_sample((0, 0, 17), "train", 4)  # support x (4, 5, h, w, c)
    """
    classes = list(classes)
    if not classes:
        raise DataError(f"{name}: no classes; check the data files.")
    shapes = {tuple(c.shape[1:]) for c in classes}
    if len(shapes) != 1 or any(np.ndim(c) != 4 for c in classes):
        raise DataError(f"{name}: every class must be (count, h, w, c) of one shape, got {sorted(shapes)}; resize.")
    shape = shapes.pop()
    episode = episode_shapes(ways, shots, queries, train)
    ids = checked_splits(
        splits, episode, augment, num_classes=len(classes),
        images_per_class=lambda ids: min((len(classes[i]) for i in ids), default=0), image_shape=shape, name=name,
    )  # fmt: skip

    def host_sample(seed: Sequence[int], split: str, num: int) -> Task:
        if split not in ids:
            raise DataError(f"{name}: unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        rng = np.random.default_rng([int(s) for s in seed])
        tasks = [sample_host_episode(rng, classes, ids[split], *episode[split], augment) for _ in range(num)]
        return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *tasks)

    names = list(class_names) if class_names is not None else [str(i) for i in range(len(classes))]
    record = {
        "name": name,
        "placement": "host",
        **shape_record(episode),
        "augment": augment,
        "image_shape": list(shape),
        "images": int(sum(len(c) for c in classes)),
        **dict(info or {}),
        "num_classes": {split: int(array.size) for split, array in ids.items()},
        "classes": {split: [names[i] for i in array] for split, array in ids.items()},
    }
    return episode_task_source(None, host_sample, episode, shape, record, image_augment)
