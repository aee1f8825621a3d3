"""CIFAR-FS and FC100 from tfds ``cifar100`` under ``tfds.testing.mock_data`` (read through ``tfds.data_source``)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from metajax.data import cifarfs as cf
from metajax.errors import DataError

tfds = pytest.importorskip("tensorflow_datasets")


def records(per_class: int = 1) -> list[dict]:
    """Records with tfds cifar100's features; pixels hold the fine label so episodes are traceable."""
    out = []
    for label, name in enumerate(cf.FINE):
        coarse = cf.COARSE.index(SUPERCLASS[name])
        for i in range(per_class):
            image = np.full((32, 32, 3), label, np.uint8)
            out.append({"id": f"{label}-{i}", "image": image, "label": label, "coarse_label": coarse})
    return out


# CIFAR-100's published fine -> coarse map (the dataset's meta file), written out to test the FC100 split.
SUPERCLASS_LISTS = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
SUPERCLASS = {fine: coarse for coarse, fines in SUPERCLASS_LISTS.items() for fine in fines.split()}


def test_class_lists_are_a_partition_of_cifar100():
    assert len(cf.FINE) == 100 == len(SUPERCLASS) and sorted(cf.FINE) == cf.FINE and len(cf.COARSE) == 20
    splits = cf.class_splits("cifarfs")
    assert {s: len(v) for s, v in splits.items()} == {"train": 64, "val": 16, "test": 20}
    assert sorted(sum(splits.values(), [])) == cf.FINE
    fc = cf.class_splits("fc100", SUPERCLASS)
    assert {s: len(v) for s, v in fc.items()} == {"train": 60, "val": 20, "test": 20}
    assert sorted(sum(fc.values(), [])) == cf.FINE
    for split, names in fc.items():  # FC100 splits by superclass: no superclass crosses splits
        assert {SUPERCLASS[c] for c in names} == set(cf.FC100_SUPERCLASSES[split])


@pytest.mark.parametrize("benchmark", ["cifarfs", "fc100"])
def test_mock_tfds_episodes_come_from_the_split(benchmark):
    with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: records()):
        source = getattr(cf, benchmark)(ways=5, shots=1, queries=1)
    # train and test tfds splits both return the mocked records: 2 images per class
    assert source.info["num_classes"] == cf.CLASS_COUNTS[benchmark]
    assert source.info["images_per_class"] == 2 and source.example.support.x.shape == (5, 32, 32, 3)
    task = jax.jit(lambda k: source.sample(source.init(), k, "test"))(jax.random.key(0))
    labels = np.round(np.asarray(task.support.x)[:, 0, 0, 0] * 255).astype(int)
    wanted = set(source.info["classes"]["test"])
    assert {cf.FINE[i] for i in labels} <= wanted and len(set(labels)) == 5


def test_tfds_random_mock_reads_through_data_source():
    with tfds.testing.mock_data(num_examples=4):  # tfds's own random records
        by_class, superclass = cf.load_cifar100(image_size=8)
    assert sum(len(v) for v in by_class.values()) == 8 and all(v.shape[1:] == (8, 8, 3) for v in by_class.values())
    assert set(superclass) == set(by_class)


def test_unprepared_dataset_is_one_line(tmp_path):
    with pytest.raises(DataError) as error:
        cf.load_cifar100(data_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "tfds build cifar100" in message and "cifar100" in message
