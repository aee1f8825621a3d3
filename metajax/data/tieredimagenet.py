"""tieredImageNet (Ren et al. 2018): 608 ImageNet classes in 34 categories, split 351 / 97 / 160 classes.

Read from the published pickles (Ren et al.'s ``few-shot-ssl-public`` release):

- ``{split}_images_png.pkl``: a list of PNG-encoded 84x84 RGB images
  (each a ``uint8`` array or ``bytes``), ``split`` in ``train``, ``val``, ``test``;
- ``{split}_labels.pkl``: a dict with ``label_specific`` ``(N,)`` (class index
  within the split), ``label_general`` ``(N,)`` (category index),
  ``label_specific_str`` (the class names, WordNet ids) and
  ``label_general_str`` (the category names).

Classes hold different numbers of images (up to 1300). The on-device path
(:func:`tieredimagenet`) keeps the first ``min(count)`` images of every class
(or ``max_per_class``) in one dense ``uint8`` array (608 classes x 600 images
at 84x84 is 7.7 GB, which fits a 40-80 GB accelerator; ``image_size`` or
``max_per_class`` shrink it). All 779,165 images (16.5 GB decoded at 84x84)
stay in host memory with ``placement="host"``: the runner then gathers each
step's batch of episodes there (the same ``Task`` pytree) and passes it to
the compiled step (:mod:`metajax.data.streamed`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metajax.data import images as image_lib
from metajax.data.episodes import episode_source
from metajax.data.miniimagenet import PICKLE_ERRORS, check_counts, data_root, stack_classes
from metajax.data.source import SPLITS, TaskSource
from metajax.data.streamed import check_placement, host_episode_source
from metajax.errors import DataError

NAME = "tieredimagenet"
URL = "https://github.com/renmengye/few-shot-ssl-public"
WHERE = f"get tiered-imagenet.tar ({URL}) and unpack its *_images_png.pkl and *_labels.pkl into $METAJAX_DATA/{NAME}"
CLASS_COUNTS = {"train": 351, "val": 97, "test": 160}
CATEGORY_COUNTS = {"train": 20, "val": 6, "test": 8}
LABEL_KEYS = ("label_specific", "label_general", "label_specific_str")


def _read(path: Path) -> Any:
    import pickle

    if not path.is_file():
        raise DataError(f"{NAME}: {path} not found; {WHERE}.")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except PICKLE_ERRORS as e:
        raise DataError(
            f"{NAME}: {path} is corrupt or not a tieredImageNet pickle ({type(e).__name__}); download it again."
        ) from None


def read_split(
    root: Path, split: str, image_size: int | None, resample: str
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One split's images by class: ``({wnid: (count, s, s, 3) uint8}, {wnid: category name})``."""
    labels_path, images_path = root / f"{split}_labels.pkl", root / f"{split}_images_png.pkl"
    labels = _read(labels_path)
    if not isinstance(labels, dict) or any(k not in labels for k in LABEL_KEYS):
        raise DataError(f"{NAME}: {labels_path} lacks one of {', '.join(LABEL_KEYS)}; download it again.")
    specific = np.asarray(labels["label_specific"], np.int64)
    general = np.asarray(labels["label_general"], np.int64)
    names = [str(n) for n in labels["label_specific_str"]]
    general_names = [str(n) for n in labels.get("label_general_str", [])]
    pngs = _read(images_path)
    if not hasattr(pngs, "__len__") or len(pngs) != len(specific) or len(general) != len(specific):
        raise DataError(
            f"{NAME}: {images_path} has {len(pngs) if hasattr(pngs, '__len__') else '?'} images but "
            f"{labels_path.name} has {len(specific)} labels; download both again."
        )
    if specific.size and (specific.min() < 0 or specific.max() >= len(names)):
        raise DataError(f"{NAME}: {labels_path} label_specific exceeds label_specific_str; download it again.")
    decoded: dict[int, list[np.ndarray]] = {}
    for index, (png, label) in enumerate(zip(pngs, specific, strict=True)):
        try:
            image = image_lib.decode_image(
                bytes(np.asarray(png, np.uint8).tobytes()) if not isinstance(png, bytes) else png, "RGB"
            )
        except image_lib.DECODE_ERRORS as e:
            raise DataError(
                f"{NAME}: image {index} of {images_path} is not a readable PNG ({type(e).__name__}); download it again."
            ) from None
        decoded.setdefault(int(label), []).append(image_lib.resize(image, image_size, resample))
    category = {}
    for label in decoded:
        g = int(general[np.flatnonzero(specific == label)[0]])
        category[names[label]] = general_names[g] if g < len(general_names) else str(g)
    return {names[k]: np.stack(decoded[k]) for k in sorted(decoded)}, category


def load_tieredimagenet(
    root: str | os.PathLike | None = None,
    *,
    image_size: int | None = 84,
    resample: str = "bilinear",
    check_counts_: bool = True,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str], dict[str, Any]]:
    """All three splits by class: ``({split: {wnid: (count, s, s, 3)}}, {wnid: category}, info)``.

    Raises:
      DataError: a missing or corrupt file, or class counts other than 351 / 97 / 160.
    """
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise DataError(f"{NAME}: image_size must be an int >= 1 or null, got {image_size!r} (data.image_size).")
    folder = data_root(root, NAME)
    by_split, categories, checksums = {}, {}, {}
    for split in SPLITS:
        by_split[split], category = read_split(folder, split, image_size, resample)
        categories.update(category)
        for suffix in ("images_png", "labels"):
            path = folder / f"{split}_{suffix}.pkl"
            checksums[path.name] = image_lib.file_checksum(path)
    if check_counts_:
        check_counts(NAME, {s: len(v) for s, v in by_split.items()}, CLASS_COUNTS, str(folder))
    info = {"root": str(folder), "checksums": checksums}
    return by_split, categories, info


def tieredimagenet(
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    augment: str = "none",
    image_size: int | None = 84,
    root: str | None = None,
    resample: str = "bilinear",
    max_per_class: int | None = None,
    check_counts: bool = True,
    placement: str = "device",
    train_ways: int | None = None,
    train_shots: int | None = None,
    train_queries: int | None = None,
    image_augment: Sequence[str] | None = None,
) -> TaskSource:
    """N-way K-shot tieredImageNet episodes, sampled on device from a dense array or on the host from all images.

    With ``placement="device"`` every class keeps its first ``min(count)``
    images, or ``max_per_class`` (fewer images, less device memory);
    ``info["dropped_images"]`` says how many were left out. With
    ``placement="host"`` every image of every class stays in host memory
    (``max_per_class`` still caps a class if given) and each step's batch is
    gathered there (:mod:`metajax.data.streamed`).

    ``train_ways``, ``train_shots``, ``train_queries`` set training episodes apart from the test's
    (``None`` keeps ``ways``, ``shots``, ``queries``); ``image_augment`` augments training
    images on device (:mod:`metajax.data.augment`).

    Example::

      source = tieredimagenet(ways=5, shots=1, max_per_class=600)
      task = source.sample(jax.random.key(0), "train")  # support x (5, 84, 84, 3)
    """
    check_placement(placement, NAME)
    train = (train_ways, train_shots, train_queries)
    by_split, categories, info = load_tieredimagenet(
        root, image_size=image_size, resample=resample, check_counts_=check_counts
    )
    classes = {name: images for split in SPLITS for name, images in by_split[split].items()}
    if len(classes) != sum(len(v) for v in by_split.values()):
        raise DataError(f"{NAME}: a class is in two splits; use the published pickles.")
    starts = np.cumsum([0] + [len(by_split[s]) for s in SPLITS])
    splits = {s: np.arange(starts[i], starts[i + 1]) for i, s in enumerate(SPLITS)}
    info = {
        **info,
        "split": "ren2018",
        "image_size": image_size,
        "num_categories": {s: len({categories[c] for c in by_split[s]}) for s in SPLITS},
    }
    if placement == "host":  # every image of every class (max_per_class still caps a class)
        data, make = [images[:max_per_class] for images in classes.values()], host_episode_source
        info["dropped_images"] = int(sum(len(v) for v in classes.values()) - sum(len(v) for v in data))
    else:
        (data, info["dropped_images"]), make = stack_classes(classes, NAME, max_per_class=max_per_class), episode_source
    return make(
        data,
        splits,
        ways,
        shots,
        queries,
        augment,
        class_names=list(classes),
        name=NAME,
        info=info,
        train=train,
        image_augment=image_augment,
    )
