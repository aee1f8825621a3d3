"""The inner loop: steps, observations, first-order switch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import adapt


def _quadratic(params, state):
    return jnp.sum(jnp.square(params["w"] - 3.0)), state


def test_sgd_steps_match_hand_computation():
    params = {"w": jnp.array([0.0, 1.0])}
    result = adapt(_quadratic, params, {}, optax.sgd(0.25), 2)
    # w <- w - 0.25 * 2 (w - 3) = (w + 3) / 2, twice.
    np.testing.assert_allclose(result.params["w"], [2.25, 2.5])
    np.testing.assert_allclose(result.losses, [9.0 + 4.0, 2.25 + 1.0])


def test_zero_steps_returns_the_input_and_one_observation():
    params = {"w": jnp.array([1.0])}
    result = adapt(_quadratic, params, {}, optax.sgd(0.1), 0, observe=lambda p, s: p["w"][0])
    np.testing.assert_array_equal(result.params["w"], params["w"])
    assert result.observations.shape == (1,)


def test_observations_cover_steps_zero_to_s():
    result = adapt(_quadratic, {"w": jnp.zeros(1)}, {}, optax.sgd(0.25), 3, observe=lambda p, s: p["w"][0])
    np.testing.assert_allclose(result.observations, [0.0, 1.5, 2.25, 2.625])


def test_first_order_gradient_is_identity_through_the_inner_loop():
    def outer(w, first_order):
        res = adapt(_quadratic, {"w": w}, {}, optax.sgd(0.25), 1, first_order=first_order)
        return jnp.sum(res.params["w"])

    w = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(jax.grad(outer)(w, True), [1.0, 1.0])
    np.testing.assert_allclose(jax.grad(outer)(w, False), [0.5, 0.5])  # d/dw (w + 3)/2


def test_remat_gives_the_same_values_and_gradients():
    def outer(w, remat):
        res = adapt(_quadratic, {"w": w}, {}, optax.sgd(0.1), 4, remat=remat)
        return jnp.sum(res.params["w"] ** 2)

    w = jnp.array([0.5, -1.0])
    np.testing.assert_allclose(jax.grad(outer)(w, True), jax.grad(outer)(w, False), rtol=1e-6)


def test_negative_steps_is_an_error():
    with pytest.raises(ValueError, match="non-negative"):
        adapt(_quadratic, {"w": jnp.zeros(1)}, {}, optax.sgd(0.1), -1)
