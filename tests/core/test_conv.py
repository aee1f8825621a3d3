"""The patches convolution and pooling equal XLA's, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.core.conv import conv2d, conv_impl, current_conv_impl, max_pool


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_patches_matches_xla(stride, padding):
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

    def f(impl):
        def loss(x, w):
            y = conv2d(x, w, strides=(stride, stride), padding=padding, impl=impl)
            return jnp.sum(jnp.sin(max_pool(jax.nn.relu(y), 2, impl=impl)))

        return loss(x, w), jax.grad(loss, (0, 1))(x, w)

    for a, b in zip(jax.tree_util.tree_leaves(f("xla")), jax.tree_util.tree_leaves(f("patches")), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_context_sets_auto_impl():
    assert current_conv_impl() == "xla"
    with conv_impl("patches"):
        assert current_conv_impl() == "patches"
    assert current_conv_impl() == "xla"
    with pytest.raises(ValueError, match="conv_impl"):
        with conv_impl("fft"):
            pass
