"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018), built from tfds's ``cifar100``.

Both re-split CIFAR-100's 100 classes (600 32x32 RGB images each: tfds's
``train`` and ``test`` splits together) into few-shot class splits:

- CIFAR-FS: 64 / 16 / 20 classes drawn at random by Bertinetto et al.
  (the lists below);
- FC100: by superclass, so that train and test classes are less alike:
  12 / 4 / 4 superclasses = 60 / 20 / 20 classes.

The lists were checked against torchmeta's copies of the authors' split files
(``torchmeta/datasets/assets/cifar100/{cifar-fs,fc100}``); see
docs/benchmarks-datasets.md. tfds is read with ``tfds.data_source`` (array_record,
no TensorFlow); prepare the dataset once with ``tfds build cifar100``
(needs TensorFlow and internet, on any machine).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from metajax.data import images as image_lib
from metajax.data.episodes import episode_source
from metajax.data.miniimagenet import check_counts as check_split_counts
from metajax.data.miniimagenet import stack_classes
from metajax.data.source import SPLITS, TaskSource
from metajax.errors import DataError

# CIFAR-100's label names in label-index order (fine_label_names.txt / coarse_label_names.txt, alphabetical).
FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees "
    "vehicles_1 vehicles_2"
).split()

# Bertinetto et al. (2019), CIFAR-FS: the authors' val.txt and test.txt; train is the other 64 classes.
CIFAR_FS_VAL = (
    "beaver otter flatfish shark lamp television beetle butterfly sea camel cattle crab crocodile maple_tree "
    "motorcycle tractor"
).split()
CIFAR_FS_TEST = (
    "whale poppy rose sweet_pepper telephone bed table wardrobe leopard plain chimpanzee fox snail worm baby man "
    "woman bicycle pickup_truck rocket"
).split()
CIFAR_FS_TRAIN = [c for c in FINE if c not in CIFAR_FS_VAL and c not in CIFAR_FS_TEST]

# Oreshkin et al. (2018), FC100: superclasses per split.
FC100_SUPERCLASSES = {
    "train": (
        "fish flowers food_containers fruit_and_vegetables household_electrical_devices household_furniture "
        "large_man-made_outdoor_things large_natural_outdoor_scenes reptiles trees vehicles_1 vehicles_2"
    ).split(),
    "val": "large_carnivores large_omnivores_and_herbivores non-insect_invertebrates small_mammals".split(),
    "test": "aquatic_mammals insects medium_mammals people".split(),
}
CLASS_COUNTS = {"cifarfs": {"train": 64, "val": 16, "test": 20}, "fc100": {"train": 60, "val": 20, "test": 20}}
WHERE = (
    "prepare tfds's cifar100 once with `tfds build cifar100` (needs TensorFlow and internet), then set data.data_dir"
)


def _tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"cifar100: needs tensorflow-datasets ({e}); pip install tensorflow-datasets.") from None
    return tfds


def load_cifar100(
    data_dir: str | os.PathLike | None = None, image_size: int | None = None, resample: str = "bilinear"
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All 60,000 CIFAR-100 images by fine class: ``({class: (600, s, s, 3) uint8}, {class: superclass})``.

    Raises:
      DataError: tfds missing or ``cifar100`` not prepared (one line, saying how to prepare it).
    """
    tfds = _tfds()
    by_class: dict[int, list[np.ndarray]] = {}
    coarse_of: dict[int, int] = {}
    for split in ("train", "test"):
        try:
            source = tfds.data_source(
                "cifar100", split=split, data_dir=None if data_dir is None else os.fspath(data_dir), download=False
            )
            count = len(source)
        except Exception as e:  # tfds raises many types for a missing or unprepared dataset
            raise DataError(
                f"cifar100: tfds cannot read cifar100 split {split!r} ({' '.join(str(e).split())[:200]}); {WHERE}."
            ) from None
        for index in range(count):
            record = source[index]
            label, coarse = int(record["label"]), int(record["coarse_label"])
            if not 0 <= label < len(FINE) or not 0 <= coarse < len(COARSE):
                raise DataError(f"cifar100: record {index} of split {split!r} has label {label}/{coarse}; rebuild it.")
            image = np.asarray(record["image"], np.uint8)
            by_class.setdefault(label, []).append(image_lib.resize(image, image_size, resample))
            coarse_of[label] = coarse
    images = {FINE[k]: np.stack(v) for k, v in sorted(by_class.items())}
    return images, {FINE[k]: COARSE[c] for k, c in coarse_of.items()}


def class_splits(benchmark: str, superclass: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Fine class names per split for ``"cifarfs"`` or ``"fc100"`` (FC100 needs ``{class: superclass}``)."""
    if benchmark == "cifarfs":
        return {"train": CIFAR_FS_TRAIN, "val": CIFAR_FS_VAL, "test": CIFAR_FS_TEST}
    if benchmark == "fc100":
        if superclass is None:
            raise DataError("fc100: the class -> superclass map is needed to split by superclass.")
        return {s: [c for c in FINE if superclass.get(c) in FC100_SUPERCLASSES[s]] for s in SPLITS}
    raise DataError(f"cifar100: unknown benchmark {benchmark!r}; use 'cifarfs' or 'fc100'.")


def _source(
    benchmark: str, ways, shots, queries, augment, image_size, data_dir, resample, check_counts, train, image_augment
) -> TaskSource:
    by_class, superclass = load_cifar100(data_dir, image_size, resample)
    names = class_splits(benchmark, superclass)
    present = {s: [c for c in names[s] if c in by_class] for s in SPLITS}
    if check_counts:
        check_split_counts(benchmark, {s: len(v) for s, v in present.items()}, CLASS_COUNTS[benchmark], "tfds cifar100")
    order = [c for s in SPLITS for c in present[s]]
    images, dropped = stack_classes({c: by_class[c] for c in order}, benchmark)
    starts = np.cumsum([0] + [len(present[s]) for s in SPLITS])
    splits = {s: np.arange(starts[i], starts[i + 1]) for i, s in enumerate(SPLITS)}
    info = {
        "split": benchmark,
        "source": "tfds cifar100 (train+test)",
        "image_size": image_size,
        "dropped_images": dropped,
    }
    return episode_source(
        images,
        splits,
        ways,
        shots,
        queries,
        augment,
        class_names=order,
        name=benchmark,
        info=info,
        train=train,
        image_augment=image_augment,
    )


def cifarfs(
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    augment: str = "none",
    image_size: int | None = None,
    data_dir: str | None = None,
    resample: str = "bilinear",
    check_counts: bool = True,
    train_ways: int | None = None,
    train_shots: int | None = None,
    train_queries: int | None = None,
    image_augment: Sequence[str] | None = None,
) -> TaskSource:
    """N-way K-shot CIFAR-FS episodes (64 / 16 / 20 classes), sampled on device.

    Args:
      ways, shots, queries: N, K, Q.
      augment: see :mod:`metajax.data.episodes`.
      image_size: resize side (``None`` keeps 32x32).
      data_dir: tfds data folder holding the prepared ``cifar100``.
      resample: PIL filter for resizing.
      check_counts: require the published class counts.
      train_ways, train_shots, train_queries: training episodes' N, K, Q where they differ from the
        test's (ProtoNets train 30-way, MetaOptNet 15-shot); ``None`` keeps ``ways``, ``shots``, ``queries``.
      image_augment: training-time image augmentation, e.g. ``["crop:4", "color:0.4", "flip"]``
        (MetaOptNet's; :mod:`metajax.data.augment`); ``None`` for none.

    Example::

      source = cifarfs(ways=5, shots=1)
      task = source.sample(jax.random.key(0), "train")  # support x (5, 32, 32, 3)
    """
    train = (train_ways, train_shots, train_queries)
    return _source(
        "cifarfs", ways, shots, queries, augment, image_size, data_dir, resample, check_counts, train, image_augment
    )


def fc100(
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    augment: str = "none",
    image_size: int | None = None,
    data_dir: str | None = None,
    resample: str = "bilinear",
    check_counts: bool = True,
    train_ways: int | None = None,
    train_shots: int | None = None,
    train_queries: int | None = None,
    image_augment: Sequence[str] | None = None,
) -> TaskSource:
    """N-way K-shot FC100 episodes (superclass split: 60 / 20 / 20 classes), sampled on device.

    Example::

      source = fc100(ways=5, shots=5)
      task = source.sample(jax.random.key(0), "test")  # classes of aquatic mammals, insects, ...
    """
    train = (train_ways, train_shots, train_queries)
    return _source(
        "fc100", ways, shots, queries, augment, image_size, data_dir, resample, check_counts, train, image_augment
    )
