"""ResNet-12, the few-shot backbone of TADAM (Oreshkin et al. 2018) and MetaOptNet (Lee et al. 2019).

Four residual blocks with ``channels`` (default 64, 160, 320, 640); each is
three [3x3 conv, batch norm, leaky ReLU (0.1)] with the last activation after
the addition of a [1x1 conv, batch norm] shortcut, then 2x2 max-pooling.
84x84 inputs give ``(5, 5, 640)`` features. The output is the flattened
features (``pool="flatten"``, MetaOptNet's 16,000-d embedding) or their
spatial mean (``pool="avg"``, 640-d), followed by a linear ``head`` unless
``out_features`` is ``None``.

Not included: DropBlock (MetaOptNet trains with it; its absence is one of
the recorded deviations of the experiments that use this model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.core.model import Model, from_flax
from metajax.models.conv4 import BatchStatsNorm
from metajax.registry import register
from metajax.typing import Array

BATCH_NORM = ("standard", "transductive")
POOLS = ("flatten", "avg")


class ResNet12(nn.Module):
    """ResNet-12 over ``(n, height, width, channels)``; output ``(n, out_features)`` or ``(n, features)``."""

    out_features: Optional[int]
    channels: Sequence[int] = (64, 160, 320, 640)
    batch_norm: str = "standard"
    pool: str = "flatten"
    momentum: float = 0.9
    slope: float = 0.1

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
        x = x.mean(axis=(1, 2)) if self.pool == "avg" else x.reshape(x.shape[0], -1)
        if self.out_features is None:
            return x
        return nn.Dense(self.out_features, name="head")(x)


@register("models", "resnet12")
def resnet12(
    out_features: Optional[int],
    channels: Sequence[int] = (64, 160, 320, 640),
    batch_norm: str = "standard",
    pool: str = "flatten",
    momentum: float = 0.9,
) -> Model:
    """ResNet-12 as a pure :class:`Model` pair.

    ``batch_norm="standard"`` keeps running statistics in the model state
    (metric learners); ``"transductive"`` always uses the batch's (the MAML
    family's form, no state).

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
    return from_flax(ResNet12(out_features, channels, batch_norm, pool, momentum))


@register("models", "resnet12-embedding")
def resnet12_embedding(
    out_features: Optional[int] = None,
    channels: Sequence[int] = (64, 160, 320, 640),
    batch_norm: str = "standard",
    pool: str = "flatten",
    momentum: float = 0.9,
) -> Model:
    """ResNet-12 without its head, for metric learners; ``out_features`` (injected from the data) is ignored.

    Example::

      embed = resnet12_embedding(pool="avg")  # (n, 84, 84, 3) -> (n, 640)
    """
    del out_features
    return resnet12(None, channels, batch_norm, pool, momentum)
