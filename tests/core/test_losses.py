"""Losses against hand-computed values, including label smoothing over a task's present classes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.core.losses import cross_entropy, mse, smoothed_cross_entropy

LOGITS = jnp.asarray([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
LABELS = jnp.asarray([0, 2])


def _log_softmax(row):
    row = np.asarray(row, np.float64)
    return row - np.log(np.sum(np.exp(row)))


def test_smoothed_cross_entropy_matches_the_hand_formula():
    eps = 0.1
    loss, metrics = smoothed_cross_entropy(eps)(LOGITS, LABELS)
    expected = 0.0
    for row, label in zip(np.asarray(LOGITS), np.asarray(LABELS), strict=True):
        target = np.full(3, eps / 2)
        target[label] = 1 - eps
        expected -= np.sum(target * _log_softmax(row)) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert metrics["loss"] == loss and metrics["accuracy"] == cross_entropy(LOGITS, LABELS)[1]["accuracy"]
    np.testing.assert_allclose(smoothed_cross_entropy(0.0)(LOGITS, LABELS)[0], cross_entropy(LOGITS, LABELS)[0])


def test_absent_classes_get_no_mass_and_gradients_stay_finite():
    """A -inf column (a class absent from the support set) is not a class of the task."""
    padded = jnp.concatenate([LOGITS, jnp.full((2, 1), -jnp.inf)], axis=1)
    smoothed = smoothed_cross_entropy(0.1)
    np.testing.assert_allclose(smoothed(padded, LABELS)[0], smoothed(LOGITS, LABELS)[0], rtol=1e-6)
    grad = jax.grad(lambda z: smoothed(jnp.concatenate([z, jnp.full((2, 1), -jnp.inf)], axis=1), LABELS)[0])(LOGITS)
    assert np.all(np.isfinite(grad))


def test_shape_mismatches_are_refused():
    with pytest.raises(ValueError, match="predictions .* and targets .* differ"):
        mse(jnp.zeros((4, 1)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="do not fit integer labels"):
        cross_entropy(jnp.zeros((4, 3)), jnp.zeros((3,), jnp.int32))
