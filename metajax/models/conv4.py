"""Conv4, the standard few-shot backbone (Vinyals et al., 2016; Finn et al., 2017; Snell et al., 2017).

Four blocks of [3x3 conv with ``filters`` channels, batch norm, ReLU, 2x2
max-pool] (or a stride-2 conv instead of the pool, MAML's Omniglot variant),
then a linear ``head`` on the flattened features. With ``out_features=None``
there is no head and the model returns the features (ProtoNets embedding).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.core.conv import IMPLS, Conv, max_pool
from metajax.core.model import Model, from_flax
from metajax.core.precision import compute_dtype
from metajax.typing import Array

BATCH_NORM = ("transductive", "standard", "none")


class BatchStatsNorm(nn.Module):
    """Batch norm that always uses the current batch's statistics and keeps no state (MAML's form)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        axes = tuple(range(x.ndim - 1))
        dtype = x.dtype
        x = x.astype(jnp.promote_types(dtype, jnp.float32))  # statistics in f32 under bf16 compute
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return ((x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias).astype(dtype)


class Conv4(nn.Module):
    """Conv4 over inputs ``(n, height, width, channels)``; output ``(n, out_features)`` or ``(n, features)``.

    ``batch_norm``:
      ``"transductive"``: MAML's form: always normalise with the statistics of
        the current batch (support or query set), no running averages, so the
        model state is empty.
      ``"standard"``: running averages kept in the ``batch_stats`` state,
        updated when ``train=True`` and used when ``train=False``.
      ``"none"``: no normalisation.

    ``conv_impl`` picks how convolutions and max-pools are computed,
    ``"xla"`` or ``"patches"`` (see :mod:`metajax.core.conv`; same values,
    ``"patches"`` batches well over tasks on XLA:CPU), wherever the model is
    traced, and ``dtype`` the compute dtype (parameters stay float32; logits are
    returned in float32).
    """

    out_features: Optional[int]
    filters: int = 64
    strided: bool = False
    batch_norm: str = "transductive"
    momentum: float = 0.9
    conv_impl: str = "xla"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtype = compute_dtype(self.dtype)
        x = x.astype(dtype)
        stride = (2, 2) if self.strided else (1, 1)
        for i in range(4):
            x = Conv(self.filters, (3, 3), strides=stride, padding="SAME", impl=self.conv_impl, name=f"conv_{i}")(x)
            if self.batch_norm == "transductive":
                x = BatchStatsNorm(name=f"bn_{i}")(x)
            elif self.batch_norm == "standard":
                x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, dtype=dtype, name=f"bn_{i}")(x)
            x = jax.nn.relu(x)
            if not self.strided:
                x = max_pool(x, 2, impl=self.conv_impl)
        x = x.reshape(x.shape[0], -1)
        if self.out_features is None:
            return x.astype(jnp.float32)
        return nn.Dense(self.out_features, dtype=dtype, name="head")(x).astype(jnp.float32)


def conv4(
    out_features: Optional[int],
    filters: int = 64,
    strided: bool = False,
    batch_norm: str = "transductive",
    momentum: float = 0.9,
    conv_impl: str = "xla",
    dtype: str = "float32",
) -> Model:
    """Conv4 as a pure :class:`Model` pair.

    ``conv_impl`` (``"xla"`` or ``"patches"``) is fixed here, never by the code
    that traces the model. In a run config ``model.conv_impl`` left unset (or
    ``"auto"``) is set by the builder: ``"patches"`` when ``task_batching`` ends
    in ``+patches``, else ``"xla"``, and recorded in ``config.json``.

    Example::

      model = conv4(out_features=5)                        # MAML, 5-way
      embed = conv4(out_features=None, batch_norm="standard")  # ProtoNets
      fast = conv4(out_features=5, dtype="bfloat16")       # bf16 compute, f32 params
      cpu = conv4(out_features=5, conv_impl="patches")     # for map+patches / vmap+patches
    """
    if batch_norm not in BATCH_NORM:
        raise ValueError(f"conv4: batch_norm={batch_norm!r}; use one of {BATCH_NORM} (model.batch_norm).")
    if not isinstance(filters, int) or filters < 1:
        raise ValueError(f"conv4: filters must be a positive int, got {filters!r} (model.filters).")
    if conv_impl not in IMPLS:
        raise ValueError(
            f"conv4: conv_impl={conv_impl!r}; use one of {IMPLS} (model.conv_impl; a run config's 'auto' is "
            "resolved from task_batching by the builder)."
        )
    compute_dtype(dtype, where="conv4 (model.dtype)")
    return from_flax(Conv4(out_features, filters, strided, batch_norm, momentum, conv_impl, dtype))


def conv4_embedding(
    out_features: Optional[int] = None,
    filters: int = 64,
    strided: bool = False,
    batch_norm: str = "standard",
    momentum: float = 0.9,
    conv_impl: str = "xla",
    dtype: str = "float32",
) -> Model:
    """Conv4 without its head, for metric learners (ProtoNets, Matching Nets, R2-D2).

    ``out_features`` (injected from the data's N) is ignored: the output is
    the flattened features, e.g. ``(n, 28, 28, 1) -> (n, 64)``.

    Example::

      embed = conv4_embedding(filters=64)
    """
    del out_features
    return conv4(None, filters, strided, batch_norm, momentum, conv_impl, dtype)
