"""The on-device episode sampler: checked against what an N-way K-shot episode must be.

Each synthetic image carries its identity (class, index) in its pixel values
and its orientation in a marker pixel, so every episode can be decoded back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.data.episodes import episode_source, sample_episode
from metajax.data.source import sample_tasks
from metajax.errors import DataError

CLASSES, PER_CLASS, SIDE = 12, 6, 4
SPLITS = {"train": [0, 2, 3, 5, 7, 8], "val": [1, 4, 9], "test": [6, 10, 11]}
WAYS, SHOTS, QUERIES, TASKS = 3, 2, 3, 64


def identity_images() -> np.ndarray:
    """``(CLASSES, PER_CLASS, SIDE, SIDE, 1)``: image (c, i) is ``value(c, i)`` everywhere but 0 at pixel (0, 0)."""
    ids = np.arange(CLASSES * PER_CLASS).reshape(CLASSES, PER_CLASS) + 1
    images = np.broadcast_to(
        (ids / (CLASSES * PER_CLASS + 1))[..., None, None, None], (CLASSES, PER_CLASS, SIDE, SIDE, 1)
    )
    images = np.array(images, np.float32)
    images[:, :, 0, 0, 0] = 0.0
    return images


def decode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images ``(n, SIDE, SIDE, 1)`` -> class ``(n,)``, index within class ``(n,)``, rotation ``(n,)`` (0..3)."""
    flat_id = np.rint(x.max(axis=(1, 2, 3)) * (CLASSES * PER_CLASS + 1)).astype(int) - 1
    corners = [x[:, 0, 0, 0], x[:, -1, 0, 0], x[:, -1, -1, 0], x[:, 0, -1, 0]]  # where rot90 k=0..3 moves (0, 0)
    rotation = np.argmin(np.stack(corners, axis=1), axis=1)
    return flat_id // PER_CLASS, flat_id % PER_CLASS, rotation


@pytest.fixture(scope="module")
def batches() -> dict[str, dict[str, object]]:
    """One compiled batch sampler per augmentation, and its output for a fixed key."""
    images = identity_images()
    out = {}
    for augment in ("none", "rotate_classes", "rotate_tasks"):
        source = episode_source(images, SPLITS, WAYS, SHOTS, QUERIES, augment, name="toy")
        sample = jax.jit(lambda key, source=source: sample_tasks(source, source.init(), key, TASKS, "train"))
        out[augment] = {"source": source, "sample": sample, "batch": jax.device_get(sample(jax.random.key(0)))}
    return out


def episodes(batch) -> list[dict[str, np.ndarray]]:
    result = []
    for t in range(TASKS):
        sc, si, sr = decode(batch.support.x[t])
        qc, qi, qr = decode(batch.query.x[t])
        result.append(
            {
                "sy": batch.support.y[t],
                "qy": batch.query.y[t],
                "sc": sc,
                "si": si,
                "sr": sr,
                "qc": qc,
                "qi": qi,
                "qr": qr,
            }
        )
    return result


@pytest.mark.parametrize("augment", ["none", "rotate_classes", "rotate_tasks"])
def test_every_episode_is_n_way_k_shot_from_the_split(batches, augment):
    batch = batches[augment]["batch"]
    assert batch.support.x.shape == (TASKS, WAYS * SHOTS, SIDE, SIDE, 1)
    assert batch.query.x.shape == (TASKS, WAYS * QUERIES, SIDE, SIDE, 1)
    assert batch.support.x.dtype == np.float32 and batch.support.y.dtype == np.int32
    for e in episodes(batch):
        assert sorted(np.unique(e["sy"])) == list(range(WAYS))
        assert sorted(np.unique(e["qy"])) == list(range(WAYS))
        classes = []
        for label in range(WAYS):
            s, q = e["sy"] == label, e["qy"] == label
            assert s.sum() == SHOTS and q.sum() == QUERIES
            # one (class, rotation) per label, the same in support and query
            pairs = set(zip(e["sc"][s], e["sr"][s], strict=True)) | set(zip(e["qc"][q], e["qr"][q], strict=True))
            assert len(pairs) == 1
            ((cls, rot),) = pairs
            assert cls in SPLITS["train"]
            if augment == "none":
                assert rot == 0
            classes.append((cls, rot) if augment == "rotate_classes" else cls)
            # no image in both support and query, none twice
            drawn = list(e["si"][s]) + list(e["qi"][q])
            assert len(set(drawn)) == SHOTS + QUERIES
        assert len(set(classes)) == WAYS


def test_labels_are_assigned_in_random_order(batches):
    batch = batches["none"]["batch"]
    first_labels = {int(y[0]) for y in batch.support.y}
    assert first_labels == set(range(WAYS))
    # the same class gets different labels in different episodes
    labels_of_class: dict[int, set[int]] = {}
    for e in episodes(batch):
        for cls, label in zip(e["sc"], e["sy"], strict=True):
            labels_of_class.setdefault(int(cls), set()).add(int(label))
    assert all(len(v) > 1 for v in labels_of_class.values())
    assert set(labels_of_class) == set(SPLITS["train"])  # every train class is drawn in 64 episodes


def test_rotations_behave(batches):
    rotate_classes = episodes(batches["rotate_classes"]["batch"])
    rotate_tasks = episodes(batches["rotate_tasks"]["batch"])
    for eps in (rotate_classes, rotate_tasks):
        assert set(np.concatenate([e["sr"] for e in eps]).tolist()) == {0, 1, 2, 3}
        # rotated images are exact rot90s of the stored image
    # "rotate_classes": two rotations of one class may share an episode as two classes
    assert any(len(set(e["sc"])) < WAYS for e in rotate_classes)
    # "rotate_tasks": classes stay distinct; rotations differ between classes of one episode
    assert all(len(set(e["sc"])) == WAYS for e in rotate_tasks)
    assert any(len(set(e["sr"])) > 1 for e in rotate_tasks)
    # the rotation is jnp.rot90 of the stored image
    images = identity_images()
    batch = batches["rotate_tasks"]["batch"]
    c, i, r = decode(batch.support.x[0])
    for n in range(WAYS * SHOTS):
        np.testing.assert_array_equal(batch.support.x[0][n], np.rot90(images[c[n], i[n]], r[n], axes=(0, 1)))


def test_rotate_classes_offers_four_times_the_classes():
    images = identity_images()
    source = episode_source(images, SPLITS, ways=12, shots=1, queries=1, augment="rotate_classes")  # 3 x 4
    batch = jax.device_get(jax.jit(lambda k: sample_tasks(source, source.init(), k, 4, "val"))(jax.random.key(1)))
    for t in range(4):
        c, _, r = decode(batch.support.x[t])
        assert set(zip(c.tolist(), r.tolist(), strict=True)) == {
            (cls, rot) for cls in SPLITS["val"] for rot in range(4)
        }


def test_splits_keys_and_determinism(batches):
    source, sample = batches["none"]["source"], batches["none"]["sample"]
    a, b = sample(jax.random.key(0)), sample(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(sample(jax.random.key(1)).support.x, a.support.x)
    for split in ("val", "test"):
        batch = jax.device_get(
            jax.jit(lambda k, split=split: sample_tasks(source, source.init(), k, 8, split))(jax.random.key(3))
        )
        assert set(decode(batch.support.x.reshape(-1, SIDE, SIDE, 1))[0].tolist()) <= set(SPLITS[split])


def test_source_contract(batches):
    source = batches["none"]["source"]
    assert source.output_dim == WAYS and source.loss == "cross_entropy"
    assert source.info["classes"] == {k: [str(i) for i in v] for k, v in SPLITS.items()}
    assert source.info["num_classes"] == {"train": 6, "val": 3, "test": 3}
    task = jax.eval_shape(lambda k: source.sample(source.init(), k, "val"), jax.random.key(0))
    jax.tree.map(
        lambda e, t: (e.shape, e.dtype) == (t.shape, t.dtype) or pytest.fail("example mismatch"), source.example, task
    )
    named = episode_source(identity_images(), SPLITS, 2, 1, 1, class_names=[f"c{i}" for i in range(CLASSES)])
    assert named.info["classes"]["test"] == ["c6", "c10", "c11"]


def test_uint8_images_become_floats_in_unit_interval():
    images = (identity_images() * 255).round().astype(np.uint8)
    task = jax.jit(lambda k: sample_episode(k, jnp.asarray(images), jnp.arange(CLASSES), CLASSES, 1, 1))(
        jax.random.key(0)
    )
    assert task.support.x.dtype == jnp.float32
    assert 0.0 <= float(task.support.x.min()) and float(task.support.x.max()) <= 1.0
    assert float(task.support.x.max()) > 0.9


def one_line_error(fn, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_impossible_requests_fail_before_compilation():
    images = identity_images()
    one_line_error(lambda: episode_source(images, SPLITS, ways=4, queries=1), "4-way", "split 'val' has 3", "data.ways")
    one_line_error(
        lambda: episode_source(images, SPLITS, ways=13, queries=1, augment="rotate_classes"), "split 'val' has 12"
    )
    one_line_error(lambda: episode_source(images, SPLITS, ways=2, shots=4, queries=3), "4 + 3 = 7", "has 6")
    one_line_error(lambda: episode_source(images, SPLITS, ways=0, queries=1), "ways must be an int >= 1, got 0")
    one_line_error(lambda: episode_source(images, SPLITS, ways=2, queries=-1), "queries must be an int >= 1")
    one_line_error(lambda: episode_source(images, SPLITS, ways=2, queries=1, augment="flip"), "unknown augment 'flip'")
    one_line_error(lambda: episode_source(images, {"train": [0]}, ways=1, queries=1), "splits lack val, test")
    one_line_error(lambda: episode_source(images, {**SPLITS, "val": [1, 99]}, ways=1, queries=1), "outside 0..11")
    one_line_error(
        lambda: episode_source(images[:, :, :, :3], SPLITS, ways=2, queries=1, augment="rotate_tasks"), "4x3"
    )
    # traced sampling: the check runs at trace time, before XLA sees anything
    ids = jnp.asarray(SPLITS["val"])
    traced = jax.jit(lambda k: sample_episode(k, jnp.asarray(images), ids, 4, 1, 1))
    one_line_error(lambda: traced.lower(jax.random.key(0)), "4-way", "has 3")


@pytest.mark.parametrize("placement", ["device", "host"])
def test_training_episodes_may_have_their_own_ways_shots_and_queries(placement):
    """ProtoNets train 30-way for 5-way tests: the train split gets train_*; val and test keep ways/shots/queries."""
    from metajax.data.streamed import host_episode_source

    images = identity_images()
    if placement == "device":
        source = episode_source(images, SPLITS, ways=2, shots=1, queries=2, train=(5, 2, None))
        draw = {
            s: jax.device_get(sample_tasks(source, source.init(), jax.random.key(1), 8, s)) for s in ("train", "test")
        }
    else:
        source = host_episode_source(list(images), SPLITS, ways=2, shots=1, queries=2, train=(5, 2, None))
        draw = {s: source.host_sample((1,), s, 8) for s in ("train", "test")}
    assert source.output_dim == 5 and source.info["train_ways"] == 5 and source.info["train_shots"] == 2
    assert "train_queries" not in source.info and source.info["ways"] == 2
    assert draw["train"].support.x.shape[1:] == source.example_for("train").support.x.shape == (10, SIDE, SIDE, 1)
    assert draw["train"].query.y.shape == (8, 10) and sorted(set(draw["train"].support.y[0])) == list(range(5))
    assert draw["test"].support.x.shape[1:] == source.example.support.x.shape == (2, SIDE, SIDE, 1)
    assert source.example_for("val") is source.example
    for t in range(8):  # every train episode: 5 distinct classes, none in both support and query
        sc, si, _ = decode(draw["train"].support.x[t])
        qc, qi, _ = decode(draw["train"].query.x[t])
        assert len(set(sc)) == 5 and not set(zip(sc, si, strict=True)) & set(zip(qc, qi, strict=True))
    same = episode_source(images, SPLITS, ways=2, shots=1, queries=2, train=(2, None, None))
    assert same.train_example is None and same.output_dim == 2


def test_an_impossible_training_shape_names_its_key():
    images = identity_images()
    one_line_error(
        lambda: episode_source(images, SPLITS, ways=2, queries=1, train=(7, None, None)),
        "7-way",
        "split 'train' has 6",
        "data.train_ways",
    )
    one_line_error(
        lambda: episode_source(images, SPLITS, ways=2, queries=1, train=(None, 4, 3)),
        "4 + 3 = 7",
        "data.train_shots or data.train_queries",
    )
