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
    """Mean squared error over all elements; shapes must match, e.g. ``(n, 1)``.

    Raises:
      ValueError: at trace time, if the shapes differ (broadcasting would
        silently compute a different loss).
    """
    if predictions.shape != targets.shape:
        raise ValueError(
            f"mse: predictions {predictions.shape} and targets {targets.shape} differ; the model's output size "
            "(model.out_features) must match the targets"
        )
    loss = jnp.mean(jnp.square(predictions - targets))
    return loss, {"loss": loss}


def cross_entropy(logits: Array, labels: Array) -> tuple[Array, Metrics]:
    """Softmax cross-entropy of ``logits (n, classes)`` against integer ``labels (n,)``.

    Raises:
      ValueError: at trace time, if the shapes do not fit together.
    """
    if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"cross_entropy: logits {logits.shape} do not fit integer labels {labels.shape}; expected logits "
            "(n, classes) for labels (n,) (check model.out_features)"
        )
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    return loss, {"loss": loss, "accuracy": accuracy}


LOSSES: dict[str, LossFn] = {"mse": mse, "cross_entropy": cross_entropy}
