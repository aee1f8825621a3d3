"""miniImageNet (Vinyals et al. 2016) with the class split of Ravi & Larochelle (2017): 64 / 16 / 20 classes.

100 ImageNet classes, 600 RGB images each. Two published file formats are read:

``"csv"`` (Ravi & Larochelle's): a folder ``images/`` of JPEGs plus
  ``train.csv``, ``val.csv``, ``test.csv`` with the header ``filename,label``
  (``label`` is the WordNet id, e.g. ``n01532829``). The images are decoded,
  resized to ``image_size`` (84 in every paper here) and cached
  (:mod:`metajax.data.images`).
``"pickle"`` (the widely used cache): ``mini-imagenet-cache-{train,val,test}.pkl``,
  each a dict with ``image_data`` ``(N, 84, 84, 3)`` ``uint8`` and
  ``class_dict`` ``{wnid: [indices into image_data]}``.

``format="auto"`` picks the pickles when they are present, else the CSVs.
All 60,000 images at 84x84 are 1.27 GB as ``uint8``: they live on the device
and episodes are sampled there (:func:`metajax.data.episodes.episode_source`).
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metajax.data import images as image_lib
from metajax.data.episodes import episode_source
from metajax.data.source import SPLITS, TaskSource
from metajax.data.streamed import check_placement, host_episode_source
from metajax.errors import DataError

NAME = "miniimagenet"
CSV_URL = "https://github.com/twitter-research/meta-learning-lstm/tree/master/data/miniImagenet"
WHERE = (
    f"get train/val/test.csv from {CSV_URL} and the images as Ravi & Larochelle's README says, or the "
    "mini-imagenet-cache-*.pkl files, into $METAJAX_DATA/miniimagenet (or set data.root)"
)
CLASS_COUNTS = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600
FORMATS = ("auto", "csv", "pickle")
PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError)


def data_root(root: str | os.PathLike | None, name: str = NAME) -> Path:
    """``root``, else ``$METAJAX_DATA/<name>``, else ``~/data/<name>``."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get("METAJAX_DATA")
    return (Path(base).expanduser() if base else Path.home() / "data") / name


def stack_classes(
    per_class: Mapping[str, np.ndarray], name: str, *, max_per_class: int | None = None
) -> tuple[np.ndarray, int]:
    """Stacks ``{class: (count, h, w, c) uint8}`` into ``(classes, per_class, h, w, c)``.

    Every class keeps its first ``min(counts)`` images (and at most
    ``max_per_class``), since episodes need a dense array.

    Returns:
      ``(array, images dropped by the trimming)``.
    """
    counts = [len(v) for v in per_class.values()]
    if not counts:
        raise DataError(f"{name}: no classes found; check the data files ({WHERE}).")
    keep = min(counts) if max_per_class is None else min(min(counts), max_per_class)
    shapes = {v.shape[1:] for v in per_class.values()}
    if len(shapes) != 1:
        raise DataError(f"{name}: images of different shapes {sorted(shapes)}; set data.image_size to resize them.")
    return np.stack([v[:keep] for v in per_class.values()]), int(sum(counts) - keep * len(counts))


def check_counts(name: str, found: Mapping[str, int], expected: Mapping[str, int], where: str) -> None:
    """Raises a one-line DataError when a split's class count differs from the published one."""
    for split in SPLITS:
        if found.get(split) != expected[split]:
            raise DataError(
                f"{name}: split {split!r} has {found.get(split)} classes in {where}, the published split has "
                f"{expected[split]}; use the published files, or data.check_counts=false for a custom split."
            )


def _read_pickle(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{NAME}: {path} not found; {WHERE}.")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except PICKLE_ERRORS as e:
        raise DataError(f"{NAME}: {path} is corrupt or not a {what} ({type(e).__name__}); download it again.") from None


def _load_pickle_split(path: Path, image_size: int | None, resample: str) -> dict[str, np.ndarray]:
    data = _read_pickle(path, "miniImageNet cache pickle")
    if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
        raise DataError(
            f"{NAME}: {path} lacks 'image_data' or 'class_dict' (not a mini-imagenet-cache pickle); download it again."
        )
    images = np.asarray(data["image_data"])
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{NAME}: {path} image_data has shape {images.shape} {images.dtype}, expected (N, 84, 84, 3) uint8; "
            "download it again."
        )
    out = {}
    for wnid, indices in data["class_dict"].items():
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(images)):
            raise DataError(f"{NAME}: {path} class {wnid} indexes past image_data; download it again.")
        chosen = images[index]
        if image_size is not None and chosen.shape[1:3] != (image_size, image_size):
            chosen = np.stack([image_lib.resize(im, image_size, resample) for im in chosen])
        out[str(wnid)] = chosen
    return out


def read_csv_split(path: Path) -> dict[str, list[str]]:
    """``{wnid: [filenames]}`` in file order from a Ravi & Larochelle ``{split}.csv``."""
    if not path.is_file():
        raise DataError(f"{NAME}: {path} not found; {WHERE}.")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"{NAME}: {path} is unreadable ({type(e).__name__}); download it again from {CSV_URL}."
        ) from None
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"{NAME}: {path} lacks the header 'filename,label'; download it again from {CSV_URL}.")
    classes: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise DataError(f"{NAME}: {path} line {line} is not 'filename,label'; download it again from {CSV_URL}.")
        classes.setdefault(row[1].strip(), []).append(row[0].strip())
    return classes


def _load_csv_split(
    root: Path, split: str, image_size: int | None, resample: str, cache_dir: str | os.PathLike | None
) -> tuple[dict[str, np.ndarray], str, bool]:
    csv_path = root / f"{split}.csv"
    classes = read_csv_split(csv_path)
    folder = root / "images"
    if not folder.is_dir():
        raise DataError(f"{NAME}: image folder {folder} not found; {WHERE}.")
    checksum = image_lib.file_checksum(csv_path) + image_lib.folder_checksum(folder, (".jpg", ".jpeg", ".png"))
    options = {"image_size": image_size, "resample": resample}
    cache = image_lib.cache_file(NAME, split, checksum, options, cache_dir)
    cached = image_lib.load_cached(cache)
    if cached is not None:
        return {str(k): cached["images"][i] for i, k in enumerate(cached["names"])}, checksum, True
    out = {}
    for wnid, files in classes.items():
        decoded = []
        for file in files:
            path = folder / file
            try:
                image = image_lib.decode_image(path.read_bytes(), "RGB")
            except FileNotFoundError:
                raise DataError(f"{NAME}: {path} (listed in {csv_path.name}) not found; {WHERE}.") from None
            except image_lib.DECODE_ERRORS as e:
                raise DataError(f"{NAME}: {path} is not a readable image ({type(e).__name__}); restore it.") from None
            decoded.append(image_lib.resize(image, image_size, resample))
        out[wnid] = np.stack(decoded)
    counts = {len(v) for v in out.values()}
    if len(counts) == 1:  # the cache stores one dense array; unequal classes are simply decoded each time
        image_lib.save_cached(cache, {"images": np.stack(list(out.values())), "names": np.array(list(out))})
    return out, checksum, False


def load_miniimagenet(
    root: str | os.PathLike | None = None,
    *,
    format: str = "auto",
    image_size: int | None = 84,
    resample: str = "bilinear",
    cache_dir: str | os.PathLike | None = None,
    check_counts_: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str], dict[str, Any]]:
    """Reads all three splits.

    Returns:
      ``(images (100, 600, s, s, 3) uint8, {split: class indices}, wnids, info)``.

    Raises:
      DataError: a missing or corrupt file (naming it and where to get it), or a split whose class
        count differs from the published 64 / 16 / 20 (unless ``check_counts_=False``).
    """
    if format not in FORMATS:
        raise DataError(f"{NAME}: unknown format {format!r}; use one of {', '.join(FORMATS)} (data.format).")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise DataError(f"{NAME}: image_size must be an int >= 1 or null, got {image_size!r} (data.image_size).")
    folder = data_root(root)
    if format == "auto":
        format = "pickle" if (folder / "mini-imagenet-cache-train.pkl").is_file() else "csv"
    classes: dict[str, np.ndarray] = {}
    splits, checksums, hits = {}, {}, {}
    for split in SPLITS:
        if format == "pickle":
            path = folder / f"mini-imagenet-cache-{split}.pkl"
            part = _load_pickle_split(path, image_size, resample)
            checksums[path.name], hits[split] = image_lib.file_checksum(path), False
        else:
            part, checksums[f"{split}.csv+images"], hits[split] = _load_csv_split(
                folder, split, image_size, resample, cache_dir
            )
        overlap = set(part) & set(classes)
        if overlap:
            raise DataError(f"{NAME}: class {sorted(overlap)[0]} is in two splits; use the published split files.")
        splits[split] = np.arange(len(classes), len(classes) + len(part))
        classes.update(part)
    if check_counts_:
        check_counts(NAME, {s: len(v) for s, v in splits.items()}, CLASS_COUNTS, str(folder))
    images, dropped = stack_classes(classes, NAME)
    info = {
        "format": format,
        "root": str(folder),
        "checksums": checksums,
        "cache_hits": hits,
        "dropped_images": dropped,
    }
    return images, splits, list(classes), info


def miniimagenet(
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    augment: str = "none",
    image_size: int | None = 84,
    root: str | None = None,
    format: str = "auto",
    resample: str = "bilinear",
    cache_dir: str | None = None,
    check_counts: bool = True,
    placement: str = "device",
    train_ways: int | None = None,
    train_shots: int | None = None,
    train_queries: int | None = None,
    image_augment: Sequence[str] | None = None,
) -> TaskSource:
    """N-way K-shot miniImageNet episodes (Ravi & Larochelle split), sampled on device or on the host.

    Args:
      ways, shots, queries: N classes, K support and Q query images per class.
      augment: ``"none"`` (every paper here), or a rotation from :mod:`metajax.data.episodes`.
      image_size: side of the square images (84; ``None`` keeps the files' size).
      root: folder with the files (default ``$METAJAX_DATA/miniimagenet``).
      format: ``"auto"``, ``"csv"`` (images/ + csv) or ``"pickle"`` (mini-imagenet-cache-*.pkl).
      resample: PIL filter for resizing the JPEGs.
      cache_dir: decoded-array cache (default ``$XDG_CACHE_HOME/metajax``).
      check_counts: require the published 64 / 16 / 20 classes.
      placement: ``"device"`` (the 2.1 GB uint8 array on the accelerator, sampled inside the step) or
        ``"host"`` (kept in host memory, each step's batch gathered there; :mod:`metajax.data.streamed`).
      train_ways, train_shots, train_queries: training episodes' N, K, Q where they differ from the
        test's (ProtoNets train 30-way, MetaOptNet 15-shot); ``None`` keeps ``ways``, ``shots``, ``queries``.
      image_augment: training-time image augmentation, e.g. ``["crop:8", "color:0.4", "flip"]``
        (MetaOptNet's; :mod:`metajax.data.augment`); ``None`` for none.

    Returns:
      ``TaskSource`` with ``x`` ``(ways*shots, s, s, 3)`` float32 in [0, 1].

    Example::

      source = miniimagenet(ways=5, shots=5, root="~/data/miniimagenet")
      task = source.sample(jax.random.key(0), "train")  # support x (25, 84, 84, 3)
    """
    check_placement(placement, NAME)
    images, splits, names, info = load_miniimagenet(
        root, format=format, image_size=image_size, resample=resample, cache_dir=cache_dir, check_counts_=check_counts
    )
    info = {"split": "ravi_larochelle", "image_size": image_size, **info}
    make = host_episode_source if placement == "host" else episode_source
    train = (train_ways, train_shots, train_queries)
    return make(
        images,
        splits,
        ways,
        shots,
        queries,
        augment,
        class_names=names,
        name=NAME,
        info=info,
        train=train,
        image_augment=image_augment,
    )
