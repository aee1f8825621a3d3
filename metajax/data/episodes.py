"""N-way K-shot episodes sampled on device from a class-indexed image array.

The data is one dense array ``images`` of shape
``(classes, per_class, height, width, channels)``: every class has the same
number of images (Omniglot: 20). Datasets whose classes have different
counts must be trimmed to a common count before they come here. ``images``
is ``float32`` in ``[0, 1]``, or ``uint8`` in ``[0, 255]`` (4x less device
memory; episodes are converted to ``float32`` in ``[0, 1]`` after the gather).

A split is a 1-D array of class indices into ``images``. Sampling is a pure
function of a PRNG key, so it runs inside the jitted meta-step and batches
with ``vmap`` (:func:`metajax.data.source.sample_tasks`).

Augmentations (``augment``):
  ``"none"``: the split's classes as they are.
  ``"rotate_classes"``: Vinyals et al. (2016) / ProtoNets: each class rotated
    by 0, 90, 180 and 270 degrees is a class of its own, so a split of ``n``
    classes offers ``4 n`` and ``ways`` counts rotated classes (two rotations
    of one character may meet in an episode as different classes).
  ``"rotate_tasks"``: MAML's reference code: each class of an episode is
    rotated by a random multiple of 90 degrees, the same for all its images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.tasks import Split, Task
from metajax.data.augment import task_augmentation
from metajax.data.source import SPLITS, TaskSource
from metajax.errors import DataError
from metajax.typing import Array, PRNGKey

AUGMENTS = ("none", "rotate_classes", "rotate_tasks")


def available_classes(num_classes: int, augment: str) -> int:
    """Classes an episode can draw from a split of ``num_classes`` (x4 with ``"rotate_classes"``)."""
    return 4 * num_classes if augment == "rotate_classes" else num_classes


def check_request(
    ways: Any,
    shots: Any,
    queries: Any,
    augment: str,
    *,
    num_classes: int,
    per_class: int,
    image_shape: Sequence[int] = (),
    split: str = "train",
    name: str = "episodes",
    keys: Mapping[str, str] | None = None,
) -> None:
    """Raises a one-line :class:`DataError` when a split cannot give the requested episodes.

    Args:
      ways, shots, queries: the request (N classes, K support and Q query images per class).
      augment: one of :data:`AUGMENTS`.
      num_classes: classes in the split (before rotations).
      per_class: images per class.
      image_shape: ``(height, width, channels)``; rotations need height == width.
      split: the split's name, for the message.
      name: the dataset's name, for the message.
      keys: config key names to use in the message instead of ``ways``, ``shots``, ``queries``.
    """
    keys = {k: (keys or {}).get(k, k) for k in ("ways", "shots", "queries")}
    for key, value in (("ways", ways), ("shots", shots), ("queries", queries)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise DataError(f"{name}: {keys[key]} must be an int >= 1, got {value!r}; set data.{keys[key]}.")
    if augment not in AUGMENTS:
        raise DataError(f"{name}: unknown augment {augment!r}; set data.augment to one of {', '.join(AUGMENTS)}.")
    if augment != "none" and len(image_shape) >= 2 and image_shape[0] != image_shape[1]:
        raise DataError(
            f"{name}: augment={augment!r} rotates by 90 degrees and needs square images, got "
            f"{image_shape[0]}x{image_shape[1]}; use augment='none' or square images."
        )
    available = available_classes(num_classes, augment)
    if ways > available:
        rotated = f" ({num_classes} characters x 4 rotations)" if augment == "rotate_classes" else ""
        hint = "" if augment == "rotate_classes" else " or augment='rotate_classes'"
        raise DataError(
            f"{name}: {ways}-way episodes need {ways} classes but split {split!r} has {available}{rotated}; "
            f"lower data.{keys['ways']} to <= {available}{hint}, or pick a split with more classes."
        )
    if shots + queries > per_class:
        raise DataError(
            f"{name}: shots + queries = {shots} + {queries} = {shots + queries} images per class, but each class has "
            f"{per_class}; lower data.{keys['shots']} or data.{keys['queries']} so that shots + queries <= {per_class}."
        )


class EpisodeShape(NamedTuple):
    """N-way K-shot Q-query."""

    ways: int
    shots: int
    queries: int


TrainShape = tuple[Optional[int], Optional[int], Optional[int]]


def episode_shapes(ways: int, shots: int, queries: int, train: TrainShape | None = None) -> dict[str, EpisodeShape]:
    """Each split's episode shape: ``(ways, shots, queries)``, the train split's entries replaced where ``train``
    gives them (``data.train_ways``, ``train_shots``, ``train_queries``; ``None`` keeps the test value)."""
    test = EpisodeShape(ways, shots, queries)
    given = tuple(train) if train is not None else (None, None, None)
    trained = EpisodeShape(*(t if t is not None else v for t, v in zip(given, test, strict=True)))
    return {"train": trained, "val": test, "test": test}


def episode_example(shape: EpisodeShape, image_shape: Sequence[int]) -> Task:
    """A zero task of ``shape`` (float32 images, int32 labels), for model init and shape checks."""
    n, m = shape.ways * shape.shots, shape.ways * shape.queries
    return Task(
        Split(np.zeros((n, *image_shape), np.float32), np.zeros((n,), np.int32)),
        Split(np.zeros((m, *image_shape), np.float32), np.zeros((m,), np.int32)),
    )


def shape_record(shapes: Mapping[str, EpisodeShape]) -> dict[str, int]:
    """``info`` entries of the episode shapes: ``ways``, ``shots``, ``queries`` and ``train_*`` where they differ."""
    test, train = shapes["test"], shapes["train"]
    record = {"ways": int(test.ways), "shots": int(test.shots), "queries": int(test.queries)}
    record.update({f"train_{k}": int(v) for k, v in train._asdict().items() if v != getattr(test, k)})
    return record


def _rotate(images: Array, k: Array) -> Array:
    """Rotates ``(n, h, w, c)`` images by ``k * 90`` degrees (``k`` a traced int in 0..3)."""
    branches = [lambda x, i=i: jnp.rot90(x, i, axes=(-3, -2)) for i in range(4)]
    return jax.lax.switch(k, branches, images)


def sample_episode(
    key: PRNGKey,
    images: Array,
    class_ids: Array,
    ways: int,
    shots: int,
    queries: int,
    augment: str = "none",
) -> Task:
    """One N-way K-shot Q-query episode; jittable (``ways``, ``shots``, ``queries``, ``augment`` static).

    ``ways`` distinct classes are drawn from ``class_ids`` (rotated copies
    count as classes with ``"rotate_classes"``); for each, a random
    permutation of its images gives ``shots`` support and the next
    ``queries`` query images, so no image is in both. Labels ``0..ways-1``
    are assigned to the classes in a random order. Rows are grouped by class:
    support rows ``i*shots .. (i+1)*shots - 1`` share one label.

    Args:
      key: PRNG key.
      images: ``(classes, per_class, h, w, c)``, ``float32`` in [0, 1] or ``uint8``.
      class_ids: ``(n,)`` int indices into ``images``: the split's classes.
      ways, shots, queries: N, K, Q.
      augment: one of :data:`AUGMENTS`.

    Returns:
      ``Task`` with support ``x`` ``(ways*shots, h, w, c)`` float32, ``y``
      ``(ways*shots,)`` int32, and query ``x`` ``(ways*queries, h, w, c)``,
      ``y`` ``(ways*queries,)``.

    Raises:
      DataError: at trace time, before compilation, if the request is impossible.
    """
    check_request(
        ways,
        shots,
        queries,
        augment,
        num_classes=class_ids.shape[0],
        per_class=images.shape[1],
        image_shape=images.shape[2:],
    )
    # One draw of random bits for everything: each extra jax.random call costs compile time.
    # argsort of i.i.d. uint32 keys is a uniform permutation up to (rare, harmless) ties.
    per_class, available = images.shape[1], available_classes(class_ids.shape[0], augment)
    bits = jax.random.bits(key, (available + ways * per_class + 2 * ways,), jnp.uint32)
    class_bits, image_bits, label_bits, rotation_bits = jnp.split(
        bits, [available, available + ways * per_class, available + ways * per_class + ways]
    )
    chosen = jnp.argsort(class_bits)[:ways]
    if augment == "rotate_classes":
        classes, rotations = class_ids[chosen // 4], chosen % 4
    else:
        classes = class_ids[chosen]
        rotations = (rotation_bits % 4).astype(jnp.int32) if augment == "rotate_tasks" else None
    order = jnp.argsort(image_bits.reshape(ways, per_class), axis=1)[:, : shots + queries]
    x = images[classes[:, None], order]  # (ways, shots + queries, h, w, c)
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.float32) / 255.0
    else:
        x = x.astype(jnp.float32)
    if rotations is not None:
        x = jax.vmap(_rotate)(x, rotations)
    labels = jnp.argsort(label_bits).astype(jnp.int32)
    shape = x.shape[2:]
    support = Split(x[:, :shots].reshape(ways * shots, *shape), jnp.repeat(labels, shots))
    query = Split(x[:, shots:].reshape(ways * queries, *shape), jnp.repeat(labels, queries))
    return Task(support, query)


def episode_source(
    images: np.ndarray | Array,
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
    """A :class:`TaskSource` of N-way episodes over ``images`` with fixed class splits.

    ``init()`` gives ``{"images": images, "classes": {split: class ids}}``
    (host arrays, placed on devices by the caller) and ``sample(data, key,
    split)`` is :func:`sample_episode` on that split's classes. Every split is checked
    against the request here, before anything is compiled.

    Args:
      images: ``(classes, per_class, h, w, c)``, ``float32`` in [0, 1] or ``uint8``.
      splits: ``{"train": ids, "val": ids, "test": ids}``, class indices into ``images``.
      ways, shots, queries: N, K, Q.
      augment: one of :data:`AUGMENTS`.
      class_names: a name per class of ``images``, recorded in ``info["classes"]``.
      name: dataset name for messages and ``info``.
      info: extra JSON-able facts for ``info`` (archives, checksums, split name).
      train: ``(ways, shots, queries)`` of training episodes where they differ from the
        test's (``None`` entries keep the test value); :func:`episode_shapes`.
      image_augment: training-time image augmentation, e.g. ``["crop:8", "color:0.4", "flip"]``
        (:mod:`metajax.data.augment`); applied to training tasks only.

    Returns:
      ``TaskSource`` with loss ``"cross_entropy"`` and ``output_dim`` the larger of the train and test ways;
      ``info["classes"]`` maps each split to its class names, so a run saves them.

    Example::

      images = np.random.rand(30, 20, 28, 28, 1).astype(np.float32)
      source = episode_source(images, {"train": range(20), "val": range(20, 25), "test": range(25, 30)}, ways=5)
      task = source.sample(source.init(), jax.random.key(0), "train")  # support x (5, 28, 28, 1)
    """
    if getattr(images, "ndim", 0) != 5:
        raise DataError(
            f"{name}: images must have shape (classes, per_class, height, width, channels), got "
            f"{getattr(images, 'shape', type(images))}; add a channel axis for gray images."
        )
    num_classes, per_class = images.shape[:2]
    shapes = episode_shapes(ways, shots, queries, train)
    ids = checked_splits(
        splits, shapes, augment, num_classes=num_classes, images_per_class=lambda _: per_class,
        image_shape=images.shape[2:], name=name,
    )  # fmt: skip
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise DataError(f"{name}: {len(names)} class names for {num_classes} classes; give one name per class.")

    data = {"images": images, "classes": ids}

    def sample(data: dict, key: PRNGKey, split: str) -> Task:
        if split not in data["classes"]:
            raise DataError(f"{name}: unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        images, class_ids = jnp.asarray(data["images"]), jnp.asarray(data["classes"][split])
        return sample_episode(key, images, class_ids, *shapes[split], augment)

    shape = tuple(int(d) for d in images.shape[2:])
    record = {
        "name": name,
        **shape_record(shapes),
        "augment": augment,
        "image_shape": list(shape),
        "images_per_class": int(per_class),
        **dict(info or {}),
        "num_classes": {split: int(array.size) for split, array in ids.items()},
        "classes": {split: [names[i] for i in array] for split, array in ids.items()},
    }
    return episode_task_source(sample, None, shapes, shape, record, image_augment, init=lambda: data)


def checked_splits(
    splits: Mapping[str, Sequence[int] | np.ndarray],
    shapes: Mapping[str, EpisodeShape],
    augment: str,
    *,
    num_classes: int,
    images_per_class: Callable[[np.ndarray], int],
    image_shape: Sequence[int],
    name: str,
) -> dict[str, np.ndarray]:
    """Each split's class indices as ``int32``, checked against ``num_classes`` and its episode request.

    ``images_per_class(ids)`` is what limits ``shots + queries`` in a split (the
    dense array's per-class count, or a host split's smallest class).

    Raises:
      DataError: a missing split, an index out of range or listed twice, or a request the split cannot satisfy.
    """
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataError(
            f"{name}: splits lack {', '.join(missing)}; give class indices for each of {', '.join(SPLITS)}."
        )
    ids = {}
    for split in SPLITS:
        array = np.asarray(list(splits[split]) if not isinstance(splits[split], np.ndarray) else splits[split])
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise DataError(f"{name}: split {split!r} has class indices outside 0..{num_classes - 1}; fix the split.")
        if len(np.unique(array)) != array.size:
            raise DataError(f"{name}: split {split!r} lists a class twice; fix the split.")
        check_request(
            *shapes[split],
            augment,
            num_classes=array.size,
            per_class=images_per_class(array),
            image_shape=image_shape,
            split=split,
            name=name,
            keys=request_keys(split, shapes),
        )
        ids[split] = array.astype(np.int32)
    return ids


def episode_task_source(
    sample, host_sample, shapes: Mapping[str, EpisodeShape], image_shape, info, image_augment=None, init=dict
) -> TaskSource:
    """The :class:`TaskSource` of an episode sampler (on device or on the host) with per-split ``shapes``."""
    example = episode_example(shapes["test"], image_shape)
    train = episode_example(shapes["train"], image_shape) if shapes["train"] != shapes["test"] else None
    output_dim = int(max(shapes["train"].ways, shapes["test"].ways))
    augment = task_augmentation(image_augment, image_shape, info.get("name", "episodes"))
    if augment is not None:
        info = {**info, "image_augment": list(image_augment)}
    return TaskSource(sample, example, output_dim, "cross_entropy", info, host_sample, train, augment, init)


def request_keys(split: str, shapes: Mapping[str, EpisodeShape]) -> dict[str, str]:
    """Config keys to name in messages: ``data.train_ways`` for a train split shape set apart from the test's."""
    if split != "train":
        return {}
    return {k: f"train_{k}" for k in EpisodeShape._fields if getattr(shapes["train"], k) != getattr(shapes["test"], k)}
