"""Training-time image augmentation: each op does what torchvision's does, per image, from its key alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.core.tasks import Split, Task
from metajax.data.augment import color_jitter, random_crop, random_flip, task_augmentation
from metajax.errors import DataError

N, SIDE = 32, 6


def images(channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.05, 0.95, (N, SIDE, SIDE, channels)).astype(np.float32)


def test_crop_is_a_window_of_the_zero_padded_image_at_a_random_offset():
    x, padding = images(), 2
    out = np.asarray(jax.jit(lambda k, x: random_crop(k, x, padding))(jax.random.key(0), x))
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = []
    for i in range(N):
        found = [
            (a, b)
            for a in range(2 * padding + 1)
            for b in range(2 * padding + 1)
            if np.array_equal(out[i], padded[i, a : a + SIDE, b : b + SIDE])
        ]
        assert found, f"image {i} is not a window of its padded input"
        offsets.append(found[0])
    assert len(set(offsets)) > 5, "offsets should vary between images"


def test_flip_mirrors_about_half_the_images():
    x = images()
    out = np.asarray(random_flip(jax.random.key(1), x))
    flipped = [np.array_equal(out[i], x[i, :, ::-1]) for i in range(N)]
    assert all(f or np.array_equal(out[i], x[i]) for i, f in enumerate(flipped))
    assert 6 <= sum(flipped) <= 26


def test_color_jitter_on_gray_images_is_a_bounded_brightness_change():
    """A uniform gray image has no contrast or saturation to change: only brightness, a factor in [0.6, 1.4]."""
    levels = np.linspace(0.1, 0.6, N, dtype=np.float32)
    x = np.broadcast_to(levels[:, None, None, None], (N, SIDE, SIDE, 3)).copy()
    out = np.asarray(color_jitter(jax.random.key(2), x, 0.4))
    ratio = out[:, 0, 0, 0] / levels
    np.testing.assert_allclose(out, out[:, :1, :1, :1] * np.ones_like(out), rtol=1e-6)
    assert np.all(ratio >= 0.6 - 1e-5) and np.all(ratio <= 1.4 + 1e-5) and np.ptp(ratio) > 0.2
    colourful = np.asarray(color_jitter(jax.random.key(3), images(), 0.4))
    assert colourful.min() >= 0.0 and colourful.max() <= 1.0
    np.testing.assert_allclose(color_jitter(jax.random.key(3), images(), 1e-7), images(), atol=1e-5)


def test_task_augmentation_touches_images_not_labels_and_checks_its_spec():
    x = jnp.asarray(images())
    task = Task(Split(x[:10], jnp.arange(10)), Split(x[10:], jnp.arange(22)))
    augment = task_augmentation(["crop:2", "color:0.4", "flip"], (SIDE, SIDE, 3))
    out = jax.jit(augment)(jax.random.key(4), task)
    assert not np.allclose(out.support.x, task.support.x) and not np.allclose(out.query.x, task.query.x)
    np.testing.assert_array_equal(out.query.y, task.query.y)
    assert task_augmentation(None, (SIDE, SIDE, 3)) is None and task_augmentation([], (SIDE, SIDE, 3)) is None
    for bad in (["crop:0"], ["crop:6"], ["color:2"], ["flop"], ["flip:1"], "flip"):
        with pytest.raises(DataError, match="image_augment") as error:
            task_augmentation(bad, (SIDE, SIDE, 3), "toy")
        assert "\n" not in str(error.value)
