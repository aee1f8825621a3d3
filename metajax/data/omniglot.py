"""Omniglot (Lake et al., 2015): the published zips or folders, or tfds, to one class-indexed array.

Images: 105x105 1-bit drawings, 20 per character. Convention here: ink is
1.0 and background 0.0 (PIL decodes the PNGs to 0/1 with ink 0, TensorFlow
to 0/255; both are normalised explicitly), resized to ``image_size`` (28 by
default) with Lanczos resampling, as MAML's and ProtoNets' preprocessing does.
Decoded arrays are cached per archive (see :mod:`metajax.data.images`).

A character is named ``"Alphabet/characterNN"``; its global id (the PNG name
prefix, 1..1623) and the drawer of each image (the suffix, 1..20) are kept.

Splits (``train / val / test`` characters):
  ``"vinyals"``: Vinyals et al. (2016), used by ProtoNets and most later
    work, 1028 / 172 / 423 (needs ``images_background`` and ``images_evaluation``).
  ``"background_evaluation"``: the authors' split, train = background minus
    the validation alphabets of the Vinyals split (792), val = those 5
    alphabets (172), test = evaluation (659).
  ``"maml"``: MAML's seeded random split of all 1623 characters: 1200 for
    meta-training, of which the last 100 of the permutation are validation
    (1100 / 100 / 423), as in Finn et al.'s code; ``seed`` picks the permutation.
  ``"subsets"``: the two minimal archives, for CPU-sized runs: train = the
    alphabets of ``images_background_small1`` but Early_Aramaic (114),
    val = Early_Aramaic (22), test = the alphabets only in
    ``images_background_small2``: Japanese_(katakana), Sanskrit, Tagalog (106).
    Greek and Latin are in both archives with the same images; they count once.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from metajax.data import images as image_lib
from metajax.data.episodes import episode_source
from metajax.data.source import TaskSource
from metajax.errors import DataError, close_matches

URL = "https://github.com/brendenlake/omniglot/tree/master/python"
BACKGROUND, EVALUATION = "images_background", "images_evaluation"
SMALL1, SMALL2 = "images_background_small1", "images_background_small2"
ARCHIVES = (BACKGROUND, EVALUATION, SMALL1, SMALL2)  # also the order in which characters are merged
SPLITS = ("vinyals", "background_evaluation", "maml", "subsets")
SPLIT_ARCHIVES = {
    "vinyals": (BACKGROUND, EVALUATION),
    "background_evaluation": (BACKGROUND, EVALUATION),
    "maml": (BACKGROUND, EVALUATION),
    "subsets": (SMALL1, SMALL2),
}
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TRAIN_EVAL_ALPHABETS = (
    "Angelic",
    "Atemayar_Qelisayer",
    "Atlantean",
    "Aurek-Besh",
    "Avesta",
    "Ge_ez",
    "Glagolitic",
)
VINYALS_GURMUKHI_TRAIN = 41  # Gurmukhi character01..41 train, 42..45 test
MAML_TRAIN, MAML_VAL = 1100, 100  # of 1200 meta-training characters; the rest (423) is test
SUBSETS_VAL_ALPHABETS = ("Early_Aramaic",)
PREPROCESSING_VERSION = 1  # part of the cache key
_PNG = re.compile(r"(?:^|/)(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<id>\d+)_(?P<drawer>\d+)\.png$")


class Omniglot(NamedTuple):
    """Decoded Omniglot characters, merged over archives.

    Attributes:
      images: ``(characters, drawings, size, size, 1)`` ``uint8``, ink 255,
        background 0 (``/ 255`` gives the float convention, ink 1.0).
      names: ``(characters,)`` ``"Alphabet/characterNN"``.
      ids: ``(characters,)`` global character id (1..1623), from the PNG prefix.
      drawers: ``(characters, drawings)`` drawer of each image (1..20; 0 if unknown, tfds).
      archives: ``(characters,)`` the archive each character was first found in.
      checksums: archive -> SHA-256 of its file (zip) or file listing (folder); tfds: ``"tfds"``.
      cache_hits: archive -> whether its arrays came from the cache.
    """

    images: np.ndarray
    names: list[str]
    ids: np.ndarray
    drawers: np.ndarray
    archives: list[str]
    checksums: dict[str, str]
    cache_hits: dict[str, bool]

    def alphabets(self) -> list[str]:
        """Sorted distinct alphabet names."""
        return sorted({name.split("/")[0] for name in self.names})


ORIGINAL_SIZE = 105  # every published Omniglot drawing is 105x105


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the Omniglot archives.

    ``root`` if given, else ``$METAJAX_DATA/omniglot``, else ``~/metajax_data/omniglot``.
    A ``root`` that lacks the archives but has an ``omniglot/`` sub-folder means that sub-folder.
    """
    if root is None:
        base = Path(os.environ["METAJAX_DATA"]).expanduser() if os.environ.get("METAJAX_DATA") else None
        base = base if base is not None else Path.home() / "metajax_data"
        return base / "omniglot"
    root = Path(root).expanduser()
    if not any(_candidates(root, name) for name in ARCHIVES) and (root / "omniglot").is_dir():
        return root / "omniglot"
    return root


def _candidates(root: Path, name: str) -> list[Path]:
    """``[zip]`` or ``[unpacked folder]`` (``<name>/`` or ``<name>/<name>/``), or ``[]``."""
    if (root / f"{name}.zip").is_file():
        return [root / f"{name}.zip"]
    return [folder for folder in (root / name / name, root / name) if folder.is_dir()][:1]


def archive_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>.zip`` or the unpacked ``<root>/<name>/`` folder.

    Raises:
      DataError: neither exists (one line: which file, where to get it).
    """
    _check_archive_name(name)
    folder = data_root(root)
    found = _candidates(folder, name)
    if not found:
        raise DataError(
            f"omniglot: {name}.zip not found in {folder} (nor an unpacked {name}/ folder); download it from {URL} "
            "into that folder, or set METAJAX_DATA (its omniglot/ sub-folder) or data.root to where it is."
        )
    return found[0]


def _check_archive_name(name: str) -> None:
    if name not in ARCHIVES:
        raise DataError(
            f"omniglot: unknown archive {name!r}{close_matches(name, ARCHIVES)} Known: {', '.join(ARCHIVES)}."
        )


def _options(image_size: int | None, resample: str) -> dict[str, Any]:
    return {"image_size": image_size, "resample": resample, "ink": 1, "version": PREPROCESSING_VERSION}


def _checksum(path: Path) -> str:
    return image_lib.file_checksum(path) if path.is_file() else image_lib.folder_checksum(path)


def cache_path(
    name: str,
    root: str | os.PathLike | None = None,
    image_size: int | None = 28,
    resample: str = "lanczos",
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Where the decoded arrays of archive ``name`` are cached (exists after the first load)."""
    path = archive_path(name, root)
    return image_lib.cache_file("omniglot", name, _checksum(path), _options(image_size, resample), cache_dir)


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _corrupt(path: Path, name: str, error: BaseException) -> DataError:
    return DataError(
        f"omniglot: {path} is truncated or corrupt ({_one_line(error)}); download {name}.zip again from {URL}."
    )


def preprocess(image: np.ndarray, image_size: int | None, resample: str = "lanczos") -> np.ndarray:
    """A decoded drawing ``uint8`` ``(h, w, c)`` with ink 0 -> ``uint8`` ``(size, size, 1)`` with ink 255."""
    return image_lib.resize(255 - image_lib.to_gray(image), image_size, resample)


def _stack(records: dict[tuple[str, str], list[tuple[int, int, np.ndarray]]], where: str) -> dict[str, np.ndarray]:
    """Characters -> dense arrays; records map (alphabet, character) to [(drawer, id, image)]."""
    if not records:
        raise DataError(
            f"omniglot: {where} holds no images in the layout <Alphabet>/<characterNN>/<id>_<drawer>.png; "
            f"get the archives as published at {URL}."
        )
    keys = sorted(records)
    counts = {len(records[k]) for k in keys}
    if len(counts) != 1:
        smallest = min(keys, key=lambda k: len(records[k]))
        raise DataError(
            f"omniglot: {where} has characters with {sorted(counts)} drawings (e.g. {'/'.join(smallest)} has "
            f"{len(records[smallest])}); every character needs the same number, so replace the incomplete archive."
        )
    images, ids, drawers = [], [], []
    for key in keys:
        drawings = sorted(records[key], key=lambda r: (r[0], r[1]))
        character_ids = {r[1] for r in drawings}
        if len(character_ids) != 1:
            raise DataError(f"omniglot: {where}: {'/'.join(key)} mixes character ids {sorted(character_ids)}.")
        images.append(np.stack([r[2] for r in drawings]))
        ids.append(drawings[0][1])
        drawers.append([r[0] for r in drawings])
    return {
        "images": np.stack(images),
        "names": np.array([f"{a}/{c}" for a, c in keys]),
        "ids": np.asarray(ids, np.int32),
        "drawers": np.asarray(drawers, np.int32),
    }


def _decode_files(path: Path, name: str, image_size: int | None, resample: str) -> dict[str, np.ndarray]:
    records: dict[tuple[str, str], list] = {}
    sizes: dict[str, tuple[int, ...]] = {}

    def add(relative: str, read) -> None:
        match = _PNG.search(relative)
        if match is None:
            return
        try:
            decoded = image_lib.decode_image(read(), "L")
        except image_lib.DECODE_ERRORS as e:
            raise _corrupt(path, name, e) from None
        size = sizes.setdefault("first", decoded.shape[:2])
        if decoded.shape[0] != decoded.shape[1] or decoded.shape[:2] != size:
            raise DataError(
                f"omniglot: {path}: {relative} is {decoded.shape[1]}x{decoded.shape[0]}, but drawings must be square "
                f"and all one size (published: {ORIGINAL_SIZE}x{ORIGINAL_SIZE}, first seen {size[1]}x{size[0]}); "
                f"replace the archive with the one from {URL}."
            )
        image = preprocess(decoded, image_size, resample)
        key = (match["alphabet"], match["character"])
        records.setdefault(key, []).append((int(match["drawer"]), int(match["id"]), image))

    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    add(member, lambda member=member: archive.read(member))
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise _corrupt(path, name, e) from None
    else:
        for file in sorted(path.rglob("*.png")):
            add(file.relative_to(path).as_posix(), file.read_bytes)
    return _stack(records, str(path))


def _load_archive(
    name: str, root: Any, image_size: int | None, resample: str, cache_dir: Any
) -> tuple[dict[str, np.ndarray], str, bool]:
    path = archive_path(name, root)
    try:
        checksum = _checksum(path)
    except OSError as e:
        raise _corrupt(path, name, e) from None
    cache = image_lib.cache_file("omniglot", name, checksum, _options(image_size, resample), cache_dir)
    arrays = image_lib.load_cached(cache)
    if arrays is not None:
        return arrays, checksum, True
    arrays = _decode_files(path, name, image_size, resample)
    image_lib.save_cached(cache, arrays)
    return arrays, checksum, False


def _check_image_size(image_size: Any) -> None:
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise DataError(f"omniglot: image_size must be an int >= 1 (or None for 105), got {image_size!r}.")


def load_omniglot(
    archives: Iterable[str] = (BACKGROUND, EVALUATION),
    *,
    root: str | os.PathLike | None = None,
    image_size: int | None = 28,
    resample: str = "lanczos",
    cache_dir: str | os.PathLike | None = None,
    source: str = "files",
    data_dir: str | os.PathLike | None = None,
) -> Omniglot:
    """Decodes (or loads from the cache) the given archives and merges their characters.

    Characters present in several archives (Greek and Latin in both small
    ones) are kept once, from the first archive in :data:`ARCHIVES` order.

    Args:
      archives: names from :data:`ARCHIVES`.
      root: folder with the zips or unpacked folders (see :func:`data_root`).
      image_size: side of the square output images; ``None`` keeps 105.
      resample: PIL resampling filter name (see :data:`metajax.data.images.RESAMPLE`).
      cache_dir: cache folder (see :func:`metajax.data.images.default_cache_dir`).
      source: ``"files"`` (zips/folders) or ``"tfds"`` (a prepared tfds ``omniglot``; no cache).
      data_dir: tfds data folder for ``source="tfds"``.
      train_ways, train_shots, train_queries: training episodes' N, K, Q where they differ from the
        test's (ProtoNets train 30-way, MetaOptNet 15-shot); ``None`` keeps ``ways``, ``shots``, ``queries``.

    Returns:
      :class:`Omniglot` with images ``(characters, 20, image_size, image_size, 1)`` ``uint8``.

    Raises:
      DataError: a missing, truncated or corrupt archive (one line naming it and where to get it).
    """
    _check_image_size(image_size)
    if source not in ("files", "tfds"):
        raise DataError(f"omniglot: unknown source {source!r}; use 'files' (zips or folders) or 'tfds'.")
    wanted = list(dict.fromkeys(archives))
    if not wanted:
        raise DataError(f"omniglot: no archives given; name some of {', '.join(ARCHIVES)}.")
    for name in wanted:
        _check_archive_name(name)
    merged: dict[str, list] = {"images": [], "names": [], "ids": [], "drawers": [], "archives": []}
    checksums, hits, seen = {}, {}, set()
    for name in [a for a in ARCHIVES if a in wanted]:
        if source == "tfds":
            from metajax.data import tfds_source  # lazy: tfds is an optional dependency

            arrays = tfds_source.load_archive(name, image_size=image_size, resample=resample, data_dir=data_dir)
            checksums[name], hits[name] = "tfds", False
        else:
            arrays, checksums[name], hits[name] = _load_archive(name, root, image_size, resample, cache_dir)
        keep = [i for i, n in enumerate(arrays["names"].tolist()) if n not in seen]
        seen.update(arrays["names"][keep].tolist())
        for key in ("images", "ids", "drawers"):
            merged[key].append(arrays[key][keep])
        merged["names"] += arrays["names"][keep].tolist()
        merged["archives"] += [name] * len(keep)
    shapes = {a.shape[1:] for a in merged["images"]}
    if len(shapes) != 1:
        raise DataError(f"omniglot: archives {wanted} differ in drawings per character or size {sorted(shapes)}.")
    return Omniglot(
        np.concatenate(merged["images"]),
        merged["names"],
        np.concatenate(merged["ids"]),
        np.concatenate(merged["drawers"]),
        merged["archives"],
        checksums,
        hits,
    )


def split_classes(data: Omniglot, split: str = "vinyals", seed: int = 0) -> dict[str, np.ndarray]:
    """Character indices into ``data`` for ``train``, ``val`` and ``test`` (see the module docstring).

    Raises:
      DataError: unknown split, or ``data`` lacks the archives the split is defined on.
    """
    if split not in SPLITS:
        raise DataError(f"omniglot: unknown split {split!r}{close_matches(split, SPLITS)} Known: {', '.join(SPLITS)}.")
    missing = [a for a in SPLIT_ARCHIVES[split] if a not in data.checksums]
    if missing:
        other = [s for s, a in SPLIT_ARCHIVES.items() if set(a) <= set(data.checksums)]
        hint = f" or use split {other[0]!r}" if other else ""
        raise DataError(
            f"omniglot: split {split!r} is defined on {', '.join(SPLIT_ARCHIVES[split])} but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not loaded; add {'it' if len(missing) == 1 else 'them'} to "
            f"data.archives (download from {URL}){hint}."
        )
    alphabet = np.array([n.split("/")[0] for n in data.names])
    number = np.array([int(n.split("/character")[1]) for n in data.names])
    archive = np.array(data.archives)
    if split == "subsets":
        val = np.isin(alphabet, SUBSETS_VAL_ALPHABETS)
        masks = {"train": (archive == SMALL1) & ~val, "val": val, "test": archive == SMALL2}
    elif split in ("vinyals", "background_evaluation"):
        background, evaluation = archive == BACKGROUND, archive == EVALUATION
        val = background & np.isin(alphabet, VINYALS_VAL_ALPHABETS)
        if split == "background_evaluation":
            masks = {"train": background & ~val, "val": val, "test": evaluation}
        else:
            eval_train = np.isin(alphabet, VINYALS_TRAIN_EVAL_ALPHABETS) | (
                (alphabet == "Gurmukhi") & (number <= VINYALS_GURMUKHI_TRAIN)
            )
            masks = {
                "train": (background & ~val) | (evaluation & eval_train),
                "val": val,
                "test": evaluation & ~eval_train,
            }
    else:  # maml
        pool = np.flatnonzero((archive == BACKGROUND) | (archive == EVALUATION))
        pool = pool[np.argsort(np.asarray(data.names)[pool], kind="stable")]
        order = pool[np.random.default_rng(seed).permutation(len(pool))]
        return {
            "train": np.sort(order[:MAML_TRAIN]),
            "val": np.sort(order[MAML_TRAIN : MAML_TRAIN + MAML_VAL]),
            "test": np.sort(order[MAML_TRAIN + MAML_VAL :]),
        }
    return {k: np.flatnonzero(m) for k, m in masks.items()}


def omniglot(
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    split: str = "vinyals",
    augment: str = "none",
    image_size: int | None = 28,
    root: str | None = None,
    archives: Sequence[str] | None = None,
    cache_dir: str | None = None,
    source: str = "files",
    seed: int = 0,
    data_dir: str | None = None,
    train_ways: int | None = None,
    train_shots: int | None = None,
    train_queries: int | None = None,
) -> TaskSource:
    """N-way K-shot Omniglot episodes sampled on device.

    Args:
      ways, shots, queries: N classes, K support and Q query images per class.
      split: ``"vinyals"``, ``"background_evaluation"``, ``"maml"`` or ``"subsets"``.
      augment: ``"none"``, ``"rotate_classes"`` (ProtoNets/Vinyals) or ``"rotate_tasks"`` (MAML).
      image_size: side of the square images (28 by default; ``None`` keeps 105).
      root: folder with the archives (default ``$METAJAX_DATA/omniglot``).
      archives: archives to load (default: those the split is defined on).
      cache_dir: decoded-array cache (default ``$XDG_CACHE_HOME/metajax``).
      source: ``"files"`` or ``"tfds"`` (a prepared tfds ``omniglot``, read without TensorFlow).
      seed: permutation seed of the ``"maml"`` split.
      data_dir: tfds data folder for ``source="tfds"``.

    Returns:
      ``TaskSource`` of episodes with ``x`` ``(ways*shots, size, size, 1)``
      float32 (ink 1.0) and labels ``(ways*shots,)`` int32; ``info`` holds the
      class split lists and archive checksums.

    Example::

      source = omniglot(ways=5, shots=1, split="subsets", root="../shared/data")
      task = source.sample(jax.random.key(0), "train")
    """
    if split not in SPLITS:
        raise DataError(f"omniglot: unknown split {split!r}{close_matches(split, SPLITS)} Known: {', '.join(SPLITS)}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"omniglot: seed must be an int, got {seed!r}.")
    names = list(SPLIT_ARCHIVES[split]) if archives is None else [archives] if isinstance(archives, str) else archives
    data = load_omniglot(names, root=root, image_size=image_size, cache_dir=cache_dir, source=source, data_dir=data_dir)
    splits = split_classes(data, split, seed)
    info = {
        "split": split,
        "source": source,
        "image_size": image_size,
        "seed": seed,
        "archives": data.checksums,
        "ink": "1.0 (background 0.0)",
    }
    return episode_source(
        data.images,
        splits,
        ways,
        shots,
        queries,
        augment,
        class_names=data.names,
        name="omniglot",
        info=info,
        train=(train_ways, train_shots, train_queries),
    )
