"""The patches convolution and pooling equal XLA's, values and gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.core import conv
from metajax.core.batching import batch_tasks
from metajax.core.conv import Conv, conv2d, max_pool
from metajax.models.conv4 import conv4


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


def test_impl_is_explicit_and_validated():
    assert not hasattr(conv, "conv_impl") and not hasattr(conv, "current_conv_impl")
    assert conv.IMPLS == ("xla", "patches")
    x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2))
    for impl in ("auto", "fft"):
        with pytest.raises(ValueError, match="conv2d: impl="):
            conv2d(x, w, impl=impl)
        with pytest.raises(ValueError, match="max_pool: impl="):
            max_pool(x, impl=impl)
        with pytest.raises(ValueError, match="conv4: conv_impl="):
            conv4(2, conv_impl=impl)
    # xla is the default everywhere
    assert Conv(2).impl == "xla" and "conv_general_dilated" in str(jax.make_jaxpr(lambda a: conv2d(a, w))(x))


def _jaxpr(model, params, state, x, grad=False):
    """The printed jaxpr (sub-jaxprs of loops included) of the model's output, or of its parameter gradient."""

    def out(p, a):
        return jnp.sum(model.apply(p, state, a, train=False)[0])

    return str(jax.make_jaxpr(jax.grad(out) if grad else out)(params, x))


@functools.cache
def _params_and_input():
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    return (*jax.jit(conv4(3, filters=4).init)(jax.random.key(1), x), x)  # the same parameters for either impl


def _model_and_input(impl):
    return conv4(3, filters=4, conv_impl=impl), *_params_and_input()


def test_patches_model_computes_patches_outside_any_batching():
    model, params, state, x = _model_and_input("patches")
    for grad in (False, True):
        text = _jaxpr(model, params, state, x, grad)
        assert "conv_general_dilated" not in text and "reduce_window" not in text and "dot_general" in text
    xla = _model_and_input("xla")[0]
    out = [jax.jit(lambda p, a, m=m: m.apply(p, state, a, train=False)[0])(params, x) for m in (model, xla)]
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strategy", ["vmap+patches", "map+patches", "chunked:2+patches"])
def test_strategy_does_not_change_a_models_convolutions(strategy):
    """``+patches`` is the builder's business: inside batch_tasks an xla model stays xla, a patches one patches."""
    for impl, has_conv in (("xla", True), ("patches", False)):
        model, params, state, x = _model_and_input(impl)
        xs = jnp.stack([x, x, x])
        batched = batch_tasks(lambda a: jnp.sum(model.apply(params, state, a, train=False)[0]), strategy)
        assert ("conv_general_dilated" in str(jax.make_jaxpr(batched)(xs))) == has_conv
