"""Per-task 2-D convolutions in formulations that batch well over tasks.

Under ``jax.vmap`` over tasks with per-task kernels, ``lax.conv_general_dilated``
becomes a grouped convolution (one group per task) and so does the weight
gradient of every convolution (both operands are per task). XLA:CPU runs
grouped convolutions far off its fast path. Written as shifted slices plus a
matrix product, the same convolution batches into ``dot_general`` with a task
batch dimension, and its transpose is slices/pads plus matrix products too.

Implementations (``impl``, always explicit: nothing around the call changes it):
  ``"xla"``: ``lax.conv_general_dilated`` (what ``flax.linen.Conv`` computes).
  ``"patches"``: im2col by ``kh * kw`` shifted slices concatenated on the
    channel axis, then one matmul with the ``(kh * kw * C, F)`` kernel.

Models take the choice as a parameter (Conv4's ``conv_impl``); a run's builder
sets it from the ``+patches`` of its ``task_batching`` strategy unless the
config names one (:func:`metajax.runner.build.resolve_conv_impl`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.typing import Array

IMPLS = ("xla", "patches")


def check_impl(impl: str, where: str) -> str:
    """``impl`` if it is one of :data:`IMPLS`, else a one-line ``ValueError`` naming ``where``."""
    if impl not in IMPLS:
        raise ValueError(f"{where}: impl={impl!r}; use one of {IMPLS}.")
    return impl


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _pad_and_out(x: Array, kernel_size: Sequence[int], strides: Sequence[int], padding) -> tuple[Array, int, int]:
    kh, kw = kernel_size
    if padding == "SAME":
        pads = [_same_padding(x.shape[1], kh, strides[0]), _same_padding(x.shape[2], kw, strides[1])]
    elif padding == "VALID":
        pads = [(0, 0), (0, 0)]
    else:
        pads = [tuple(p) for p in padding]
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh = (x.shape[1] - kh) // strides[0] + 1
    ow = (x.shape[2] - kw) // strides[1] + 1
    return x, oh, ow


def _tap(x: Array, i: int, j: int, oh: int, ow: int, strides: Sequence[int]) -> Array:
    sh, sw = strides
    return jax.lax.slice(
        x, (0, i, j, 0), (x.shape[0], i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, x.shape[3]), (1, sh, sw, 1)
    )


def conv2d(
    x: Array,
    kernel: Array,
    *,
    strides: Sequence[int] = (1, 1),
    padding: Union[str, Sequence[tuple[int, int]]] = "SAME",
    impl: str = "xla",
) -> Array:
    """A 2-D convolution ``(n, h, w, c), (kh, kw, c, f) -> (n, oh, ow, f)`` (NHWC, HWIO).

    All implementations compute the same values up to float reassociation.

    Example::

      y = conv2d(x, kernel, strides=(1, 1), padding="SAME", impl="patches")
    """
    if check_impl(impl, "conv2d") == "xla":
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            tuple(strides),
            padding if isinstance(padding, str) else tuple(padding),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    kh, kw, c, f = kernel.shape
    xp, oh, ow = _pad_and_out(x, (kh, kw), strides, padding)
    cols = [_tap(xp, i, j, oh, ow, strides) for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
    return jnp.dot(patches, kernel.reshape(kh * kw * c, f).astype(patches.dtype))


class Conv(nn.Module):
    """A drop-in for ``flax.linen.Conv`` (same ``kernel``/``bias`` parameters and init) with a selectable ``impl``."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str = "SAME"
    use_bias: bool = True
    impl: str = "xla"
    dtype: Optional[jnp.dtype] = None
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features))
        dtype = self.dtype or x.dtype
        y = conv2d(x.astype(dtype), kernel.astype(dtype), strides=self.strides, padding=self.padding, impl=self.impl)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,))
            y = y + bias.astype(dtype)
        return y


def max_pool(x: Array, window: int = 2, *, impl: str = "xla") -> Array:
    """Max-pool ``(n, h, w, c) -> (n, h // window, w // window, c)`` with stride ``window``, VALID padding.

    ``"xla"`` uses ``reduce_window`` (whose gradient is a select-and-scatter,
    slow on XLA:CPU); ``"patches"`` crops, reshapes and takes a max, whose
    gradient is elementwise. Values are identical; gradients
    differ only where a window holds equal maxima.
    """
    if check_impl(impl, "max_pool") == "xla":
        return nn.max_pool(x, (window, window), strides=(window, window), padding="VALID")
    n, h, w, c = x.shape
    oh, ow = h // window, w // window
    x = x[:, : oh * window, : ow * window, :].reshape(n, oh, window, ow, window, c)
    return jnp.max(x, axis=(2, 4))
