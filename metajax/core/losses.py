"""Per-task losses: ``loss(predictions, targets) -> (scalar, metrics)``.

Metrics always include ``loss``; classification adds ``accuracy``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
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


def smoothed_cross_entropy(epsilon: float) -> LossFn:
    """Cross-entropy against label-smoothed targets: ``1 - epsilon`` on the label, ``epsilon`` shared by the others.

    As MetaOptNet trains: with ``k`` classes, each other class gets
    ``epsilon / (k - 1)``. Classes whose logits are ``-inf`` (absent from a
    task's support set) are not classes of the task and get no mass. The
    metrics are those of :func:`cross_entropy` with ``loss`` the smoothed loss.
    """

    def loss_fn(logits: Array, labels: Array) -> tuple[Array, Metrics]:
        _, metrics = cross_entropy(logits, labels)
        present = jnp.all(jnp.isfinite(logits), axis=0)  # (classes,)
        others = jnp.maximum(jnp.sum(present) - 1, 1)
        onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        targets = jnp.where(present, onehot * (1 - epsilon) + (1 - onehot) * epsilon / others, 0.0)
        log_p = jax.nn.log_softmax(jnp.where(present, logits, -1e30))  # no -inf * 0
        loss = -jnp.mean(jnp.sum(targets * log_p, axis=-1))
        return loss, {**metrics, "loss": loss}

    return loss_fn


LOSSES: dict[str, LossFn] = {"mse": mse, "cross_entropy": cross_entropy}
