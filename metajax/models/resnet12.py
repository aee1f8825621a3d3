"""ResNet-12, the few-shot backbone of TADAM (Oreshkin et al. 2018) and MetaOptNet (Lee et al. 2019).

Four residual blocks with ``channels`` (default 64, 160, 320, 640); each is
three [3x3 conv, batch norm, leaky ReLU (0.1)] with the last activation after
the addition of a [1x1 conv, batch norm] shortcut, then 2x2 max-pooling.
84x84 inputs give ``(5, 5, 640)`` features. The output is the flattened
features (``pool="flatten"``, MetaOptNet's 16,000-d embedding) or their
spatial mean (``pool="avg"``, 640-d), followed by a linear ``head`` unless
``out_features`` is ``None``.

Regularisation as MetaOptNet trains it (``drop_rate > 0``): dropout at
``drop_rate`` after the first two blocks, DropBlock (Ghiasi et al. 2018)
with ``dropblock_size`` after the last two, both in training only and drawn
from ``apply``'s ``rng`` (the model is then ``stochastic``). MetaOptNet ramps
DropBlock's rate in over its first 40,000 forward passes; here it is at
``drop_rate`` from the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.core.model import Model, from_flax
from metajax.models.conv4 import BatchStatsNorm
from metajax.typing import Array

BATCH_NORM = ("standard", "transductive")
POOLS = ("flatten", "avg")


def drop_block(key, x: Array, rate: float, block_size: int) -> Array:
    """DropBlock on ``(n, h, w, c)``: zeroes ``block_size``-square blocks per image and channel, rescales the rest.

    Block corners are Bernoulli(``gamma``) on the ``(h - b + 1) x (w - b + 1)``
    positions where a whole block fits, with ``gamma = rate / b^2 * h w / ((h
    - b + 1)(w - b + 1))`` so that about ``rate`` of the units are dropped; the
    kept units are scaled by (units / kept units), as in Ghiasi et al. and
    MetaOptNet. A block larger than the feature map shrinks to it.
    """
    n, h, w, c = x.shape
    b = min(block_size, h, w)
    gamma = rate / b**2 * (h * w) / ((h - b + 1) * (w - b + 1))
    corners = jax.random.bernoulli(key, min(gamma, 1.0), (n, h - b + 1, w - b + 1, c)).astype(x.dtype)
    # unit (i, j) is dropped if a corner lies in (i - b, i] x (j - b, j]: a max over a b x b window of the padded corners
    padded = jnp.pad(corners, ((0, 0), (b - 1, b - 1), (b - 1, b - 1), (0, 0)))
    dropped = jax.lax.reduce_window(padded, 0.0, jax.lax.max, (1, b, b, 1), (1, 1, 1, 1), "VALID")
    keep = 1.0 - dropped
    return x * keep * (keep.size / jnp.maximum(jnp.sum(keep), 1.0))


class ResNet12(nn.Module):
    """ResNet-12 over ``(n, height, width, channels)``; output ``(n, out_features)`` or ``(n, features)``."""

    out_features: Optional[int]
    channels: Sequence[int] = (64, 160, 320, 640)
    batch_norm: str = "standard"
    pool: str = "flatten"
    momentum: float = 0.9
    slope: float = 0.1
    drop_rate: float = 0.0
    dropblock_size: int = 5

    def _norm(self, x: Array, train: bool, name: str) -> Array:
        if self.batch_norm == "transductive":
            return BatchStatsNorm(name=name)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=self.momentum, name=name)(x)

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        x = x.astype(jnp.float32)
        for b, width in enumerate(self.channels):
            shortcut = nn.Conv(width, (1, 1), use_bias=False, name=f"block{b}_shortcut")(x)
            shortcut = self._norm(shortcut, train, f"block{b}_shortcut_bn")
            for i in range(3):
                x = nn.Conv(width, (3, 3), padding="SAME", use_bias=False, name=f"block{b}_conv{i}")(x)
                x = self._norm(x, train, f"block{b}_bn{i}")
                if i < 2:
                    x = jax.nn.leaky_relu(x, self.slope)
            x = jax.nn.leaky_relu(x + shortcut, self.slope)
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")  # floor: 84 -> 42 -> 21 -> 10 -> 5
            if self.drop_rate > 0 and train:
                if b < 2:
                    x = nn.Dropout(self.drop_rate, deterministic=False)(x)
                else:
                    x = drop_block(self.make_rng("dropout"), x, self.drop_rate, self.dropblock_size)
        x = x.mean(axis=(1, 2)) if self.pool == "avg" else x.reshape(x.shape[0], -1)
        if self.out_features is None:
            return x
        return nn.Dense(self.out_features, name="head")(x)


def resnet12(
    out_features: Optional[int],
    channels: Sequence[int] = (64, 160, 320, 640),
    batch_norm: str = "standard",
    pool: str = "flatten",
    momentum: float = 0.9,
    drop_rate: float = 0.0,
    dropblock_size: int = 5,
) -> Model:
    """ResNet-12 as a pure :class:`Model` pair.

    ``batch_norm="standard"`` keeps running statistics in the model state
    (metric learners); ``"transductive"`` always uses the batch's (the MAML
    family's form, no state). ``drop_rate > 0`` adds MetaOptNet's dropout and
    DropBlock (``dropblock_size``: 5 for miniImageNet, 2 for CIFAR) in
    training; such a model needs a learner that passes randomness (the
    embedding learners).

    Example::

      model = resnet12(out_features=5)                              # MAML-style head
      embed = resnet12(out_features=None, pool="avg")               # (n, 84, 84, 3) -> (n, 640)
      tiny = resnet12(out_features=None, channels=(8, 8, 16, 16))   # CPU-sized tests
    """
    channels = tuple(channels) if isinstance(channels, (list, tuple)) else channels
    if (
        not isinstance(channels, tuple)
        or len(channels) != 4
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    ):
        raise ValueError(f"resnet12: channels must be 4 positive ints, got {channels!r} (model.channels).")
    if batch_norm not in BATCH_NORM:
        raise ValueError(f"resnet12: batch_norm={batch_norm!r}; use one of {BATCH_NORM} (model.batch_norm).")
    if pool not in POOLS:
        raise ValueError(f"resnet12: pool={pool!r}; use one of {POOLS} (model.pool).")
    if not isinstance(drop_rate, (int, float)) or isinstance(drop_rate, bool) or not 0 <= drop_rate < 1:
        raise ValueError(f"resnet12: drop_rate must be a number in [0, 1), got {drop_rate!r} (model.drop_rate).")
    if not isinstance(dropblock_size, int) or isinstance(dropblock_size, bool) or dropblock_size < 1:
        raise ValueError(
            f"resnet12: dropblock_size must be an int >= 1, got {dropblock_size!r} (model.dropblock_size)."
        )
    module = ResNet12(
        out_features, channels, batch_norm, pool, momentum, drop_rate=float(drop_rate), dropblock_size=dropblock_size
    )
    return from_flax(module, stochastic=drop_rate > 0)


def resnet12_embedding(
    out_features: Optional[int] = None,
    channels: Sequence[int] = (64, 160, 320, 640),
    batch_norm: str = "standard",
    pool: str = "flatten",
    momentum: float = 0.9,
    drop_rate: float = 0.0,
    dropblock_size: int = 5,
) -> Model:
    """ResNet-12 without its head, for metric learners; ``out_features`` (injected from the data) is ignored.

    Example::

      embed = resnet12_embedding(pool="avg")  # (n, 84, 84, 3) -> (n, 640)
    """
    del out_features
    return resnet12(None, channels, batch_norm, pool, momentum, drop_rate, dropblock_size)
