"""Omniglot through tensorflow-datasets' ``omniglot`` builder, read without TensorFlow.

``tensorflow_datasets`` is imported here only, when this source is used.
``tfds.data_source`` reads a prepared array_record dataset with no
TensorFlow; preparing it (``tfds build omniglot``) needs TensorFlow, internet
and all four zips, once, on any machine. tfds's splits map to the published
archives: ``train`` = images_background, ``test`` = images_evaluation,
``small1`` / ``small2`` = the minimal archives. Its images are
105x105x3 ``uint8`` at 0/255 with ink 0; they are normalised to the same
arrays as the file reader's (ink 255, gray, resized). tfds does not keep the
drawer, so ``drawers`` is 0, and images of a character keep tfds's order.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from metajax.errors import DataError

TFDS_SPLITS = {
    "images_background": "train",
    "images_evaluation": "test",
    "images_background_small1": "small1",
    "images_background_small2": "small2",
}


def _tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"omniglot: source='tfds' needs tensorflow-datasets ({e}); pip install 'metajax[tfds]' "
            "or use source='files' with the zips."
        ) from None
    return tfds


def load_archive(
    name: str,
    *,
    image_size: int | None = 28,
    resample: str = "lanczos",
    data_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """One archive's characters from tfds, as the file reader returns them.

    Returns:
      ``{"images": (characters, drawings, size, size, 1) uint8 (ink 255),
      "names": (characters,) "Alphabet/characterNN", "ids": (characters,) int32,
      "drawers": (characters, drawings) int32 zeros}``.

    Raises:
      DataError: tfds missing, the dataset not prepared, or characters with unequal drawing counts.
    """
    from metajax.data.omniglot import _stack, preprocess  # shared with the file reader

    tfds = _tfds()
    split = TFDS_SPLITS[name]
    try:
        source = tfds.data_source("omniglot", split=split, data_dir=None if data_dir is None else os.fspath(data_dir))
        alphabets = tfds.builder("omniglot", data_dir=data_dir).info.features["alphabet"].names
    except Exception as e:  # tfds raises many types for a missing or unprepared dataset
        raise DataError(
            f"omniglot: tfds cannot read omniglot split {split!r} ({' '.join(str(e).split())[:200]}); prepare it once "
            "with `tfds build omniglot` (needs TensorFlow and internet) or use source='files'."
        ) from None
    records: dict[tuple[str, str], list] = {}
    for index in range(len(source)):
        record = source[index]
        key = (alphabets[int(record["alphabet"])], f"character{int(record['alphabet_char_id']) + 1:02d}")
        image = preprocess(np.asarray(record["image"], np.uint8), image_size, resample)
        drawings = records.setdefault(key, [])
        drawings.append((len(drawings), int(record["label"]) + 1, image))
    arrays = _stack(records, f"tfds omniglot split {split!r}")
    arrays["drawers"] = np.zeros_like(arrays["drawers"])
    return arrays
