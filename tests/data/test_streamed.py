"""Host-sampled episodes: the on-device sampler's rules, classes of any size, batches a pure function of the seed."""

from __future__ import annotations

import numpy as np
import pytest

from metajax.data.streamed import host_episode_source
from metajax.errors import DataError

SIZE = 3


def classes(counts):
    """Class ``c`` image ``i`` is filled with the id ``100 * c + i`` (float32, exact), so a pixel names it."""
    return [
        np.full((n, SIZE, SIZE, 1), 0, np.float32) + (100 * c + np.arange(n))[:, None, None, None]
        for c, n in enumerate(counts)
    ]


COUNTS = [4, 9, 5, 4, 7, 4, 6, 4, 4, 5, 4, 4, 4, 4]  # uneven, as tieredImageNet's
SPLITS = {"train": range(6), "val": [6, 7, 8, 9], "test": [10, 11, 12, 13]}


def ids(x):
    return np.asarray(x)[..., 0, 0, 0].astype(int)


def test_episodes_follow_the_samplers_rules():
    source = host_episode_source(classes(COUNTS), SPLITS, ways=3, shots=2, queries=2)
    assert source.on_host and source.sample is None
    batch = source.host_sample((0, 0, 0), "train", 50)
    assert batch.support.x.shape == (50, 6, SIZE, SIZE, 1) and batch.support.x.dtype == np.float32
    assert batch.query.y.shape == (50, 6) and batch.query.y.dtype == np.int32
    for t in range(50):
        s, q = ids(batch.support.x[t]), ids(batch.query.x[t])
        assert not set(s) & set(q), "an image is in both support and query"
        assert sorted(batch.support.y[t][::2]) == [0, 1, 2]  # each label once per class, rows grouped by class
        for label in range(3):
            chosen = {i // 100 for i in s[batch.support.y[t] == label]} | {
                i // 100 for i in q[batch.query.y[t] == label]
            }
            assert len(chosen) == 1 and chosen.pop() in SPLITS["train"]
        assert len({i // 100 for i in s}) == 3


def test_every_image_of_a_large_class_is_drawn():
    """The dense on-device array would keep 4 images per class; the host path keeps them all."""
    source = host_episode_source(classes(COUNTS), SPLITS, ways=3, shots=1, queries=1)
    batch = source.host_sample((1,), "train", 200)
    seen = set(ids(batch.support.x).ravel()) | set(ids(batch.query.x).ravel())
    assert {100 * 1 + i for i in range(9)} <= seen


def test_batches_are_a_pure_function_of_the_seed():
    source = host_episode_source(classes(COUNTS), SPLITS, ways=2, shots=1, queries=1, augment="rotate_tasks")
    a, b, c = (source.host_sample(seed, "test", 4) for seed in ((0, 2, 5), (0, 2, 5), (0, 2, 6)))
    np.testing.assert_array_equal(a.support.x, b.support.x)
    np.testing.assert_array_equal(a.query.y, b.query.y)
    assert not np.array_equal(a.query.x, c.query.x)


def test_rotations_as_classes_multiply_the_split():
    images = [
        np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1) * 0 + np.array([[0, 1], [2, 3]], np.uint8)[..., None]
        for n in (3, 3, 3)
    ]
    source = host_episode_source(
        images, {"train": [0], "val": [1], "test": [2]}, ways=4, shots=1, queries=1, augment="rotate_classes"
    )
    batch = source.host_sample((0,), "train", 1)  # one class, its 4 rotations: 4 different patterns
    corners = {tuple(np.round(x[..., 0].ravel() * 255).astype(int)) for x in batch.support.x[0]}
    assert len(corners) == 4


@pytest.mark.parametrize(
    "request_, match",
    [
        (dict(ways=7), "7-way episodes need 7 classes but split 'train' has 6"),
        (dict(shots=3, queries=2), "shots \\+ queries = 3 \\+ 2 = 5 images per class, but each class has 4"),
        (dict(augment="flip"), "unknown augment 'flip'"),
    ],
)
def test_impossible_requests_fail_before_sampling(request_, match):
    with pytest.raises(DataError, match=match):
        host_episode_source(classes(COUNTS), SPLITS, **{"ways": 2, "shots": 1, "queries": 1, **request_})


def test_uint8_images_convert_bit_for_bit_as_on_device():
    """The host batch must equal what the on-device sampler gives for the same pixels (XLA:CPU's x / 255 != numpy's)."""
    import jax
    import jax.numpy as jnp

    from metajax.data.streamed import _to_unit

    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    on_device = np.asarray(jax.jit(lambda u: u.astype(jnp.float32) / 255.0)(pixels))
    np.testing.assert_array_equal(_to_unit(pixels), on_device)
