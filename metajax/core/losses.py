"""Per-task losses: ``loss(predictions, targets) -> (scalar, metrics)``.

Metrics always include ``loss``; classification adds ``accuracy``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

from metajax.typing import Array, Metrics

LossFn = Callable[[Array, Array], tuple[Array, Metrics]]


def mse(predictions: Array, targets: Array) -> tuple[Array, Metrics]:
    """Mean squared error over all elements; shapes must match, e.g. ``(n, 1)``."""
    loss = jnp.mean(jnp.square(predictions - targets))
    return loss, {"loss": loss}


def cross_entropy(logits: Array, labels: Array) -> tuple[Array, Metrics]:
    """Softmax cross-entropy of ``logits (n, classes)`` against integer ``labels (n,)``."""
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    return loss, {"loss": loss, "accuracy": accuracy}


LOSSES: dict[str, LossFn] = {"mse": mse, "cross_entropy": cross_entropy}
