"""Training-time image augmentation, on device, inside the compiled step.

The ImageNet-style protocols (MetaOptNet and most work after it) augment
every training image: a random crop of the zero-padded image, colour jitter
and a horizontal flip (torchvision's ``RandomCrop(size, padding)``,
``ColorJitter(b, c, s)``, ``RandomHorizontalFlip()``). Here these are pure
functions of a PRNG key on ``float32`` images in [0, 1], applied by the
runner to the support and query images of training tasks only
(``data.image_augment``); validation and test tasks are never augmented.

``data.image_augment`` is a list of ``"crop:P"`` (pad ``P`` pixels of zeros
on each side, crop back at a random offset), ``"color:S"`` (brightness,
contrast and saturation factors each uniform in ``[1 - S, 1 + S]``, applied
in that fixed order, where torchvision shuffles the order per image) and
``"flip"``, applied in the order given, each image drawing its own
randomness. MetaOptNet's miniImageNet setting is ``["crop:8", "color:0.4",
"flip"]``; CIFAR-FS / FC100 use ``"crop:4"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from metajax.core.tasks import Split, Task
from metajax.errors import DataError
from metajax.typing import Array, PRNGKey

ImageAugment = Callable[[PRNGKey, Array], Array]  # (key, images (n, h, w, c)) -> same shape


def random_crop(key: PRNGKey, images: Array, padding: int) -> Array:
    """Each image zero-padded by ``padding`` pixels per side and cropped back to its size at a random offset."""
    n, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: PRNGKey, images: Array) -> Array:
    """Each image mirrored left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def _gray(images: Array) -> Array:
    """Luma ``(n, h, w, 1)`` with torchvision's weights (the image itself when it has one channel)."""
    if images.shape[-1] == 1:
        return images
    weights = jnp.asarray([0.299, 0.587, 0.114], images.dtype)
    return jnp.sum(images[..., :3] * weights, axis=-1, keepdims=True)


def color_jitter(key: PRNGKey, images: Array, strength: float) -> Array:
    """Brightness, contrast, saturation: each a per-image factor uniform in ``[1 - s, 1 + s]``, clipped to [0, 1].

    Brightness scales the image; contrast blends it with its mean gray level;
    saturation with its own grayscale image (as torchvision's functional ops).
    """
    n = images.shape[0]
    factors = jax.random.uniform(key, (3, n, 1, 1, 1), images.dtype, max(0.0, 1 - strength), 1 + strength)

    def blend(image, other, factor):
        return jnp.clip(factor * image + (1 - factor) * other, 0.0, 1.0)

    images = jnp.clip(images * factors[0], 0.0, 1.0)
    images = blend(images, jnp.mean(_gray(images), axis=(1, 2, 3), keepdims=True), factors[1])
    return blend(images, _gray(images), factors[2])


def _parse(spec: str, image_shape: Sequence[int], name: str) -> ImageAugment:
    op, _, argument = str(spec).partition(":")
    try:
        if op == "flip" and not argument:
            return random_flip
        if op == "crop":
            padding = int(argument)
            if padding < 1 or padding >= min(image_shape[:2]):
                raise ValueError
            return lambda key, x: random_crop(key, x, padding)
        if op == "color":
            strength = float(argument)
            if not 0 < strength <= 1:
                raise ValueError
            return lambda key, x: color_jitter(key, x, strength)
    except ValueError:
        pass
    raise DataError(
        f"{name}: bad image_augment entry {spec!r}; use 'crop:P' (padding 1..{min(image_shape[:2]) - 1}), "
        "'color:S' (0 < S <= 1) or 'flip' in data.image_augment."
    )


def task_augmentation(
    specs: Sequence[str] | None, image_shape: Sequence[int], name: str = "data"
) -> Callable[[PRNGKey, Task], Task] | None:
    """``(key, task) -> task`` augmenting support and query images as ``specs`` say; ``None`` for no augmentation.

    Raises:
      DataError: an unknown or out-of-range entry (checked here, before anything compiles).
    """
    if not specs:
        return None
    if isinstance(specs, str):
        raise DataError(f"{name}: data.image_augment must be a list, e.g. ['crop:8', 'flip'], got {specs!r}.")
    ops = [_parse(spec, image_shape, name) for spec in specs]

    def augment(key: PRNGKey, task: Task) -> Task:
        def images(key, x):
            for k, op in zip(jax.random.split(key, len(ops)), ops, strict=True):
                x = op(k, x)
            return x

        k_support, k_query = jax.random.split(key)
        return Task(
            Split(images(k_support, task.support.x), task.support.y), Split(images(k_query, task.query.x), task.query.y)
        )

    return augment
