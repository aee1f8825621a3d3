"""tieredImageNet reader on pickles generated in the published layout (351 / 97 / 160 classes, tiny PNGs)."""

from __future__ import annotations

import io
import pickle

import jax
import numpy as np
import pytest
from PIL import Image

from metajax.data import tieredimagenet as ti
from metajax.errors import DataError

COUNTS = {"train": 351, "val": 97, "test": 160}
CATEGORIES = {"train": 20, "val": 6, "test": 8}
SIZE = 4


def png(value: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), value % 256, np.uint8)).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), np.uint8)  # the release stores cv2.imencode arrays


def write_split(root, split: str, per_class, offset: int) -> None:
    """``{split}_images_png.pkl`` (list of PNG byte arrays) and ``{split}_labels.pkl`` as Ren et al. publish them."""
    classes = COUNTS[split]
    images, specific, general = [], [], []
    for c in range(classes):
        for _ in range(per_class(c)):
            images.append(png(offset + c))
            specific.append(c)
            general.append(c % CATEGORIES[split])
    labels = {
        "label_specific": np.array(specific),
        "label_general": np.array(general),
        "label_specific_str": [f"n{offset + c:08d}" for c in range(classes)],
        "label_general_str": [f"{split}_category{g}" for g in range(CATEGORIES[split])],
    }
    with open(root / f"{split}_images_png.pkl", "wb") as f:
        pickle.dump(images, f)
    with open(root / f"{split}_labels.pkl", "wb") as f:
        pickle.dump(labels, f)


def write_all(root, per_class=lambda c: 2 + c % 2) -> None:
    write_split(root, "train", per_class, 0)
    write_split(root, "val", per_class, 351)
    write_split(root, "test", per_class, 448)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiered")
    write_all(root)
    return root


def test_published_counts_and_trimming(data_dir):
    source = ti.tieredimagenet(ways=5, shots=1, queries=1, root=str(data_dir), image_size=None)
    assert source.info["num_classes"] == COUNTS
    assert source.info["num_categories"] == CATEGORIES
    # classes hold 2 or 3 images; the dense array keeps 2 of each: 304 odd classes lose one
    assert source.info["images_per_class"] == 2 and source.info["dropped_images"] == 175 + 48 + 80
    task = jax.jit(lambda k: source.sample(source.init(), k, "test"))(jax.random.key(0))
    ids = np.round(np.asarray(task.support.x)[:, 0, 0, 0] * 255).astype(int)
    assert task.support.x.shape == (5, SIZE, SIZE, 3) and set(ids) <= {(448 + c) % 256 for c in range(160)}


def test_host_placement_keeps_every_image_and_gives_the_device_batch_pytree(data_dir):
    source = ti.tieredimagenet(ways=5, shots=1, queries=1, root=str(data_dir), image_size=None, placement="host")
    assert source.on_host and source.info["dropped_images"] == 0
    assert source.info["images"] == sum(2 + c % 2 for n in COUNTS.values() for c in range(n))
    batch = source.host_sample((0, 1, 0), "val", 3)
    on_device = ti.tieredimagenet(ways=5, shots=1, queries=1, root=str(data_dir), image_size=None)
    device = jax.vmap(lambda k: on_device.sample(on_device.init(), k, "val"))(jax.random.split(jax.random.key(0), 3))
    assert jax.tree_util.tree_structure(batch) == jax.tree_util.tree_structure(device)
    for ours, theirs in zip(jax.tree_util.tree_leaves(batch), jax.tree_util.tree_leaves(device), strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    for t in range(3):  # each label is one class in support and query
        s = np.round(batch.support.x[t, :, 0, 0, 0] * 255).astype(int)
        q = np.round(batch.query.x[t, :, 0, 0, 0] * 255).astype(int)
        by_label = {int(y): int(v) for y, v in zip(batch.support.y[t], s, strict=True)}
        assert all(by_label[int(y)] == v for y, v in zip(batch.query.y[t], q, strict=True))
    with pytest.raises(DataError, match="unknown placement 'gpu'"):
        ti.tieredimagenet(root=str(data_dir), placement="gpu")


def one_line(error, *parts):
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_errors(tmp_path):
    with pytest.raises(DataError) as error:
        ti.load_tieredimagenet(tmp_path)
    one_line(error, "train_labels.pkl", "not found", "few-shot-ssl-public")
    write_all(tmp_path, per_class=lambda c: 1)
    (tmp_path / "val_images_png.pkl").write_bytes(b"junk")
    with pytest.raises(DataError) as error:
        ti.load_tieredimagenet(tmp_path)
    one_line(error, "val_images_png.pkl", "corrupt")
    with open(tmp_path / "val_images_png.pkl", "wb") as f:
        pickle.dump([b"not a png"] * 97, f)
    with pytest.raises(DataError) as error:
        ti.load_tieredimagenet(tmp_path)
    one_line(error, "image 0 of", "val_images_png.pkl", "not a readable PNG")
    with open(tmp_path / "val_labels.pkl", "wb") as f:
        pickle.dump({"label_specific": [0]}, f)
    with pytest.raises(DataError) as error:
        ti.load_tieredimagenet(tmp_path)
    one_line(error, "val_labels.pkl", "label_general")
